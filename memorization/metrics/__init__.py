"""Metrics: one module per metric, each a pure tensor function plus a streaming Metric whose
states are sums (so batches accumulate and DDP ranks all-reduce exactly), and a class of the
epoch-end protocol (``protocol.py``) named in ``conf/metrics/default.yaml``; ``callback.py``
drives them at epoch ends.

Layer: parts; imports the base and models.probes, nothing above.
"""

from memorization.metrics.cosine import MeanCosine, mean_cosine
from memorization.metrics.csr import CriticalSampleRatio, lass_critical
from memorization.metrics.masc import fit_subspaces, masc_predict
from memorization.metrics.masc_states import MASCSubspaces
from memorization.metrics.polarization import Polarization, polarization
from memorization.metrics.subset_accuracy import SubsetAccuracy, subset_accuracy

__all__ = ["CriticalSampleRatio", "MASCSubspaces", "MeanCosine", "Polarization",
           "SubsetAccuracy", "fit_subspaces", "lass_critical", "masc_predict", "mean_cosine",
           "polarization", "subset_accuracy"]
