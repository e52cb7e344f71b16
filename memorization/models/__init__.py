"""Networks that honour the layer-probe contract (probes.py), each in a file of its own that
registers it (registry.py: ``@register_model``); every module of this folder is imported here, so
a new file needs no edit elsewhere.

Layer: parts; imports base/ only.
"""

from memorization.base.registry import import_all

import_all(__name__, __path__)

from memorization.models.alexnet import AlexNet, AlexNetConfig  # noqa: E402
from memorization.models.cnn import CNN, CNNConfig  # noqa: E402
from memorization.models.mlp import MLP, MLPConfig  # noqa: E402
from memorization.models.probes import ProbedModel, ProbeLayer, capture  # noqa: E402
from memorization.models.registry import MODELS, register_model  # noqa: E402
from memorization.models.small_alexnet import SmallAlexNet, SmallAlexNetConfig  # noqa: E402
from memorization.models.small_inception import SmallInception, SmallInceptionConfig  # noqa: E402

__all__ = ["CNN", "MLP", "MODELS", "AlexNet", "AlexNetConfig", "CNNConfig", "MLPConfig",
           "ProbeLayer", "ProbedModel", "SmallAlexNet", "SmallAlexNetConfig", "SmallInception",
           "SmallInceptionConfig", "capture", "register_model"]
