"""The engine's job-folder callbacks: ``checkpoints/last.ckpt`` at epoch ends, written
atomically (:class:`EpochCheckpoint`), and the stop on a diverged loss (:class:`DivergenceGuard`),
with the two file names a job folder's state is read from (memorization/jobs/folder.py).
"""

from __future__ import annotations

import math
import os
from collections import deque
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

from memorization.base.errors import TrainingDiverged, check_number
from memorization.base.io import atomic_path

LAST = Path("checkpoints") / "last.ckpt"
FIT = "fit.json"  # the fit's report, while a stage after the fit has not finished


class EpochCheckpoint(Checkpoint):
    """``checkpoints/last.ckpt``, the full training state, written at the end of every
    ``every_n_epochs``-th epoch and when training ends, atomically: the new file replaces the
    old one only once it is complete, so a full disk or a kill never leaves a truncated
    ``last.ckpt``. (Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes it only
    when training ends.) A Lightning ``Checkpoint``, so it runs after the other callbacks at an
    epoch's end and holds their state (the stop rule's, the metrics') of that epoch."""

    def __init__(self, dirpath: str | os.PathLike, every_n_epochs: int = 1):
        if every_n_epochs < 1:
            from memorization.base.errors import ConfigError

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
