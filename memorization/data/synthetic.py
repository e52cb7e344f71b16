"""A tiny learnable dataset for tests: noisy copies of one random prototype image per class."""

from __future__ import annotations

import torch

from memorization.data.sources import RawData, register_source


@register_source("synthetic")
def load_synthetic(n_train: int = 96, n_test: int = 48, num_classes: int = 3,
                   shape: tuple[int, ...] = (1, 4, 4), spread: float = 0.1,
                   seed: int = 0) -> RawData:
    g = torch.Generator().manual_seed(seed)
    shape = tuple(shape)
    prototypes = torch.rand(num_classes, *shape, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes  # balanced classes
        x = prototypes[y] + spread * torch.randn(n, *shape, generator=g)
        return x.clamp(0.0, 1.0), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return RawData(x_train, y_train, x_test, y_test, num_classes=num_classes)
