"""Metrics: one module per metric, each a pure tensor function plus a streaming Metric whose
states are sums (so batches accumulate and DDP ranks all-reduce exactly)."""

from memorization.metrics.subset_accuracy import SubsetAccuracy, subset_accuracy

__all__ = ["SubsetAccuracy", "subset_accuracy"]
