"""MASC's streaming states (``masc.py`` holds the algorithm): the class Gram matrices summed
over batches and DDP ranks (:class:`MASCSubspaces`), or the probed outputs themselves for the
sample-space fit (:class:`MASCSamples`), as torchmetrics ``Metric`` objects."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from memorization.base.distributed import all_reduce_sum, rank_world
from memorization.base.errors import ConfigError
from memorization.metrics.masc import (
    MAX_GRAM_BYTES,
    _add_labelled_grams,
    _check_variance,
    _flat,
    fit_subspaces,
    fit_subspaces_from_samples,
    gram_bytes,
)


class MASCSubspaces(Metric):
    """Streaming fit of the class subspaces of one layer under ``labellings`` labellings (e.g. 2:
    the training and the true labels): the states are the class Gram matrices ``gram``
    [L, K, D, D] and sample counts ``count`` [L, K], both sums over batches and DDP ranks.
    ``update(x, labels)`` takes labels [N] (one labelling) or [N, L]; rows whose labels agree in
    every labelling are multiplied once. ``compute(j)`` returns ``(bases, n_components)`` of
    labelling ``j`` from :func:`fit_subspaces` with ``self.variance`` (an attribute: may be
    changed before ``compute``).

    Construction refuses Gram matrices over ``max_bytes`` per labelling (before allocating them).
    """

    full_state_update = False

    def __init__(self, num_classes: int, dim: int, variance: float = 0.99,
                 gram_dtype: torch.dtype = torch.float32, max_bytes: int = MAX_GRAM_BYTES,
                 labellings: int = 1, name: str | None = None, **kwargs):
        if num_classes < 1 or dim < 1 or labellings < 1:
            raise ConfigError(f"MASC needs num_classes >= 1, a layer width >= 1 and at least one "
                              f"labelling, got num_classes={num_classes}, width={dim}, "
                              f"labellings={labellings}")
        self.variance = _check_variance(variance)
        need = gram_bytes(num_classes, dim, torch.finfo(gram_dtype).bits // 8)
        if need > max_bytes:
            raise ConfigError(
                f"MASC's Gram matrices for {num_classes} classes of a {dim}-wide layer would need "
                f"{need / 1024**3:.2f} GiB (limit {max_bytes / 1024**3:.2f} GiB); raise "
                "metrics.masc.max_gram_gb, or fit wide layers on fewer samples with a smaller "
                "metrics.probe_size and the sample-space fallback (fit_subspaces_from_samples)")
        # no cached result: compute(0) and compute(1) fit different labellings; every state is a
        # sum, so ranks all-reduce instead of gathering world-size copies of the Grams
        super().__init__(**{"compute_with_cache": False, "dist_sync_fn": all_reduce_sum,
                            **kwargs})
        self.num_classes, self.dim, self.labellings = int(num_classes), int(dim), int(labellings)
        self.name = name  # the layer's, for the log line of a float64 refit
        grams = torch.zeros(labellings, num_classes, dim, dim, dtype=gram_dtype)
        self.add_state("gram", default=grams, dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(labellings, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        x = _flat(x)
        if x.shape[1] != self.dim:
            raise ValueError(f"MASCSubspaces was built for width {self.dim}, got {x.shape[1]}")
        labels = labels.reshape(labels.shape[0], -1) if labels.numel() else \
            labels.reshape(0, self.labellings)
        if labels.shape[1] != self.labellings:
            raise ValueError(f"MASCSubspaces was built for {self.labellings} labelling(s), got "
                             f"labels of shape {tuple(labels.shape)}")
        _add_labelled_grams(self.gram, x, labels)
        for j in range(self.labellings):
            self.count[j] += torch.bincount(labels[:, j], minlength=self.num_classes)

    def fit(self, labelling: int = 0,
            samples: tuple[torch.Tensor, torch.Tensor] | None = None, name: str | None = None,
            across_ranks: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The subspaces from the states as they are (no DDP sync: :meth:`compute` syncs).
        ``samples``: the layer's outputs [N, D] and their labels ([N] or [N, L]), when the
        caller holds them: classes that float32 cannot settle are refitted from them in float64
        (see :func:`fit_subspaces`), their float64 Grams summed over the DDP ranks unless
        ``across_ranks=False`` (every sample is in this process: the relabel stage, which runs
        on rank zero alone). ``name``: for its log line (default: the metric's)."""
        if samples is not None:
            x, labels = samples
            samples = (x, labels[:, labelling] if labels.dim() == 2 else labels)
        name = name or (self.name if labelling == 0 else f"{self.name} (labelling {labelling})")
        reduce = (all_reduce_sum if samples is not None and across_ranks
                  and rank_world()[1] > 1 else None)
        return fit_subspaces(self.gram[labelling], self.variance, samples=samples,
                             reduce=reduce, name=name)

    def compute(self, labelling: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fit(labelling)


class MASCSamples(Metric):
    """Streaming fit of the class subspaces from the layer's outputs themselves (the dual route,
    :func:`fit_subspaces_from_samples`): the states are the probed outputs and their labels under
    one or more labellings (columns of ``labels``), concatenated over batches and gathered over
    DDP ranks. Cheaper than K Gram matrices whenever classes have fewer probed samples than the
    layer has units (eigh of n_k x n_k instead of D x D); memory N x D floats.
    ``compute(j)`` fits the subspaces of labelling ``j``.
    """

    full_state_update = False

    def __init__(self, num_classes: int, variance: float = 0.99, **kwargs):
        # no cached result: compute(0) and compute(1) fit different labellings
        super().__init__(**{"compute_with_cache": False, **kwargs})
        self.num_classes, self.variance = int(num_classes), _check_variance(variance)
        self.add_state("x", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.x.append(_flat(x))
        self.labels.append(labels.reshape(labels.shape[0], -1) if labels.numel()
                           else labels.reshape(0, 1 if labels.dim() == 1 else labels.shape[1]))

    def compute(self, labelling: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fit(labelling)

    def fit(self, labelling: int = 0, samples=None, name: str | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The subspaces from the states as they are (no DDP sync: :meth:`compute` syncs). The
        fit is in float64 already: ``samples`` (of :meth:`MASCSubspaces.fit`) is not needed;
        ``name`` is the layer's, for the error of a class float64 cannot decompose."""
        x = dim_zero_cat(self.x)
        labels = dim_zero_cat(self.labels)[:, labelling]
        return fit_subspaces_from_samples(x, labels, self.num_classes, self.variance, name=name)
