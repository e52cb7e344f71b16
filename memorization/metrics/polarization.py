"""Per-layer mean polarization of the nodes' sample sets between corrupted and clean samples.

Theunissen et al., eqs. (5)-(6): for node i and class c, with A_ci the samples of class c on which
node i is active (post-activation > 0) and A~_ci those of them that are corrupted,

    polarization(c, i) = 2 * | 1/2 - |A~_ci| / |A_ci| |
    mu_polarization(l) = 1/(|K| |N_l|) * sum_{c in K, i in N_l} polarization(c, i)

1 when a node's sample set of a class is all clean or all corrupted, 0 when it is half and half.
Each output feature counts as a node (for a convolutional layer: every channel and position).

The class c of a sample: its true class (``labels="true"``, the default). The paper does not say
which label it means, but its reading of Figs. 5 and 7 decides it: "The label and structured input
corruption produces lower polarization earlier in the model, but this is to be expected seeing as
the input data has strong coherence based on correlations in class-related input structures."
That holds only when c is the true class. Within a true class the clean images and those given a
wrong label look alike, so an early node, which responds to the input's structure, fires on both
alike and its sample set of the class is mixed (low polarization); a late node, trained to the
training labels, separates the flipped samples from the clean ones of their true class (high
polarization): the paper's early-to-late rise. With c the training label, class c gathers the
clean images of c and flipped images of other true classes, which the input structure tells apart:
an early node fires on the one kind or the other, so its sample set of c is nearly all clean or
all corrupted, the early layers come out polarized already and the rise need not show (measured
in this project: with c the true class every label-noise run rises from early to late layers;
with c the training label they do not). ``labels="train"`` is the other reading, kept for
comparison.

Both readings are logged, at no extra pass: they share the layer's activity matrix and differ only
in the one-hot of the labels, so one matrix product per batch counts both. The configured reading
is ``polarization/train/<layer>`` (what summaries and figures use); the other one is
``polarization_trainlabel/train/<layer>`` (c = training label) when the configured reading is
true, ``polarization_truelabel/train/<layer>`` (c = true class) when it is train. For input noise
the two coincide (the labels are not changed).

Conventions where the formula gives no number:

- A (class, node) pair with |A_ci| = 0 (node i silent on every sample of class c, or a dead node)
  is left out of the mean: the ratio |A~_ci| / |A_ci| is 0/0 there, and the paper omits dead nodes
  ("Dead nodes (that are not activated for any sample) are omitted when performing the averaging
  operations"); a node silent on one class has no sample set of it either. So the mean runs over
  the pairs with at least one active sample, not over |K| |N_l| pairs. A layer with no active pair
  at all is NaN.
- With no corrupted sample (no noise, or the test set) every present pair scores 2|1/2 - 0| = 1,
  as the formula gives, so the layer's value is 1; the metric is logged on the training probe set
  only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics import Metric

from memorization.base.errors import ConfigError
from memorization.base.store import register_metric
from memorization.metrics.protocol import Context, LayerMetric, MetricConfig, Probe

READINGS = ("true", "train")  # the class of a sample: its true label, its training label
# the key of the reading that is not configured, by the configured one
OTHER_KEY = {"true": "polarization_trainlabel", "train": "polarization_truelabel"}


def polarization_counts(outputs: torch.Tensor, labels: torch.Tensor, corrupted: torch.Tensor,
                        num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """|A_ci| and |A~_ci| as integer counts from one batch of outputs [N, ...] (flattened to
    [N, H]): [K, H] each for labels [N]; [R, K, H] each for R labellings of the same samples,
    labels [R, N] (e.g. the true and the training labels), all from one activity matrix."""
    active = (outputs.flatten(1) > 0).to(torch.float32)  # flatten: an empty batch passes too
    lab = labels if labels.dim() == 2 else labels[None]
    r, n = lab.shape
    onehot = torch.nn.functional.one_hot(lab, num_classes).to(torch.float32)  # [R, N, K]
    marked = torch.cat([onehot, onehot * corrupted.to(torch.float32)[None, :, None]], dim=2)
    # one product for every labelling, active and corrupted: [R * 2K, N] @ [N, H];
    # per-batch counts are below 2**24, so float32 matmuls count exactly
    counts = (marked.permute(0, 2, 1).reshape(r * 2 * num_classes, n) @ active).round().long()
    counts = counts.view(r, 2, num_classes, -1)
    n_active, n_corrupted = counts[:, 0], counts[:, 1]
    return (n_active, n_corrupted) if labels.dim() == 2 else (n_active[0], n_corrupted[0])


def _reduce(n_active: torch.Tensor, n_corrupted: torch.Tensor) -> torch.Tensor:
    """Eq. (6) over the last two dims ([K, H]): the mean over the present (c, i) pairs."""
    present = n_active > 0
    pol = 2.0 * (0.5 - n_corrupted.double() / n_active.clamp_min(1)).abs()
    return (pol * present).sum((-2, -1)) / present.sum((-2, -1))  # NaN if no pair is present


def polarization(outputs: torch.Tensor, labels: torch.Tensor, corrupted: torch.Tensor,
                 num_classes: int) -> torch.Tensor:
    """One-shot eq. (6) for one layer's outputs [N, H]: a scalar for labels [N], one value per
    labelling for labels [R, N]."""
    return _reduce(*polarization_counts(outputs, labels, corrupted, num_classes))


class Polarization(Metric):
    """Streaming :func:`polarization`: the counts summed over batches and ranks, [K, H] each, or
    [R, K, H] for ``readings=R`` labellings (update with labels [R, N]; compute gives [R])."""

    full_state_update = False

    def __init__(self, num_classes: int, num_nodes: int, readings: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        shape = (num_classes, num_nodes) if readings is None else (readings, num_classes,
                                                                   num_nodes)
        for name in ("n_active", "n_corrupted"):
            self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, outputs: torch.Tensor, labels: torch.Tensor,
               corrupted: torch.Tensor) -> None:
        a, c = polarization_counts(outputs, labels, corrupted, self.num_classes)
        self.n_active += a
        self.n_corrupted += c

    def compute(self) -> torch.Tensor:
        return _reduce(self.n_active, self.n_corrupted)


@dataclass
class PolarizationConfig(MetricConfig):
    labels: str = "true"  # class of a sample: its true label, or "train" (its training label)

    def __post_init__(self) -> None:
        if self.labels is True or self.labels == "True":  # an unquoted true (YAML, command line)
            self.labels = "true"  # arrives as a bool, or as its str through the schema
        if self.labels not in READINGS:
            raise ConfigError(f"metrics.polarization.labels={self.labels!r} must be true (the "
                              "true label is a sample's class) or train (the training label)")


class PolarizationMetric(LayerMetric):
    """Eq. (6) per probe layer on the training probe set, both readings of the class (module
    docstring): ``polarization/train/<layer>`` the configured one, ``polarization_trainlabel`` or
    ``polarization_truelabel`` ``/train/<layer>`` the other."""

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
            self.counts[name] = Polarization(self.ctx.num_classes, out.shape[1],
                                             readings=2).to(self.ctx.device)
        b = probe.batch
        true, train = b["y_true"], b["y"]
        # the configured reading first
        labels = torch.stack([true, train] if self.cfg.labels == "true" else [train, true])
        self.counts[name].update(out, labels, b["corrupted"])

    def compute(self) -> dict[str, torch.Tensor]:
        other = OTHER_KEY[self.cfg.labels]
        logs = {}
        for name, m in self.counts.items():
            configured, second = m.compute().unbind()
            logs[f"polarization/train/{name}"] = configured
            logs[f"{other}/train/{name}"] = second
        self.counts = {}
        return logs


register_metric(PolarizationMetric)
