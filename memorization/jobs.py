"""A job's life in its folder: checkpoints at epoch ends, a stop on a diverged loss, the
``FAILED`` marker, and what a rerun of the job does (skip, resume, or start over).

A job folder is in one of these states, decided by :func:`job_state` from its files:

- ``finished``: ``metrics.json`` exists and does not say ``interrupted``; a rerun skips it;
- ``fitted``: ``fit.json`` exists (and no metrics.json): the fit finished but the stage after it
  (memorization/relabel/) did not; a rerun loads the trained weights from the checkpoint and
  runs the stage again, whole (or starts over without a checkpoint);
- ``failed``: ``FAILED`` holds the error of its last attempt (an exception, a NaN loss, out of
  memory); a rerun resumes it from its checkpoint, or starts it over when its loss diverged
  (from the checkpoint it would diverge again) or it has none;
- ``resumable``: ``checkpoints/last.ckpt`` exists but the job did not finish (killed, Ctrl-C,
  a machine that went away); a rerun resumes from that checkpoint, in the same folder, with
  the same history and the same W&B run;
- ``new``: nothing of the above.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from collections import deque
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from memorization.errors import Refusal, TrainingDiverged, check_number, first_line
from memorization.io import atomic_path, read_json_object, say, write_text_atomic

LAST = Path("checkpoints") / "last.ckpt"
FIT = "fit.json"  # the fit's report, while a stage after the fit has not finished


def resolved_dict(cfg: DictConfig) -> dict:
    """A job's config as plain values, interpolations resolved (Hydra's own node left out)."""
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items() if k != "hydra"}


def job_state(folder: str | os.PathLike) -> str:
    folder = Path(folder)
    metrics, _ = read_json_object(folder / "metrics.json")
    if metrics is not None and not metrics.get("interrupted"):
        return "finished"  # a damaged metrics.json is no finish: the job is run again
    if (folder / FIT).is_file():
        return "fitted"  # the stage after the fit failed or was killed: rerun the stage
    if (folder / "FAILED").is_file():
        return "failed"  # its rerun decides whether its checkpoint is worth resuming
    if (folder / LAST).is_file():
        return "resumable"
    return "new"


@rank_zero_only
def mark_failed(folder: str | os.PathLike, exc: BaseException, err: BaseException) -> Path:
    """``FAILED`` in the job folder: the one-line error of ``err`` (what the job reports),
    ``kind: <its type>``, then the traceback of ``exc``."""
    path = Path(folder) / "FAILED"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    text = f"{first_line(err)}\nkind: {type(err).__name__}\n\n{tb}"
    write_text_atomic(path, text)
    for run in replica_folders(folder):  # a stacked job's unfinished replicas failed with it
        if run.is_dir() and not (run / "metrics.json").is_file():
            write_text_atomic(run / "FAILED", text)
    return path


def replica_folders(folder: str | os.PathLike) -> list[Path]:
    """The replica folders of a stacked job (memorization/replicas/): ``replicas/<k>`` for
    k < trainer.replicas of the run its config_resolved.yaml describes; [] for other jobs
    (folders left by an earlier run with more replicas do not count)."""
    import yaml

    folder = Path(folder)
    path = folder / "config_resolved.yaml"
    if not (folder / "replicas").is_dir():
        return []
    try:  # libyaml's loader when there: a sweep report reads every job's
        config = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
                           ) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return []
    count = ((config or {}).get("trainer") or {}).get("replicas") or 1
    if not isinstance(count, int) or count < 2:
        return []
    return [folder / "replicas" / str(k) for k in range(count)]


def failure(folder: str | os.PathLike) -> tuple[str, str]:
    """(the one-line error, the kind of error) of a job's ``FAILED``."""
    lines = (Path(folder) / "FAILED").read_text().splitlines() + ["", ""]
    kind = lines[1].removeprefix("kind: ") if lines[1].startswith("kind: ") else ""
    return lines[0] or "?", kind


