"""Per-layer mean polarization of the nodes' sample sets between corrupted and clean samples.

Theunissen et al., eqs. (5)-(6): for node i and class c, with A_ci the samples of class c on which
node i is active (post-activation > 0) and A~_ci those of them that are corrupted,

    polarization(c, i) = 2 * | 1/2 - |A~_ci| / |A_ci| |
    mu_polarization(l) = 1/(|K| |N_l|) * sum_{c in K, i in N_l} polarization(c, i)

1 when a node's sample set of a class is all clean or all corrupted, 0 when it is half and half.
Reading chosen: the mean runs over the (c, i) pairs with at least one active sample (the paper
omits dead nodes; a node silent on one class has no polarization for it either). With no
corrupted samples every pair scores 1, as the formula gives. The class c is the training label
by default (the sample sets the network was trained to form); ``labels="true"`` uses the true
label. Each output feature counts as a node (for a convolutional layer: every channel and
position).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics import Metric

from memorization.errors import ConfigError
from memorization.metrics.protocol import Context, LayerMetric, MetricConfig, Probe
from memorization.store import register_metric


def polarization_counts(outputs: torch.Tensor, labels: torch.Tensor, corrupted: torch.Tensor,
                        num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """|A_ci| and |A~_ci| as [K, H] integer counts, from one batch of outputs [N, H]."""
    active = (outputs.flatten(1) > 0).to(torch.float32)  # flatten: an empty batch passes too
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(torch.float32)  # [N, K]
    # per-batch counts are below 2**24, so float32 matmuls count exactly
    n_active = (onehot.t() @ active).round().long()
    n_corrupted = ((onehot * corrupted[:, None].to(onehot.dtype)).t() @ active).round().long()
    return n_active, n_corrupted


def _reduce(n_active: torch.Tensor, n_corrupted: torch.Tensor) -> torch.Tensor:
    present = n_active > 0
    pol = 2.0 * (0.5 - n_corrupted.double() / n_active.clamp_min(1)).abs()
    return (pol * present).sum() / present.sum()  # NaN if no node is ever active


def polarization(outputs: torch.Tensor, labels: torch.Tensor, corrupted: torch.Tensor,
                 num_classes: int) -> torch.Tensor:
    """One-shot eq. (6) for one layer's outputs [N, H]."""
    return _reduce(*polarization_counts(outputs, labels, corrupted, num_classes))


class Polarization(Metric):
    """Streaming :func:`polarization`: [K, H] counts summed over batches and ranks."""

    full_state_update = False

    def __init__(self, num_classes: int, num_nodes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        for name in ("n_active", "n_corrupted"):
            self.add_state(name, torch.zeros(num_classes, num_nodes, dtype=torch.long),
                           dist_reduce_fx="sum")

    def update(self, outputs: torch.Tensor, labels: torch.Tensor,
               corrupted: torch.Tensor) -> None:
        a, c = polarization_counts(outputs, labels, corrupted, self.num_classes)
        self.n_active += a
        self.n_corrupted += c

    def compute(self) -> torch.Tensor:
        return _reduce(self.n_active, self.n_corrupted)


@dataclass
class PolarizationConfig(MetricConfig):
    labels: str = "train"  # class of a sample: its training label, or "true"

    def __post_init__(self) -> None:
        if self.labels not in ("train", "true"):
            raise ConfigError(f"metrics.polarization.labels={self.labels!r} must be train (the "
                              "training label is a sample's class) or true")


class PolarizationMetric(LayerMetric):
    """Eq. (6) per probe layer on the training probe set: ``polarization/train/<layer>``."""

    name = "polarization"
    Config = PolarizationConfig
    splits = ("train",)  # the test set has no corrupted samples

    def begin(self, ctx: Context) -> None:
        self.ctx = ctx
        self.counts: dict[str, Polarization] = {}

    def update(self, split: str, probe: Probe) -> None:
        out = probe.out.flatten(1)
        name = probe.layer.name
        if name not in self.counts:
            self.counts[name] = Polarization(self.ctx.num_classes, out.shape[1]).to(self.ctx.device)
        b = probe.batch
        self.counts[name].update(out, b["y"] if self.cfg.labels == "train" else b["y_true"],
                                 b["corrupted"])

    def compute(self) -> dict[str, torch.Tensor]:
        logs = {f"polarization/train/{name}": m.compute() for name, m in self.counts.items()}
        self.counts = {}
        return logs


register_metric(PolarizationMetric)
