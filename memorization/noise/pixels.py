"""Zhang et al.'s pixel permutations: "shuffled pixels" and "random pixels".

Reading chosen: a *pixel* is a spatial location, so a permutation moves all channels of a pixel
together (for one-channel data it is simply a permutation of the features). Inputs shaped (N, D)
are permuted over D.
"""

from __future__ import annotations

import torch

from memorization.noise.base import Corruption, register

PERMUTATION_SEED_OFFSET = 1_000_003


def _as_pixels(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H*W); (N, D) -> (N, 1, D)."""
    return x.reshape(x.shape[0], x.shape[1] if x.dim() >= 3 else 1, -1)


@register
class ShuffledPixels(Corruption):
    """One fixed permutation of the pixels, drawn once, the same for every selected image.

    Zhang et al. also permuted the test images with it; ``apply_to_test=true`` does that (to the
    validation hold-out too), off by default.
    """

    name = "shuffled_pixels"
    kind = "input"

    def __init__(self, apply_to_test: bool = False):
        self.apply_to_test = apply_to_test
        self.perm: torch.Tensor | None = None

    def prepare(self, shape, seed):
        # Its own generator: the permutation depends on the seed and the image size only, not on
        # the training-set size or on p, and exists for the test set even when p = 0.
        n_pixels = _as_pixels(torch.empty(1, *shape)).shape[-1]
        gen = torch.Generator().manual_seed(int(seed) + PERMUTATION_SEED_OFFSET)
        self.perm = torch.randperm(n_pixels, generator=gen)

    def corrupt(self, x, y, num_classes, gen, stats):
        return _as_pixels(x)[..., self.perm].reshape(x.shape), y

    def test_transform(self):
        if not self.apply_to_test:
            return None
        perm = self.perm

        def shuffle(x: torch.Tensor) -> torch.Tensor:
            return _as_pixels(x)[..., perm.to(x.device)].reshape(x.shape)

        return shuffle


@register
class RandomPixels(Corruption):
    """An independent random permutation of the pixels for every selected image."""

    name = "random_pixels"
    kind = "input"

    # images per chunk: bounds the float64 keys and int64 permutations (16 bytes a pixel) to
    # ~0.8 GB for 64x64 images, instead of growing with the dataset
    chunk = 4096

    def corrupt(self, x, y, num_classes, gen, stats):
        px = _as_pixels(x)
        out = torch.empty_like(px)
        for start in range(0, px.shape[0], self.chunk):
            part = px[start:start + self.chunk]
            # argsort of i.i.d. uniforms is a uniform random permutation, one per row (float64:
            # ties, which would bias it, are practically impossible)
            keys = torch.rand(part.shape[0], part.shape[-1], generator=gen, dtype=torch.float64)
            idx = torch.argsort(keys, dim=1)[:, None, :].expand(-1, part.shape[1], -1)
            out[start:start + self.chunk] = torch.gather(part, 2, idx)
        return out.reshape(x.shape), y
