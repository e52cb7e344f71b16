"""A job's life in its folder, for every kind of job (a run, a study, a scores job): the
``FAILED`` marker, the refusal of another job's settings (:class:`FolderRules`), a fresh start,
and what a rerun does (skip, resume, or start over). The checkpoint it resumes from is written
by memorization/engine/checkpoint.py.

A job folder is in one of these states, decided by :func:`job_state` from its files:

- ``finished``: ``metrics.json`` exists and does not say ``interrupted``; a rerun skips it;
- ``fitted``: ``fit.json`` exists (and no metrics.json): the fit finished but the stage after it
  (memorization/jobs/relabel/) did not; a rerun loads the trained weights from the checkpoint and
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
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from memorization.base.errors import Refusal, TrainingDiverged, first_line
from memorization.base.io import read_json_object, say, write_text_atomic
from memorization.engine.checkpoint import FIT, LAST  # noqa: E402,F401  (re-exported)


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


def sweep_job_folders(sweep_dir: str | os.PathLike) -> list[Path]:
    """The job folders directly under a sweep folder: those named by a job number (Hydra's
    default ``0/``, ``1/``, ...) or holding Hydra's ``.hydra/`` (a sweep with named subdirs), in
    job order (numbers first, in number order, then names)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return []
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
            and (p.name.isdigit() or (p / ".hydra").is_dir())]
    return sorted(jobs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else
                  (1, 0, p.name))


def replica_folders(folder: str | os.PathLike) -> list[Path]:
    """The replica folders of a stacked job (memorization/jobs/): ``replicas/<k>`` for
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
                     max_epochs: int | None = None, given: bool = True) -> None:
    """A checkpoint this job can resume from, or one line saying why not: unreadable (damaged,
    not a checkpoint) or holding another network (a layer missing or of another shape). Read
    with torch's weights-only loader, which runs no code from the file. ``given``: named by
    ``ckpt_path`` (else the job folder's own, which it resumes from)."""
    from memorization.base.errors import ConfigError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = type(e).__name__
        if not given:
            raise ConfigError(f"{path}, the checkpoint this folder resumes from, cannot be read "
                              f"({why}): resume=false starts the run over there, or restore "
                              "the file") from None
        raise ConfigError(f"ckpt_path={path} is not a checkpoint that can be read ({why}); "
                          "point it at a run's checkpoints/last.ckpt") from None
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


# Where a class a config names (``_target_``, a metric's ``class``) lived before the package's
# modules moved into layer folders (December 2026): a folder made before compares as the same run.
MOVED = {
    "memorization.jobs.EpochCheckpoint": "memorization.engine.checkpoint.EpochCheckpoint",
    "memorization.jobs.DivergenceGuard": "memorization.engine.checkpoint.DivergenceGuard",
    "memorization.module.": "memorization.engine.module.",
    "memorization.callbacks.": "memorization.engine.callbacks.",
    "memorization.optim.": "memorization.engine.optim.",
    "memorization.replicas.module.": "memorization.engine.stacked.",
    "memorization.sweep.": "memorization.cli.sweep.",
    "memorization.studies.common.StudySweep": "memorization.cli.study.StudySweep",
    "memorization.models.MLP": "memorization.models.mlp.MLP",
    "memorization.models.CNN": "memorization.models.cnn.CNN",
    "memorization.models.AlexNet": "memorization.models.alexnet.AlexNet",
    "memorization.models.SmallAlexNet": "memorization.models.small_alexnet.SmallAlexNet",
    "memorization.models.SmallInception": "memorization.models.small_inception.SmallInception",
}


def _current(value):
    """A dotted class path of a config from before the move, as it is named now."""
    if isinstance(value, str) and value.startswith("memorization."):
        for old, new in MOVED.items():
            if value.startswith(old):
                return new + value[len(old):]
    return value


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
    old = {k: _current(v) for k, v in _flat(yaml.safe_load(path.read_text()) or {}).items()}
    new = _flat(resolved)
    free = (*_FREE, *free)
    if not old.get("relabel.enabled") and not new.get("relabel.enabled"):
        # a stage that runs in neither is no setting of the run (folders from before it
        # existed have no relabel keys at all)
        free = (*free, "relabel")
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys
            if old.get(k) != new.get(k) and k.rpartition(".")[2] not in _PATHS
            and not any(k == f or k.startswith(f + ".") for f in free)]


@dataclass(frozen=True)
class FolderRules:
    """What a kind of job may change between its runs in one folder (``free``: keys, with what
    is under them, besides those every job may change), and how a refusal names what the
    folder holds (``what``). One set of rules per kind of job, read by the entry point's check
    before Hydra starts and by the job itself, so that the two cannot disagree."""

    what: str = "a run"
    free: tuple[str, ...] = ()


RUN = FolderRules()  # memorization.run's jobs and the studies'


def settings_refusal(folder: str | os.PathLike, resolved: dict, rules: FolderRules = RUN,
                     holds: bool | None = None) -> None:
    """Raise a one-line :class:`Refusal` when ``folder`` holds a job (``holds``; by default:
    finished, failed or resumable) whose settings differ from ``resolved`` beyond what
    ``rules`` lets change; nothing is written into the folder."""
    if not (job_state(folder) != "new" if holds is None else holds):
        return
    changes = config_changes(folder, resolved, free=rules.free)
    if changes:
        more = f" and {len(changes) - 2} more" if len(changes) > 2 else ""
        raise Refusal(f"{folder} holds {rules.what} with other settings "
                      f"({'; '.join(changes[:2])}{more}): resume=false starts it over there, "
                      "or choose another folder (hydra.run.dir, or hydra.sweep.dir for -m)")


def start_fresh(out: Path, resolved: dict) -> None:
    """A job that starts (over) in ``out``: no old result, failure or checkpoint stays, and
    its settings are written first (config_resolved.yaml: what a rerun is compared with)."""
    from memorization.engine.callbacks import LogConfig

    clear_markers(out)
    LogConfig.write(resolved, out, loggers=[])


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
