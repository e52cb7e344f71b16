"""MASC per probe layer for the relabel stage: class subspaces fitted on the whole training set
under two labellings, then a prediction for every training and test sample at every layer.

The routes are the per-layer metric's (``masc_probe.py``, ``method: auto``). The layers'
outputs on the training set are kept on the device while they fit in ``relabel.max_cache_gb``
(over all layers, in layer order). A kept layer with fewer training samples per class than
units is fitted from its samples (:func:`~memorization.metrics.masc.fit_subspaces_from_samples`,
the dual PCA in float64); any other layer from float32 Gram matrices summed over batches
(:class:`~memorization.metrics.masc_states.MASCSubspaces`, the rows where both labellings agree
multiplied once) by :func:`~memorization.metrics.masc.fit_subspaces`, which refits a class whose
component count float32 cannot settle in float64: from the kept outputs, else from the Gram
matrix cast to float64 (the float32 sums' own rounding is then the limit). A layer that fits
neither budget (``relabel.max_gram_gb`` for the Gram matrices) is skipped with a warning.
Predictions are :func:`~memorization.metrics.masc.masc_predict`'s: -1 for a zero vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from memorization.base.errors import ConfigError
from memorization.metrics.masc import (
    fit_subspaces_from_samples,
    flat_bases,
    gram_bytes,
    masc_predict,
)
from memorization.metrics.masc_probe import pick_layers
from memorization.metrics.masc_states import MASCSubspaces
from memorization.models.probes import capture

GIB = 1024**3
LABELLINGS = ("masc", "masc_true")  # subspaces of the training labels, of the true labels


def probe_names(net: nn.Module, patterns: list[str] | None) -> list[str]:
    """The probe layers ``patterns`` (names or globs; None: all) pick, in probe order; one
    line naming a pattern that matches none."""
    if not hasattr(net, "probe_layers"):
        raise ConfigError("relabel needs a model with probe_layers() (memorization/models/)")
    return pick_layers([layer.name for layer in net.probe_layers()], patterns, "relabel.layers")


@dataclass
class LayerPredictions:
    """MASC predictions per (labelling, layer), [N] long on the device (-1: a zero vector)."""

    layers: list[str]  # the fitted layers, in probe order
    train: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    test: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    components: dict[str, list[int]] = field(default_factory=dict)  # "masc/fc1": per class
    skipped: list[str] = field(default_factory=list)


def _batches(n: int, batch_size: int, device: torch.device):
    return torch.arange(n, device=device).split(batch_size)


def _fit(net: nn.Module, names: list[str], x: torch.Tensor, labels: torch.Tensor,
         num_classes: int, variance: float, batch_size: int, device: torch.device,
         max_gram: int, max_cache: int, skipped: list[str]) -> dict:
    """The pass over the training set, then the subspaces of every layer and labelling:
    {(labelling, layer): (bases, flat_bases(bases), n_components)}."""
    fits: dict[str, MASCSubspaces | None] = {}  # None: the sample route, or skipped
    kept: dict[str, list[torch.Tensor]] = {}
    n, cache_left = x.shape[0], max_cache
    with capture(net, names=names) as store:
        for idx in _batches(n, batch_size, x.device):
            net(x[idx].to(device, non_blocking=True))
            lab = labels[idx].to(device, non_blocking=True)
            for name in names:
                out = store["out"][name].flatten(1)
                if name not in fits:
                    dim, need = out.shape[1], 4 * n * out.shape[1]
                    keep = need <= cache_left
                    cache_left -= need if keep else 0
                    if keep:
                        kept[name] = []
                    # as the metrics' "auto" route: classes with fewer samples than the layer
                    # has units are fitted from their samples (n_k x n_k kernels, float64)
                    if keep and n / num_classes < dim:
                        fits[name] = None
                    elif gram_bytes(num_classes, dim) <= max_gram:
                        with torch.device(device):  # the states straight on the device
                            fits[name] = MASCSubspaces(num_classes, dim, variance=variance,
                                                       max_bytes=max_gram,
                                                       labellings=len(LABELLINGS)).to(device)
                    else:
                        rank_zero_warn(f"relabel: MASC skips layer {name} ({dim} wide: its Gram "
                                       f"matrices exceed relabel.max_gram_gb={max_gram / GIB:g}"
                                       ", its outputs relabel.max_cache_gb)")
                        skipped.append(name)
                        kept.pop(name, None)
                        fits[name] = None
                        continue
                if name in skipped:
                    continue
                if fits[name] is not None:
                    fits[name].update(out, lab)
                if name in kept:
                    kept[name].append(out)
    bases = {}
    labels = labels.to(device)
    for name, f in fits.items():
        if name in skipped:
            continue
        samples = (torch.cat(kept[name]), labels) if name in kept else None
        for j, lab_name in enumerate(LABELLINGS):
            if f is None:
                basis, n_comp = fit_subspaces_from_samples(samples[0], labels[:, j],
                                                           num_classes, variance)
            else:
                # rank zero holds every sample: no all-reduce with ranks that are not here
                basis, n_comp = f.fit(j, samples=samples, name=f"relabel {lab_name}/{name}",
                                      across_ranks=False)
            bases[(lab_name, name)] = (basis, flat_bases(basis), n_comp)
    return bases


@torch.no_grad()
def layer_predictions(net: nn.Module, names: list[str], train: dict[str, torch.Tensor],
                      test_x: torch.Tensor, num_classes: int, *, variance: float = 0.99,
                      batch_size: int = 1024, device: torch.device | str = "cpu",
                      max_gram_gb: float = 2.0, max_cache_gb: float = 1.0) -> LayerPredictions:
    """Fit MASC at the layers ``names`` of ``net`` on ``train`` (``x``, ``y`` the training
    labels, ``y_true``), then predict every training sample and every row of ``test_x``.
    ``net`` runs in eval mode (restored afterwards) on ``device``."""
    device = torch.device(device)
    labels = torch.stack([train["y"], train["y_true"]], dim=1)
    skipped: list[str] = []
    was_training = net.training
    net.eval()
    try:
        bases = _fit(net, names, train["x"], labels, num_classes, variance, batch_size, device,
                     int(max_gram_gb * GIB), int(max_cache_gb * GIB), skipped)
        fitted = [n for n in names if n not in skipped]
        res = LayerPredictions(fitted, skipped=skipped)
        for key, (_, _, n_comp) in bases.items():
            res.components[f"{key[0]}/{key[1]}"] = n_comp.tolist()
        with capture(net, names=fitted) as store:
            for split, x in (("train", train["x"]), ("test", test_x)):
                parts: dict[tuple[str, str], list[torch.Tensor]] = {k: [] for k in bases}
                for idx in _batches(x.shape[0], batch_size, x.device):
                    net(x[idx].to(device, non_blocking=True))
                    for (lab_name, name), (basis, flat, _) in bases.items():
                        parts[(lab_name, name)].append(
                            masc_predict(store["out"][name], basis, flat))
                getattr(res, split).update({k: torch.cat(v) for k, v in parts.items()})
    finally:
        net.train(was_training)
    return res
