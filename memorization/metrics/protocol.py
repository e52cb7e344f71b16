"""What an epoch-end metric asks of the driver (``callback.py``) and what it gives back.

A metric is a class with a ``name`` (its entry in ``conf/metrics/default.yaml``, which names the
class under ``class:``), a ``Config`` dataclass (defaults, and range checks in ``__post_init__``
that raise a one-line :class:`ConfigError`), and one of two shapes:

- :class:`LayerMetric`, fed per probe layer from the driver's one forward pass over the probe
  sets (the training probe set, then the test set). At each evaluation the driver calls

      begin(ctx)                      fresh states for this evaluation
      update("train", probe)          per training probe batch and covered layer
      fit() -> {key: value}           after the training pass (a metric that must fit before it
                                      scores, such as MASC, fits here; the others return {})
      update("test", probe)           per test batch and covered layer (``metrics.test``)
      revisit(probe)                  per training batch again, only for the layers named by
                                      layers_to_revisit() (outputs not kept while fitting)
      compute() -> {key: value}

  ``covers(layer)`` chooses the layers, ``splits`` the probe sets it is fed, ``needs_pre`` asks
  for the weight module's input and pre-activation besides the layer's output.

- :class:`ModelMetric`, a whole-model metric with its own passes (CSR's Langevin search):
  ``begin(ctx)``, then ``compute(net, dm)``.

Values are scalar tensors keyed ``<metric>/<split>/<layer>`` (``csr/test`` for a whole-model
one). States are torchmetrics ``Metric`` sums, so each rank updates on its share of the probe
sets (``ctx.batches`` shards them) and ``compute`` all-reduces them to a single process's values.
Nothing leaves the device in ``update``.

A layer metric's values on the input layer (layer 0, without weights) must depend on the data
only: the driver computes them at the first evaluation and reuses them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from memorization.models.probes import ProbeLayer


@dataclass
class MetricConfig:
    """A metric's settings; subclasses add typed fields with defaults and check them in
    ``__post_init__`` (one :class:`ConfigError` line naming ``metrics.<name>.<field>``)."""

    enabled: bool = True


@dataclass(frozen=True)
class Probe:
    """One probe layer's tensors on one batch, as the forward pass left them."""

    layer: ProbeLayer
    out: torch.Tensor  # the post-activation a_l, [N, H] or [N, C, H, W]
    inp: torch.Tensor | None  # the weight module's input a_{l-1} (needs_pre only)
    pre: torch.Tensor | None  # the weight module's output, e.g. a_{l-1} W^T + b (needs_pre only)
    batch: dict[str, torch.Tensor]  # "y"; on the training split also "y_true" and "corrupted"


@dataclass(frozen=True)
class Context:
    """What an evaluation knows before its first batch."""

    layers: list[ProbeLayer]
    num_classes: int
    probe_sizes: dict[str, int]  # samples per probe set over all ranks: "train", maybe "test"
    world: int  # DDP ranks; this one sees about probe_sizes / world samples
    device: torch.device
    # (split, indices, batch size or None for metrics.batch_size) -> this rank's batches
    batches: Callable[..., Iterator[dict[str, torch.Tensor]]]


class LayerMetric:
    """A per-layer metric; see the module docstring for the order of calls."""

    name: ClassVar[str]
    Config: ClassVar[type[MetricConfig]] = MetricConfig
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    needs_pre: ClassVar[bool] = False

    def __init__(self, config: MetricConfig):
        self.cfg = config
        # values for the run's report (metrics.json), beyond the logged scalars
        self.extras: dict[str, dict] = {}

    def setup(self, dm, layers: list[ProbeLayer]) -> None:
        """Once per fit, before any evaluation: check settings that depend on the model."""

    def covers(self, layer: ProbeLayer) -> bool:
        return True

    def begin(self, ctx: Context) -> None:
        raise NotImplementedError

    def update(self, split: str, probe: Probe) -> None:
        raise NotImplementedError

    def fit(self) -> dict[str, torch.Tensor]:
        return {}

    def layers_to_revisit(self) -> set[str]:
        return set()

    def revisit(self, probe: Probe) -> None:
        raise NotImplementedError(f"{type(self).__name__} asked for no second pass")

    def compute(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class ModelMetric:
    """A whole-model metric: its own passes over the data, not per layer."""

    name: ClassVar[str]
    Config: ClassVar[type[MetricConfig]] = MetricConfig

    def __init__(self, config: MetricConfig):
        self.cfg = config
        self.extras: dict[str, dict] = {}
        self.ctx: Context | None = None

    def setup(self, dm, layers: list[ProbeLayer]) -> None:
        """Once per fit, before any evaluation."""

    def begin(self, ctx: Context) -> None:
        self.ctx = ctx

    def compute(self, net: nn.Module, dm) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def fixed_subset(n: int, size: int | None, seed: int) -> torch.Tensor:
    """``size`` of ``range(n)`` drawn once from ``seed``, sorted; all of it when size is None or
    at least n. A metric's fixed sample, the same at every evaluation and on every rank."""
    if size is None or size >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:size].sort().values
