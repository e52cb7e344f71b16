"""Theunissen et al. Alg. 3: structured input corruption."""

from __future__ import annotations

import torch

from memorization.noise.base import Corruption, register


def rotate_invert(x: torch.Tensor) -> torch.Tensor:
    """invert(rotate(x)) for images shaped (N, C, H, W).

    rotate: 90 degrees counter-clockwise as the image is displayed (row 0 at the top), so the
    top-right pixel moves to the top-left. invert: each value subtracted from the maximum value
    of that sample (over all its channels).
    """
    r = torch.rot90(x, k=1, dims=(-2, -1))
    peak = r.reshape(r.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (r.dim() - 1)))
    return peak - r


@register
class Structured(Corruption):
    """A selected image becomes invert(rotate(x)): unlike any real image, yet still structured."""

    name = "structured"
    kind = "input"
    needs_image = True

    def corrupt(self, x, y, num_classes, gen, stats):
        return rotate_invert(x), y