def clear_markers(folder: str | os.PathLike) -> None:
    """Before a job starts over in its folder: no old result, failure, checkpoint (a kill
    before the new run's first epoch ends must not resume the old run) or W&B run id stays."""
    folder = Path(folder)
    for name in ("metrics.json", FIT, "FAILED", "wandb/run_id", str(LAST)):
        (folder / name).unlink(missing_ok=True)
    for run in replica_folders(folder):
        for name in ("metrics.json", "FAILED", "wandb/run_id", "model.pt"):
            (run / name).unlink(missing_ok=True)
    for tmp in (folder / LAST.parent).glob(f".{LAST.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def check_checkpoint(path: str | os.PathLike, module: torch.nn.Module,
                     max_epochs: int | None = None) -> None:
    """A checkpoint this job can resume from, or one line saying why not: unreadable (damaged,
    not a checkpoint) or holding another network (a layer missing or of another shape). Read
    with torch's weights-only loader, which runs no code from the file."""
    from memorization.errors import ConfigError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"ckpt_path={path} is not a checkpoint that can be read "
                          f"({first_line(e)[:120]}); point it at a run's "
                          "checkpoints/last.ckpt") from None
    weights = state.get("state_dict") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ConfigError(f"ckpt_path={path} holds no training state (no state_dict); point it "
                          "at a run's checkpoints/last.ckpt")
    done = state.get("epoch")
    if max_epochs is not None and isinstance(done, int) and done > max_epochs:
        raise ConfigError(f"ckpt_path={path} is at epoch {done}, past trainer.max_epochs="
                          f"{max_epochs}; raise trainer.max_epochs to train on from it")
    mine_all = module.state_dict()
    extra = next((k for k in weights if k not in mine_all), None)
    if extra is not None:
        raise ConfigError(f"ckpt_path={path} holds another network: its {extra} has no place in "
                          "this config's; resume with the config it was trained with (its run "
                          "folder's config_resolved.yaml)")
    for key, mine in mine_all.items():
        theirs = weights.get(key)
        if theirs is None or tuple(theirs.shape) != tuple(mine.shape):
            found = "missing" if theirs is None else f"of shape {list(theirs.shape)}"
            raise ConfigError(
                f"ckpt_path={path} holds another network: its {key} is {found}, this config's "
                f"is {list(mine.shape)}; resume with the config it was trained with (its run "
                "folder's config_resolved.yaml)")


# settings a job may change between its runs in one folder: how it is logged, watched, placed
_FREE = ("logger", "callbacks", "history", "metrics", "ckpt_path", "resume", "threads",
         "wait_for_lock",
         "trainer.max_epochs", "trainer.enable_progress_bar", "trainer.enable_model_summary",
         "trainer.devices", "trainer.accelerator", "trainer.strategy", "trainer.num_nodes")


# where a run's files, data and checkpoints are (a key's last part): a folder moved or copied
# elsewhere, or data read from another place, holds the same run
_PATHS = frozenset({"root", "dir", "dirpath", "save_dir", "output_dir", "default_root_dir",
                    "ckpt_path", "cache_dir", "path"})


def _flat(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out = {}
    for k, v in node.items():
        out |= _flat(v, f"{prefix}{k}.")
    return out


def config_changes(folder: str | os.PathLike, resolved: dict,
                   free: tuple[str, ...] = ()) -> list[str]:
    """The settings of ``resolved`` that differ from those of the run in ``folder`` (its
    config_resolved.yaml), as ``key: old -> new``, leaving out what may change between runs
    (and the keys ``free`` names, with what is under them)."""
    import yaml

    path = Path(folder) / "config_resolved.yaml"
    if not path.is_file():
        return []
    old, new = _flat(yaml.safe_load(path.read_text()) or {}), _flat(resolved)
    free = (*_FREE, *free)
    if not old.get("relabel.enabled") and not new.get("relabel.enabled"):
        # a stage that runs in neither is no setting of the run (folders from before it
        # existed have no relabel keys at all)
        free = (*free, "relabel")
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys
            if old.get(k) != new.get(k) and k.rpartition(".")[2] not in _PATHS
            and not any(k == f or k.startswith(f + ".") for f in free)]


def settings_refusal(folder: str | os.PathLike, resolved: dict) -> None:
    """Raise a one-line :class:`Refusal` when ``folder`` holds a run (finished, failed or
    resumable) whose settings differ from ``resolved``; nothing is written into the folder."""
    if job_state(folder) == "new":
        return
    changes = config_changes(folder, resolved)
    if changes:
        more = f" and {len(changes) - 2} more" if len(changes) > 2 else ""
        raise Refusal(f"{folder} holds a run with other settings ({'; '.join(changes[:2])}"
                      f"{more}): resume=false starts it over there, or choose another folder "
                      "(hydra.run.dir, or hydra.sweep.dir for -m)")


STAGE = "stage"  # resume_point's answer for a job whose fit finished but not its stage


def resume_point(out: Path, resolved: dict, max_epochs: int) -> str | None:
    """What a run in a used job folder does: "skip" a finished run, resume an unfinished one
    (its checkpoint's path), rerun the stage after a finished fit (STAGE), start a failed one
    over (None), after checking that the settings are those of the run in the folder."""
    state = job_state(out)
    if state == "new":
        return None
    settings_refusal(out, resolved)
    last = out / LAST
    if state == "finished":
        hint = ""
        done = json.loads((out / "metrics.json").read_text()).get("epochs")
        if last.is_file() and done is not None and max_epochs > done:
            hint = f"; ckpt_path={last} trains it on to trainer.max_epochs={max_epochs}"
        say(f"skip {out}: finished before (its metrics.json){hint}; resume=false runs it again")
        return "skip"
    if state == "fitted":  # the fit finished before, the stage after it did not
        if last.is_file():
            say(f"resuming {out}: its fit finished before; running its relabel stage again")
            return STAGE
        say(f"start over {out}: its fit finished but left no {LAST} for its relabel stage")
        return None
    if state == "failed":
        why, kind = failure(out)
        if last.is_file() and kind != TrainingDiverged.__name__:
            say(f"resuming {out} from its {LAST} (it failed before: {why})")
            return str(last)
        say(f"start over {out}: it failed before ({why})")
        return None
    say(f"resuming {out} from its {LAST}")
    return str(last)


