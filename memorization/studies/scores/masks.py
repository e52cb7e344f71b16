"""Which training examples each model of a scores job trains on: model k at ratio r draws a
uniform random subset of exactly round(r n) of the n training examples, from a generator
seeded with (seed, k) alone, so a model's subset is the same whatever chunk, process or
device trains it, and a rerun or a resumed job draws the same. Its initial weights and its
batch order come from streams of their own (:data:`WEIGHTS`, :data:`ORDER`) of the same
pair."""

from __future__ import annotations

import numpy as np
import torch

# the streams of one model: its subset (stream 0, what model_seed(seed, k) always gave), its
# initial weights, its batch order
SUBSET, WEIGHTS, ORDER = 0, 1, 2


def model_seed(seed: int, model: int, stream: int = SUBSET) -> int:
    """A 63-bit generator seed from (seed, model, stream): NumPy's SeedSequence mixes them, so
    neighbouring models or seeds give unrelated streams (seed * M + k would collide)."""
    entropy = [int(seed), int(model)] + ([int(stream)] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def subset_size(n: int, ratio: float) -> int:
    if not 0 < ratio < 1:
        raise ValueError(f"a subset ratio must be in (0, 1), not {ratio}")
    return min(n - 1, max(1, round(ratio * n)))


def subset_masks(n: int, ratio: float, seed: int, models: range | list[int],
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """[len(models), n] bool: row j is model ``models[j]``'s subset (exactly
    ``subset_size(n, ratio)`` examples)."""
    m = subset_size(n, ratio)
    rows = torch.zeros(len(models), n, dtype=torch.bool)
    for j, k in enumerate(models):  # one draw per model, not per example
        g = torch.Generator().manual_seed(model_seed(seed, k))
        rows[j, torch.randperm(n, generator=g)[:m]] = True
    return rows.to(device)
