"""Input preprocessing beyond [0, 1] scaling: Zhang et al.'s CIFAR-10 recipe.

Zhang et al. (Appendix A): pixels divided by 255, "crop from the center to get 28x28 inputs, and
then normalize them by subtracting the mean and dividing the adjusted standard deviation
independently for each image with the per_image_whitening function in TENSORFLOW". The adjusted
standard deviation is max(std, 1/sqrt(number of values)), so a constant image does not divide
by zero. Here the crop happens when the data is loaded (the corruptions then see 28x28 images)
and the whitening last, after the corruption, in place of the per-channel standardization.
"""

from __future__ import annotations

import math

import torch


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window of images [N, C, H, W] (top-left offset rounded down)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def per_image_whitening(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, 1/sqrt(n)) per image, over all its n values (population std)."""
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True)
    adjusted = std.clamp_min(1.0 / math.sqrt(flat.shape[1]))
    return ((flat - mean) / adjusted).reshape(x.shape)
