"""Networks that honour the layer-probe contract (see probes.py)."""

from memorization.models.alexnet import SmallAlexNet, SmallAlexNetConfig
from memorization.models.mlp import MLP, MLPConfig
from memorization.models.probes import ProbedModel, ProbeLayer, capture

__all__ = ["MLP", "MLPConfig", "ProbeLayer", "ProbedModel", "SmallAlexNet", "SmallAlexNetConfig",
           "capture"]
