"""Retraining on relabeled data with early stopping on a held-out set (MASC paper, Sec. 3.3).

Trained by the engine's ``fit_network`` (memorization/engine/trainer.py: a Lightning fit over
tensors, without the job's checkpoints, loggers and callbacks, which the job around it owns). Each
epoch: the training set in a seeded random order (a fresh permutation per epoch, the last batch
short), one optimizer step per batch, the learning-rate schedule stepped once; then the held-out set
and the report set evaluated in eval mode. Tensors stay on the device; the held-out value is read on
the host once an epoch, to decide on stopping.

Early stopping (our reading of "early stopping with patience of 3 by considering the 20% test
dataset as a validation dataset"): after each epoch the monitored value on the held-out set
(accuracy by default, or loss) is compared with the best so far; only a strict improvement
resets the count, and training stops once ``patience`` epochs in a row brought none, or after
``max_epochs``. The weights of the best epoch are restored (the first such epoch on a tie), so
the result is always a retrained network (the weights before retraining are no candidate).
A NaN value counts as no improvement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from memorization.engine.optim import OptimConfig
from memorization.engine.trainer import evaluate, fit_network


@dataclass
class Retrained:
    net: nn.Module  # the best epoch's weights
    curve: list[dict[str, float]]  # per epoch: epoch, train_loss, val_acc, val_loss, test_acc
    best_epoch: int
    stopped_early: bool


def _better(value: float, best: float | None) -> bool:
    return math.isfinite(value) and (best is None or value > best)


def retrain(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
            val: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
            optim: OptimConfig, loss_fn: Callable, *, max_epochs: int, patience: int,
            monitor: str = "acc", batch_size: int = 128, eval_batch_size: int = 1024,
            seed: int = 0, device: torch.device | str = "cpu",
            progress: Callable[[dict], None] | None = None) -> Retrained:
    """Train ``net`` (in place, on ``device``) on (x, y) with a fresh optimizer built from
    ``optim``; early stopping on ``val`` by ``monitor``; ``test`` is evaluated every epoch for
    the curve only. ``progress`` gets each epoch's row. See the module docstring."""
    device = torch.device(device)
    net.to(device)
    torch.manual_seed(seed)  # dropout and input noise: the same draws for the same seed
    curve: list[dict[str, float]] = []
    best: dict = {"value": None, "epoch": 0, "state": None, "since": 0}

    def after_epoch(epoch: int, total: torch.Tensor) -> bool:
        val_acc, val_loss = evaluate(net, *val, loss_fn, eval_batch_size, device)
        test_acc, _ = evaluate(net, *test, loss_fn, eval_batch_size, device)
        row = {"epoch": epoch, "train_loss": float(total / len(y)), "val_acc": float(val_acc),
               "val_loss": float(val_loss), "test_acc": float(test_acc)}
        curve.append(row)
        value = row["val_acc"] if monitor == "acc" else -row["val_loss"]
        if _better(value, best["value"]):
            best.update(value=value, epoch=epoch, since=0,
                        state={k: v.detach().clone() for k, v in net.state_dict().items()})
        else:
            best["since"] += 1
        if progress is not None:
            progress({**row, "best_epoch": best["epoch"]})
        return best["since"] >= patience and epoch < max_epochs

    # a fresh permutation per epoch, from seed + epoch
    fit_network(net, optim, x, y, epochs=max_epochs, batch_size=batch_size, loss_fn=loss_fn,
        order=lambda e: torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + e)),
        after_epoch=after_epoch)
    if best["state"] is not None:  # None only if every epoch's value was NaN: keep the last
        net.load_state_dict(best["state"])
    stopped = len(curve) < max_epochs
    return Retrained(net, curve, best["epoch"] or len(curve), stopped)
