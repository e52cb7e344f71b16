"""Networks that honour the layer-probe contract (see probes.py)."""

from memorization.models.mlp import MLP, MLPConfig
from memorization.models.probes import ProbedModel, ProbeLayer, capture
from memorization.models.small_alexnet import SmallAlexNet, SmallAlexNetConfig

__all__ = ["MLP", "MLPConfig", "ProbeLayer", "ProbedModel", "SmallAlexNet", "SmallAlexNetConfig",
           "capture"]