class EpochCheckpoint(Checkpoint):
    """``checkpoints/last.ckpt``, the full training state, written at the end of every
    ``every_n_epochs``-th epoch and when training ends, atomically: the new file replaces the
    old one only once it is complete, so a full disk or a kill never leaves a truncated
    ``last.ckpt``. (Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes it only
    when training ends.) A Lightning ``Checkpoint``, so it runs after the other callbacks at an
    epoch's end and holds their state (the stop rule's, the metrics') of that epoch."""

    def __init__(self, dirpath: str | os.PathLike, every_n_epochs: int = 1):
        if every_n_epochs < 1:
            from memorization.errors import ConfigError

            raise ConfigError(f"callbacks.checkpoint.every_n_epochs={every_n_epochs} must be "
                              ">= 1 (callbacks=no_checkpoint turns checkpoints off)")
        self.path = Path(dirpath) / LAST.name
        self.every_n_epochs = every_n_epochs
        self._saved_step = -1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 or trainer.should_stop:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if (trainer.fast_dev_run or trainer.sanity_checking
                or self._saved_step == trainer.global_step):
            return
        self._saved_step = trainer.global_step
        # every rank takes part (a collective call); only rank zero writes, then renames
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(tmp)
        else:
            trainer.save_checkpoint(self.path.with_name(".not-written-off-rank-zero"))


class DivergenceGuard(L.Callback):
    """Stops a job whose training loss diverges, with one line naming the epoch, the step and
    the last good loss (it counts as failed). Diverged: NaN or infinite, or, with ``max_ratio``,
    above ``max_ratio`` times the loss of the run's first training step (the untrained
    network's loss: what the first epoch starts from; a loss 1e6 times that is no learning
    curve, yet stays finite under Adam at lr=1e6). ``max_ratio=None``: finite is enough.

    On a CPU the loss is read every step (no device to wait for); on a GPU its value is copied
    to pinned host memory without blocking and read one step later, once the copy is done, so
    the device never waits."""

    def __init__(self, max_ratio: float | None = 1e6):
        self.max_ratio = self.checked_ratio(max_ratio)
        self._first = float("nan")  # the first step's loss, the reference of max_ratio
        self._last_finite = float("nan")
        self._pending: deque[tuple[torch.Tensor, torch.cuda.Event, int, int]] = deque()

    @staticmethod
    def checked_ratio(max_ratio):
        """``callbacks.divergence.max_ratio`` as the guard takes it (validate checks it too,
        before anything is written)."""
        return check_number(max_ratio, "callbacks.divergence.max_ratio", lo=1, allow_none=True,
                            what=" (null: only a NaN or infinite loss stops the job)")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach()
        step, epoch = trainer.global_step, trainer.current_epoch + 1
        if loss.device.type != "cuda":
            self._check(float(loss), epoch, step)
            return
        self._check_pending(wait=False)
        host = torch.empty(1, dtype=loss.dtype, pin_memory=True)
        host.copy_(loss.reshape(1), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((host, event, epoch, step))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(wait=True)  # before the evaluations run on a broken network

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(wait=True)

    def _check_pending(self, wait: bool) -> None:
        """The steps whose copies are done, in order (all of them with ``wait``)."""
        while self._pending:
            host, event, epoch, step = self._pending[0]
            if not wait and not event.query():
                return  # the device is still behind: look again next step
            event.synchronize()
            self._pending.popleft()
            try:
                self._check(float(host[0]), epoch, step)
            except TrainingDiverged:
                self._pending.clear()
                raise

    def _check(self, value: float, epoch: int, step: int) -> None:
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"the training loss became {value} at epoch {epoch}, step {step} (last finite "
                f"loss {self._last_finite:.4g}): lower optim.lr, or check the data and the model")
        if math.isnan(self._first):
            self._first = value
        elif (self.max_ratio is not None and self._first > 0
              and value > self.max_ratio * self._first):
            raise TrainingDiverged(
                f"the training loss rose to {value:.4g} at epoch {epoch}, step {step}, over "
                f"callbacks.divergence.max_ratio={self.max_ratio:g} times its first step's "
                f"{self._first:.4g}: lower optim.lr, or callbacks.divergence.max_ratio=null to "
                "let it run")
        self._last_finite = value

    def state_dict(self) -> dict:
        return {"last_finite": self._last_finite, "first": self._first}

    def load_state_dict(self, state_dict: dict) -> None:
        self._last_finite = state_dict.get("last_finite", float("nan"))
        self._first = state_dict.get("first", float("nan"))
