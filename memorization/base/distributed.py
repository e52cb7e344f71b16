"""Where this process stands in a DDP job."""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
    """A torchmetrics ``dist_sync_fn`` for metrics whose states are all sums: one all-reduce
    instead of torchmetrics' default all-gather, which holds world-size copies of every state
    (for MASC's Gram matrices, world x K x D^2 floats). Returns a one-element list, which
    torchmetrics stacks and sums: the reduced state. Reduces in place: torchmetrics copies every
    state before a sync and restores the copy on unsync, so the local sums come back."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return [tensor]


def epoch_generator(seed: int, epoch: int, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded with (seed, epoch, rank): the same draws for the same
    seed, different ones on each rank, and after a resume at an epoch boundary the draws an
    uninterrupted run would make (SeedSequence mixes the three into one well-spread seed)."""
    import numpy as np

    state = np.random.SeedSequence([seed, epoch, rank_world()[0]]).generate_state(1)[0]
    return torch.Generator(device=device).manual_seed(int(state))
