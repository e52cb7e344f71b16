"""Registry and driver shared by every corruption family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from memorization.base.errors import ConfigError
from memorization.base.registry import Registry
from memorization.noise.record import CorruptionRecord, tensor_hash

CORRUPTIONS = Registry("noise type", "noise=label_flip")  # name -> Corruption class


class Corruption:
    """One corruption type. Subclasses set ``name`` and ``kind`` and implement ``corrupt``.

    ``corrupt`` receives the selected samples only and returns their new inputs and labels; it
    draws any randomness from ``gen`` (a CPU generator), so the record is the same on any device.
    """

    name: ClassVar[str]
    kind: ClassVar[str]  # "label" or "input"
    fixed_p: ClassVar[float | None] = None  # types whose p is part of their definition
    needs_image: ClassVar[bool] = False  # needs inputs shaped (N, C, H, W)

    def __init__(self, apply_to_test: bool = False):
        if apply_to_test:
            raise ConfigError(f"noise.apply_to_test=true is only defined for shuffled_pixels, "
                             f"not {self.name}; drop the override")
        self.apply_to_test = False

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Fail before training when the data cannot take this corruption."""
        if self.needs_image and (len(shape) != 3 or shape[1] != shape[2]):
            raise ConfigError(f"noise={self.name} needs square images shaped (C, H, W), "
                             f"but the data has shape {tuple(shape)}; pick another noise type")

    def prepare(self, shape: tuple[int, ...], seed: int) -> None:
        """Draw what the type shares across samples (none by default), before any selection."""

    def corrupt(self, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                gen: torch.Generator, stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def test_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """A transform for the evaluation inputs, or None (the default: they stay untouched)."""
        return None


def register(cls: type[Corruption]) -> type[Corruption]:
    """``@register`` above a Corruption subclass: ``noise=<its name>`` corrupts with it."""
    return CORRUPTIONS.add(cls.name, cls)


def get_corruption(name: str, **options) -> Corruption:
    return CORRUPTIONS.lookup(name)(**options)


@dataclass
class CorruptionResult:
    x: torch.Tensor  # training inputs after corruption
    y: torch.Tensor  # training labels after corruption
    record: CorruptionRecord
    test_transform: Callable[[torch.Tensor], torch.Tensor] | None


def corrupt_dataset(x: torch.Tensor, y: torch.Tensor, num_classes: int, name: str, p: float,
                    seed: int, apply_to_test: bool = False) -> CorruptionResult:
    """Corrupt a training set: select each sample with probability p, then corrupt the selected.

    ``x`` holds raw inputs (pixels in [0, 1]); the caller normalizes afterwards. Inputs are not
    modified in place.
    """
    corruption = get_corruption(name, apply_to_test=apply_to_test)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"noise.p={p} is outside [0, 1]; it is the probability that a training "
                         "sample is corrupted")
    if corruption.fixed_p is not None and p != corruption.fixed_p:
        raise ConfigError(f"noise={name} is defined with p={corruption.fixed_p}, got noise.p={p}; "
                         "drop the noise.p override (or use noise=label_uniform for a fraction)")
    corruption.check_shape(tuple(x.shape[1:]))
    if isinstance(seed, bool) or int(seed) != seed:
        raise ConfigError(f"noise.seed={seed} must be an integer")
    x, y = x.cpu(), y.cpu()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigError(f"labels must lie in [0, {num_classes}); got {int(y.min())}.."
                          f"{int(y.max())}: check data.num_classes")
    if corruption.kind == "label" and name != "none" and num_classes < 2:
        raise ConfigError(f"noise={name} needs at least 2 classes")
    corruption.prepare(tuple(x.shape[1:]), int(seed))
    gen = torch.Generator().manual_seed(int(seed))
    selected = torch.rand(y.shape[0], generator=gen) < p
    # Statistics of the clean training set, for types that match them (Zhang's "Gaussian").
    stats = {"mean": x.mean(), "std": x.std(unbiased=False)}
    x_new, y_new = x.clone(), y.clone()
    if bool(selected.any()):
        xs, ys = corruption.corrupt(x[selected], y[selected], num_classes, gen, stats)
        x_new[selected] = xs.to(x.dtype)
        y_new[selected] = ys.to(y.dtype)
    corrupted = (y_new != y) if corruption.kind == "label" else selected.clone()
    record = CorruptionRecord(name=name, p=float(p), seed=int(seed), selected=selected,
                              corrupted=corrupted, true_labels=y.clone(), train_labels=y_new,
                              inputs_hash=tensor_hash(x_new))
    return CorruptionResult(x_new, y_new, record, corruption.test_transform())
