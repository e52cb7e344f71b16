"""The plain loop: how every network trained *inside* a job is trained and evaluated (the
relabel stage's retraining, the studies' networks), as the engine (engine.py) trains the jobs.

Why not the engine's Lightning Trainer here: these networks are many and small (Arpit et al.'s
100 one-epoch runs of 1,000 examples) or trained briefly after a fit, where a Trainer's set-up
per network costs more than the network's training (``benchmarks/engine.py``;
docs/performance.md). Everything stays tensors on the device, batches by indexing; nothing
syncs with the host inside an epoch.

- :func:`fit`: epochs of minibatch training with a fresh optimizer and schedule, one seeded
  permutation of the data per epoch, a hook after each epoch that may stop it;
- :func:`train_epoch`: one such epoch over a given order;
- :func:`evaluate` / :func:`predict`: accuracy and mean loss, or the predicted classes, in
  eval mode.

Layer: engine; imports torch only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def train_epoch(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                order: torch.Tensor, batch_size: int,
                loss_fn: Callable = F.cross_entropy) -> torch.Tensor:
    """One optimizer step per ``batch_size`` slice of ``order`` (indices into x, y; the last
    batch may be short), in training mode, batches moved to the network's device (a no-op when
    the data is there). Returns the sample-weighted sum of the batches' losses, float64 on the
    device (no host sync)."""
    device = next(net.parameters()).device
    net.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for idx in order.to(y.device).split(batch_size):
        xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
        loss = loss_fn(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach().double() * idx.numel()
    return total


def seeded_orders(n: int, seed: int) -> Callable[[int], torch.Tensor]:
    """Epoch e's order of n examples: successive permutations of one generator seeded with
    ``seed`` (called for e = 1, 2, ... in turn)."""
    gen = torch.Generator().manual_seed(seed)
    return lambda epoch: torch.randperm(n, generator=gen)


def fit(net: nn.Module, optim, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
        batch_size: int, seed: int = 0, loss_fn: Callable = F.cross_entropy,
        order: Callable[[int], torch.Tensor] | None = None,
        after_epoch: Callable[[int, torch.Tensor], bool | None] | None = None) -> nn.Module:
    """Train ``net`` in place on (x, y) for ``epochs`` epochs with an optimizer and schedule
    that ``optim`` makes afresh (an ``optim.OptimConfig``, or its ``build``); the schedule
    steps once per epoch. Epoch e goes through the examples in ``order(e)``, by default
    :func:`seeded_orders` of ``seed``. ``after_epoch(e, loss_sum)`` (the epoch's
    sample-weighted loss sum, a device tensor) runs after each epoch and stops training by
    returning True."""
    opt, sched = getattr(optim, "build", optim)(net.parameters())
    order = order or seeded_orders(len(y), seed)
    for epoch in range(1, epochs + 1):
        total = train_epoch(net, opt, x, y, order(epoch), batch_size, loss_fn)
        if sched is not None:
            sched.step()
        if after_epoch is not None and after_epoch(epoch, total):
            break
    return net


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
             loss_fn: Callable = F.cross_entropy,
             batch_size: int = 4096,
             device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy, mean loss) of ``net`` in eval mode on (x, y), as float64 tensors on
    ``device`` (by default the network's; no host sync); the network's mode is restored
    afterwards."""
    device = device if device is not None else _device(net)
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


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The class ``net`` predicts (eval mode, argmax) for each row of x, on the network's
    device; the network's mode is restored afterwards."""
    device, was_training = _device(net), net.training
    net.eval()
    try:
        return torch.cat([net(xb.to(device, non_blocking=True)).argmax(1)
                          for xb in x.split(batch_size)])
    finally:
        net.train(was_training)
