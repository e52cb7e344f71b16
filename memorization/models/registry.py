"""Networks register themselves: ``@register_model("name", NameConfig)`` above the class makes
``model=name`` build it. The config dataclass becomes the ``model`` group's schema
(memorization/base/store.py) with the class's ``_target_`` and the input shape and class count
taken from the data group; ``defaults`` adds what the YAML files share (``key=(type,
default)``). A new network is one file in this folder (found by its ``__init__``) and one YAML
in conf/model/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import II

from memorization.base.registry import Registry
from memorization.base.store import register, with_target

MODELS = Registry("model", "model=mlp")  # name -> the network's class
SHAPE = {"in_shape": (tuple[int, ...], II("data.shape")),
         "num_classes": (int, II("data.num_classes"))}


def register_model(name: str, config: type, **defaults: tuple[Any, Any]) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        MODELS.add(name, cls)
        schema = with_target(config, f"{cls.__module__}.{cls.__qualname__}", **SHAPE, **defaults)
        register("model", schema, name=name)
        return cls

    return wrap
