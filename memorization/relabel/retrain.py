"""Retraining on relabeled data with early stopping on a held-out set (MASC paper, Sec. 3.3).

A plain loop rather than a second Lightning ``Trainer``: the stage runs after the job's fit,
in one process, and needs none of a fit's machinery (checkpoints, loggers, callbacks). Each
epoch: the training set in a seeded random order (a fresh permutation per epoch, the last batch
short), one optimizer step per batch, the learning-rate schedule stepped once; then the held-out
set and the report set evaluated in eval mode. Tensors stay on the device; the held-out value
is read on the host once an epoch, to decide on stopping.

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

from memorization.loop import train_epoch
from memorization.optim import OptimConfig


@dataclass
class Retrained:
    net: nn.Module  # the best epoch's weights
    curve: list[dict[str, float]]  # per epoch: epoch, train_loss, val_acc, val_loss, test_acc
    best_epoch: int
    stopped_early: bool


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
             batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy, mean loss) of ``net`` in eval mode on (x, y), as float64 tensors on the
    device (no host sync)."""
    was_training = net.training
    net.eval()
    hits = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for idx in torch.arange(len(y), device=y.device).split(batch_size):
            xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            logits = net(xb)
            hits += (logits.argmax(1) == yb).sum()
            loss += loss_fn(logits, yb).double() * idx.numel()
    finally:
        net.train(was_training)
    n = max(len(y), 1)
    return hits.double() / n, loss / n


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
    opt, sched = optim.build(net.parameters())
    torch.manual_seed(seed)  # dropout and input noise: the same draws for the same seed
    curve: list[dict[str, float]] = []
    best, best_epoch, best_state, since = None, 0, None, 0
    stopped = False
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + epoch))
        total = train_epoch(net, opt, x, y, order, batch_size, loss_fn)
        if sched is not None:
            sched.step()
        val_acc, val_loss = evaluate(net, *val, loss_fn, eval_batch_size, device)
        test_acc, _ = evaluate(net, *test, loss_fn, eval_batch_size, device)
        row = {"epoch": epoch, "train_loss": float(total / len(y)), "val_acc": float(val_acc),
               "val_loss": float(val_loss), "test_acc": float(test_acc)}
        curve.append(row)
        value = row["val_acc"] if monitor == "acc" else -row["val_loss"]
        if _better(value, best):
            best, best_epoch, since = value, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            since += 1
        if progress is not None:
            progress({**row, "best_epoch": best_epoch})
        if since >= patience and epoch < max_epochs:
            stopped = True
            break
    if best_state is not None:  # None only if every epoch's value was NaN: keep the last
        net.load_state_dict(best_state)
    return Retrained(net, curve, best_epoch or len(curve), stopped)
