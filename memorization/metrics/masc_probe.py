"""MASC (``masc.py``) as an epoch-end metric: a classifier fitted per probe layer on the training
probe set, then scored on it and on the test set.

Two labellings share one pass: subspaces fitted on the training labels (``masc``) and on the true
labels (``masc_true``); the rows where the two agree (the clean samples) are multiplied once.
Logged per layer and labelling: ``masc/train/fc3`` (accuracy on the training labels),
``masc/train_true/fc3`` (same subspaces, accuracy on the true labels), ``masc/test/fc3``,
``masc/components/fc3`` (mean components per class), and the same under ``masc_true/``; the
per-class components go to the run's report as ``masc_components``.

A sample cannot be scored before the subspaces exist, so the layers' outputs on the training
probe set are kept on the device while fitting (up to ``max_cache_gb`` over all layers, in layer
order), and scored from there after :meth:`MASCMetric.fit`; the layers beyond the budget ask the
driver for a second training pass (:meth:`MASCMetric.layers_to_revisit`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch
from lightning.pytorch.utilities import rank_zero_warn

from memorization.base.errors import ConfigError, check_all, shown
from memorization.base.store import register_metric
from memorization.metrics.masc import _check_variance, flat_bases, gram_bytes, masc_predict
from memorization.metrics.masc_states import MASCSamples, MASCSubspaces
from memorization.metrics.protocol import Context, LayerMetric, MetricConfig, Probe
from memorization.metrics.subset_accuracy import ProbeAccuracy
from memorization.models.probes import ProbeLayer

GIB = 1024**3
LABELLINGS = ("masc", "masc_true")  # fitted on the training labels, on the true labels


@dataclass
class MASCConfig(MetricConfig):
    variance: float = 0.99  # explained variance kept per class subspace
    # "gram": K Gram matrices (D x D) per layer, summed over batches; "samples": keep the probed
    # outputs (N x D) and eigendecompose per-class n_k x n_k kernels; "auto": samples when classes
    # have fewer probed samples than the layer has units and they fit in max_gram_gb, else gram
    method: str = "auto"
    max_gram_gb: float = 2.0  # memory allowed per layer and labelling, either route
    # the Gram route's layer outputs on the training probe set are kept on the device, up to this
    # much over all layers, and scored from there; layers beyond it get a second forward pass
    max_cache_gb: float = 1.0
    # probe layers to fit, by name or glob pattern (e.g. [input, flatten, "fc*"], the layers the
    # MASC paper probes in its CNNs); null: every probe layer
    layers: list[str] | None = None

    def __post_init__(self) -> None:
        _check_variance(self.variance)
        check_all([
            (self.method in ("auto", "gram", "samples"),
             f"metrics.masc.method={self.method!r} must be auto, gram or samples"),
            (min(self.max_gram_gb, self.max_cache_gb) >= 0,
             f"metrics.masc.max_gram_gb={shown(self.max_gram_gb)} and "
             f"max_cache_gb={shown(self.max_cache_gb)} must be >= 0"),
            (self.layers is None or all(isinstance(p, str) for p in self.layers),
             f"metrics.masc.layers={self.layers} must be a list of layer names or globs, or null"),
        ])


class _MASCFit(torch.nn.Module):
    """MASC subspaces of one layer under both labellings, by the Gram or the sample route; with
    ``keep``, also the layer's outputs on this rank's training probe batches (with the batches'
    labels), scored after the fit without another forward pass."""

    def __init__(self, method: str, num_classes: int, dim: int, variance: float, budget: int,
                 keep: bool):
        super().__init__()
        self.method = method
        if method == "samples":  # holds the outputs anyway
            self.fitter = MASCSamples(num_classes, variance)
        else:
            self.fitter = MASCSubspaces(num_classes, dim, variance=variance, max_bytes=budget,
                                        labellings=len(LABELLINGS))
        self.kept: list[tuple[torch.Tensor, dict]] | None = (
            [] if keep or method == "samples" else None)

    def update(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        if self.kept is None or self.method == "samples":
            self.fitter.update(out, _labels(batch))
        if self.kept is not None:  # the labels only: the batch's inputs need not stay alive
            self.kept.append((out, {k: batch[k] for k in ("y", "y_true", "corrupted")}))

    def fit(self, layer: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        samples = None
        if self.method == "gram" and self.kept:
            # kept outputs: one Gram update over the whole probe set, whose per-class products
            # are far larger (and faster per row) than a batch's; and what a class that float32
            # cannot settle is refitted from, in float64
            samples = (torch.cat([out for out, _ in self.kept]),
                       torch.cat([_labels(b) for _, b in self.kept]))
            self.fitter.update(*samples)
        f = self.fitter
        with f.sync_context(dist_sync_fn=f.dist_sync_fn):  # one DDP sync for both labellings
            return {name: f.fit(j, samples=samples, name=f"{name}/{layer}")
                    for j, name in enumerate(LABELLINGS)}


def pick_layers(names: list[str], patterns: list[str] | None, key: str) -> list[str]:
    """The probe layers ``patterns`` (names or globs; None: all) pick, in probe order; one
    line naming ``key`` and a pattern that matches no layer."""
    for pattern in patterns or []:
        if not fnmatch.filter(names, pattern):
            raise ConfigError(f"{key}: {pattern!r} matches no probe layer of this model; its "
                              f"layers are {', '.join(names)}")
    if patterns is None:
        return list(names)
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([batch["y"], batch["y_true"]], dim=1)


class MASCMetric(LayerMetric):
    """MASC per chosen probe layer: fits on the training pass, scores after; see the module
    docstring."""

    name = "masc"
    Config = MASCConfig

    def __init__(self, config: MASCConfig):
        super().__init__(config)
        # per-class components of the last evaluation, {"masc/fc1": [r_0, ..., r_K-1]}
        self.extras = {"masc_components": {}}

    def setup(self, dm, layers: list[ProbeLayer]) -> None:
        pick_layers([layer.name for layer in layers], self.cfg.layers, "metrics.masc.layers")

    def covers(self, layer: ProbeLayer) -> bool:
        patterns = self.cfg.layers
        return patterns is None or any(fnmatch.fnmatchcase(layer.name, p) for p in patterns)

    def begin(self, ctx: Context) -> None:
        self.ctx = ctx
        self.fits: dict[str, _MASCFit | None] = {}  # None: the layer is too wide, skipped
        self.cache_left = int(self.cfg.max_cache_gb * GIB)
        self.bases: dict[tuple[str, str], tuple] = {}  # (labelling, layer) -> masc_predict's
        self.acc: dict[tuple[str, str], ProbeAccuracy] = {}

    def update(self, split: str, probe: Probe) -> None:
        out = probe.out.flatten(1)
        name = probe.layer.name
        if split == "train":
            if name not in self.fits:
                self.fits[name] = self._new_fit(out.shape[1])
            if self.fits[name] is not None:
                self.fits[name].update(out, probe.batch)
        else:
            self._score(split, name, out, probe.batch)

    def _new_fit(self, dim: int) -> _MASCFit | None:
        m, ctx = self.cfg, self.ctx
        k, n = ctx.num_classes, ctx.probe_sizes["train"]
        budget = int(m.max_gram_gb * GIB)
        method = m.method
        if method == "auto":
            few = n / k < dim and 4 * n * dim <= budget
            method = "samples" if few or gram_bytes(k, dim) > budget else "gram"
        need = 4 * n * dim if method == "samples" else gram_bytes(k, dim)
        if need > budget:  # e.g. a convolution's output: skip the layer, say so once
            rank_zero_warn(f"MASC skips a {dim}-wide layer: it would need {need / GIB:.1f} "
                           f"GiB (metrics.masc.max_gram_gb={m.max_gram_gb}); lower "
                           "metrics.probe_size or raise the limit to include it")
            return None
        kept = 4 * -(-n // ctx.world) * dim  # this rank's share of the outputs
        keep = method == "gram" and kept <= self.cache_left
        if keep:  # the budget goes to the layers in order: the first ones are kept
            self.cache_left -= kept
        with torch.device(ctx.device):  # the Gram states straight on the device, not via the host
            fit = _MASCFit(method, k, dim, m.variance, budget, keep)
        return fit.to(ctx.device)  # a no-op for the tensors; tells torchmetrics where they are

    def fit(self) -> dict[str, torch.Tensor]:
        """Every layer's subspaces; scores the kept outputs. Returns the components' logs."""
        logs = {}
        for layer, f in self.fits.items():
            if f is None:
                continue
            for name, (basis, n_comp) in f.fit(layer).items():
                self.bases[(name, layer)] = (basis, flat_bases(basis))
                self.acc[(name, layer)] = ProbeAccuracy(self.ctx.probe_sizes, self.ctx.device)
                logs[f"{name}/components/{layer}"] = n_comp.double().mean()
                self.extras["masc_components"][f"{name}/{layer}"] = n_comp.tolist()
            for out, batch in f.kept or []:
                self._score("train", layer, out, batch)
            if f.kept is not None:
                f.kept = []  # scored: free the outputs
        return logs

    def layers_to_revisit(self) -> set[str]:
        return {layer for layer, f in self.fits.items() if f is not None and f.kept is None}

    def revisit(self, probe: Probe) -> None:
        self._score("train", probe.layer.name, probe.out.flatten(1), probe.batch)

    def _score(self, split: str, layer: str, out: torch.Tensor, batch: dict) -> None:
        for name in LABELLINGS:
            if (name, layer) in self.bases:
                pred = masc_predict(out, *self.bases[(name, layer)])
                self.acc[(name, layer)].update(split, pred, batch)

    def compute(self) -> dict[str, torch.Tensor]:
        logs = {}
        for (name, layer), acc in self.acc.items():
            logs |= acc.compute(name, layer)
        self.fits, self.bases, self.acc = {}, {}, {}  # the kept outputs and states go
        return logs


register_metric(MASCMetric)
