"""One epoch of plain minibatch training over tensors: the loop the relabel stage and the
studies share (they train many small networks, or one briefly, after or outside a Lightning
fit, where a Trainer's set-up per run would cost more than the run)."""

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
