"""A job's life in its folder: checkpoints at epoch ends, a stop on a diverged loss, the
``FAILED`` marker, and what a rerun of the job does (skip, resume, or start over).

A job folder is in one of these states, decided by :func:`job_state` from its files:

- ``finished``: ``metrics.json`` exists and does not say ``interrupted``; a rerun skips it;
- ``failed``: ``FAILED`` holds the error of its last attempt (an exception, a NaN loss, out of
  memory); a rerun starts it over (from its checkpoint it would most likely fail again);
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
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_only

from memorization.errors import TrainingDiverged, first_line
from memorization.io import atomic_path, write_text_atomic

LAST = Path("checkpoints") / "last.ckpt"


def job_state(folder: str | os.PathLike) -> str:
    folder = Path(folder)
    metrics = folder / "metrics.json"
    if metrics.is_file():
        try:
            if not json.loads(metrics.read_text()).get("interrupted"):
                return "finished"
        except (json.JSONDecodeError, OSError):
            pass  # written atomically: damage means something else wrote it; not finished
    if (folder / "FAILED").is_file():
        return "failed"  # before a checkpoint of it: resuming would fail the same way
    if (folder / LAST).is_file():
        return "resumable"
    return "new"


@rank_zero_only
def mark_failed(folder: str | os.PathLike, exc: BaseException) -> Path:
    """``FAILED`` in the job folder: the one-line error, then the traceback."""
    path = Path(folder) / "FAILED"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    write_text_atomic(path, f"{first_line(exc)}\n\n{tb}")
    return path


def clear_markers(folder: str | os.PathLike) -> None:
    """Before a job starts over in its folder: no old result, failure or W&B run id stays."""
    folder = Path(folder)
    for name in ("metrics.json", "FAILED", "wandb/run_id"):
        (folder / name).unlink(missing_ok=True)


def check_checkpoint(path: str | os.PathLike, module: torch.nn.Module) -> None:
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
    for key, mine in module.state_dict().items():
        theirs = weights.get(key)
        if theirs is None or tuple(theirs.shape) != tuple(mine.shape):
            found = "missing" if theirs is None else f"of shape {list(theirs.shape)}"
            raise ConfigError(
                f"ckpt_path={path} holds another network: its {key} is {found}, this config's "
                f"is {list(mine.shape)}; resume with the config it was trained with (its run "
                "folder's config_resolved.yaml)")


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
    """Stops a job whose training loss is NaN or infinite, with one line naming the epoch, the
    step and the last finite loss (it counts as failed). On a CPU the loss is read every step
    (no device to wait for); on a GPU its check is copied to pinned host memory without
    blocking and read one step later, once the copy is done, so the device never waits."""

    def __init__(self):
        self._last_finite = float("nan")
        self._pending: tuple[torch.Tensor, torch.cuda.Event, int, int] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach()
        step, epoch = trainer.global_step, trainer.current_epoch + 1
        if loss.device.type != "cuda":
            value = float(loss)
            if not math.isfinite(value):
                self._fail(value, epoch, step)
            self._last_finite = value
            return
        self._check_pending(wait=False)
        host = torch.empty(1, dtype=loss.dtype, pin_memory=True)
        host.copy_(loss.reshape(1), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending = (host, event, epoch, step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(wait=True)  # once an epoch: the last step's loss too

    def _check_pending(self, wait: bool) -> None:
        if self._pending is None:
            return
        host, event, epoch, step = self._pending
        if not wait and not event.query():
            return  # the copy is not done: look again next step
        event.synchronize()
        self._pending = None
        value = float(host[0])
        if not math.isfinite(value):
            self._fail(value, epoch, step)
        self._last_finite = value

    def _fail(self, value: float, epoch: int, step: int) -> None:
        raise TrainingDiverged(
            f"the training loss became {value} at epoch {epoch}, step {step} (last finite loss "
            f"{self._last_finite:.4g}): lower optim.lr, or check the data and the model")

    def state_dict(self) -> dict:
        return {"last_finite": self._last_finite}

    def load_state_dict(self, state_dict: dict) -> None:
        self._last_finite = state_dict.get("last_finite", float("nan"))
