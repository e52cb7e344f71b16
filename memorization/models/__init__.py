"""Networks that honour the layer-probe contract (see probes.py).

Layer: parts; imports errors only.
"""

from memorization.models import schema  # noqa: F401,I001  (registers the model schemas)
from memorization.models.alexnet import AlexNet, AlexNetConfig
from memorization.models.cnn import CNN, CNNConfig
from memorization.models.mlp import MLP, MLPConfig
from memorization.models.probes import ProbedModel, ProbeLayer, capture
from memorization.models.small_alexnet import SmallAlexNet, SmallAlexNetConfig
from memorization.models.small_inception import SmallInception, SmallInceptionConfig

__all__ = ["CNN", "MLP", "AlexNet", "AlexNetConfig", "CNNConfig", "MLPConfig", "ProbeLayer",
           "ProbedModel", "SmallAlexNet", "SmallAlexNetConfig", "SmallInception",
           "SmallInceptionConfig", "capture"]
