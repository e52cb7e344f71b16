"""The model group's schemas (memorization/base/store.py): each network's config with its
``_target_``, and its input shape and class count taken from the data group."""

from __future__ import annotations

from typing import Any

from omegaconf import II

from memorization.base.store import register, with_target
from memorization.models.alexnet import AlexNetConfig
from memorization.models.cnn import CNNConfig
from memorization.models.mlp import MLPConfig
from memorization.models.small_alexnet import SmallAlexNetConfig
from memorization.models.small_inception import SmallInceptionConfig

SHAPE = {"in_shape": (tuple[int, ...], II("data.shape")),
         "num_classes": (int, II("data.num_classes"))}
MODELS = {
    # width and bias take a number or string, or a list: OmegaConf has no union of those
    "mlp": with_target(MLPConfig, "memorization.models.MLP", **SHAPE, width=(Any, 512),
                       bias=(Any, "all")),
    "cnn": with_target(CNNConfig, "memorization.models.CNN", **SHAPE),
    "alexnet": with_target(AlexNetConfig, "memorization.models.AlexNet", **SHAPE),
    "small_alexnet": with_target(SmallAlexNetConfig, "memorization.models.SmallAlexNet",
                                 **SHAPE),
    "small_inception": with_target(SmallInceptionConfig, "memorization.models.SmallInception",
                                   **SHAPE),
}
for _name, _schema in MODELS.items():
    register("model", _schema, name=_name)
