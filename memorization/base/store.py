"""How a feature registers its config dataclass as a Hydra structured config (a "schema"), in
its own file, beside the dataclass: ``register("relabel", RelabelConfig)`` stores it in Hydra's
ConfigStore as ``/schema/relabel/base``, which that group's YAML files name first:

    defaults:
      - /schema/relabel/base@_here_
      - _self_

so the schema's keys, types and defaults come first and the file overrides what differs. A key
that is not in the schema, or a value of the wrong type, fails while Hydra composes
(errors.root_error turns that into one line); the range checks run in each dataclass's
``__post_init__``, which OmegaConf does not call while composing: config.validate builds each
group's dataclass with ``OmegaConf.to_object``. memorization/jobs/catalog.py imports every feature,
so that all of them are registered before a config is composed.
"""

from __future__ import annotations

import sys
from dataclasses import Field, field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

GROUP = "schema"


def register(group: str, node: Any, name: str = "base") -> None:
    """Store dataclass (or structured node) ``node`` as ``/schema/<group>/<name>``, the first
    entry of the defaults list of that group's configs."""
    ConfigStore.instance().store(group=f"{GROUP}/{group}" if group else GROUP, name=name,
                                 node=node)


def with_target(cls: type, target: str, **defaults: tuple[Any, Any]) -> type:
    """``cls`` with the ``_target_`` Hydra instantiates, and ``defaults``: ``key=(type,
    default)`` for what the YAML files share, e.g. interpolations such as ``${data.shape}``
    (a ``field(...)`` as the default for a dataclass one). The new class is ``<cls>Schema`` in
    ``cls``'s module, importable by name, so that configs holding it pickle (submitit and Ray
    send jobs' configs so)."""
    extra = [("_target_", str, field(default=target))]
    extra += [(key, kind, value if isinstance(value, Field) else field(default=value))
              for key, (kind, value) in defaults.items()]
    name = f"{cls.__name__}Schema"
    schema = make_dataclass(name, extra, bases=(cls,))
    schema.__module__ = cls.__module__
    setattr(sys.modules[cls.__module__], name, schema)
    return schema


def open_node(cls: type, **keys: Any):
    """``cls`` as a structured node with struct off: typed fields, room for other keys (the
    metrics group's entries; a metric entry's ``class``, which no dataclass field can be
    called)."""
    node = OmegaConf.structured(cls)
    OmegaConf.set_struct(node, False)
    for key, value in keys.items():
        node[key] = value
    return node


def register_metric(kind: type) -> None:
    """A metric's config (metrics/protocol.py) as ``/schema/metrics/<name>``, with its
    ``class``: the metrics group's YAML places it with ``- /schema/metrics/<name>@<name>``."""
    register("metrics", open_node(kind.Config, **{"class": f"{kind.__module__}.{kind.__name__}"}),
             name=kind.name)
