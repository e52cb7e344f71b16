"""Data augmentation on the device, a whole batch at a time (training batches only; off by default).

Three transforms, each drawn independently per sample, applied in this order:

- ``crop_padding`` p: pad the image by p pixels on every side with black and take a random
  crop of the original size (offsets uniform in [0, 2p] on each axis; the usual CIFAR recipe with
  p = 4);
- ``hflip``: mirror left-right with probability 1/2;
- ``rotation`` d: rotate about the centre by an angle uniform in [-d, d] degrees, bilinear, with
  black outside the original image.

"Black" is raw pixel 0, which after the DataModule's standardization is the per-channel value
-mean/std: padding and the corners a rotation uncovers get that value, so an augmented image is
what the same transform on the raw image followed by standardization would give (up to the
bilinear interpolation). With per-image whitening there is no single such value; 0 is used.

The random draws come from a generator seeded with (seed, epoch, rank): runs with the same seed
see the same augmented batches, and a run resumed at an epoch boundary sees the same ones as an
uninterrupted run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memorization.base.errors import ConfigError, check_bool, check_number


@dataclass
class AugmentConfig:
    crop_padding: int = 0  # pixels; 0: no random crop
    hflip: bool = False
    rotation: float = 0.0  # maximum angle in degrees; 0: no rotation
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) \
                or self.crop_padding < 0:
            raise ConfigError(f"data.augment.crop_padding={self.crop_padding} must be an integer "
                              ">= 0 (pixels of padding before the random crop)")
        check_number(self.rotation, "data.augment.rotation", lo=0, hi=180, what=" degrees")
        check_bool(self.hflip, "data.augment.hflip")

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.rotation > 0


def random_crop(x: torch.Tensor, padding: int, fill: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """Pad [N, C, H, W] by ``padding`` with ``fill`` ([C] or scalar) and crop H x W at random
    offsets, by one gather (no loop over samples)."""
    n, c, h, w = x.shape
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    padded = F.pad(x - fill, (padding,) * 4) + fill  # F.pad fills one scalar: shift to 0 first
    dy, dx = (torch.randint(0, 2 * padding + 1, (n, 1), device=x.device, generator=generator)
              for _ in range(2))
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # [N, 1, H, 1]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # [N, 1, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_rotation(x: torch.Tensor, degrees: float, fill: torch.Tensor,
                    generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * math.radians(degrees)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + fill


def augment(x: torch.Tensor, cfg: AugmentConfig, fill: torch.Tensor,
            generator: torch.Generator) -> torch.Tensor:
    """The configured transforms on a batch of images [N, C, H, W] (see the module docstring)."""
    if cfg.crop_padding:
        x = random_crop(x, cfg.crop_padding, fill, generator)
    if cfg.hflip:
        x = random_hflip(x, generator)
    if cfg.rotation:
        x = random_rotation(x, cfg.rotation, fill, generator)
    return x
