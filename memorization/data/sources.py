"""Dataset sources: each is one small file that registers a loader returning raw tensors.

A loader returns a :class:`RawData` with inputs as float32 in [0, 1], shaped (N, C, H, W) for
images, and int64 labels; the official test split when the dataset has one. Everything else
(validation hold-out, corruption, normalization, device placement) is the DataModule's job.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from memorization.base.errors import ConfigError
from memorization.base.registry import Registry

SOURCES = Registry("data source", "data=digits")  # name -> loader


@dataclass
class RawData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise ConfigError(f"{split} split: {x.shape[0]} inputs but {y.shape[0]} labels")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ConfigError(f"{split} labels outside [0, {self.num_classes})")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ConfigError(f"train inputs {tuple(self.x_train.shape[1:])} and test inputs "
                             f"{tuple(self.x_test.shape[1:])} differ in shape")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def register_source(name: str) -> Callable[[Callable[..., RawData]], Callable[..., RawData]]:
    """``@register_source("name")`` above a loader: ``data.source=name`` reads with it."""
    return SOURCES.register(name)


def load_source(name: str, **options) -> RawData:
    loader = SOURCES.lookup(name)
    try:
        inspect.signature(loader).bind(**options)
    except TypeError as e:  # an option the loader does not take
        raise ConfigError(f"data.source_options for {name}: {e}") from e
    return loader(**options)
