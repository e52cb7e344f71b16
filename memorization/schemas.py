"""The config dataclasses as Hydra structured configs, registered in Hydra's ConfigStore.

Each config of a group starts its defaults list with its schema, e.g. conf/data/digits.yaml:

    defaults:
      - /schema/data/base@_here_
      - _self_

so the schema's keys, types and defaults come first and the file overrides what differs. A key
that is not in the schema, or a value of the wrong type, fails while Hydra composes
(errors.root_error turns that into one line); the range checks run in each dataclass's
``__post_init__``, which OmegaConf does not call while composing: config.validate builds each
group's dataclass with ``OmegaConf.to_object``.

A new group's schema is one line here, e.g. ``register("metrics", MetricsConfig)``, and the
``- /schema/metrics/base@_here_`` line in its YAML files; config.validate then builds it too.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, OmegaConf

from memorization.data.augment import AugmentConfig
from memorization.data.datamodule import DataConfig, NoiseConfig
from memorization.errors import ConfigError, check_bool, check_number
from memorization.metrics.config import MetricsConfig
from memorization.metrics.cosine import CosineMetric
from memorization.metrics.csr import CSRMetric
from memorization.metrics.masc_probe import MASCMetric
from memorization.metrics.polarization import PolarizationMetric
from memorization.models import (
    AlexNetConfig,
    CNNConfig,
    MLPConfig,
    SmallAlexNetConfig,
    SmallInceptionConfig,
)
from memorization.module import ModuleConfig
from memorization.optim import OptimConfig
from memorization.relabel.config import RelabelConfig
from memorization.replicas.config import ReplicasConfig
from memorization.studies.config import EasyHardConfig, SensitivityConfig

GROUP = "schema"


def register(group: str, node: type, name: str = "base") -> None:
    """Store dataclass ``node`` as ``/schema/<group>/<name>``, the first entry of the defaults
    list of that group's configs."""
    ConfigStore.instance().store(group=f"{GROUP}/{group}", name=name, node=node)


def with_target(cls: type, target: str, **defaults: tuple[Any, Any]) -> type:
    """``cls`` with the ``_target_`` Hydra instantiates, and ``defaults``: ``key=(type,
    default)`` for what the YAML files share, e.g. interpolations such as ``${data.shape}``
    (a ``field(...)`` as the default for a dataclass one)."""
    extra = [("_target_", str, field(default=target))]
    extra += [(key, kind, value if isinstance(value, Field) else field(default=value))
              for key, (kind, value) in defaults.items()]
    name = f"{cls.__name__}Schema"
    # importable by name, so configs holding it pickle (submitit and Ray send jobs' configs so)
    schema = make_dataclass(name, extra, bases=(cls,))
    schema.__module__ = __name__
    globals()[name] = schema
    return schema


@dataclass
class AugmentSchema(AugmentConfig):
    seed: int = II("seed")  # the training seed unless given


# the training seed orders the batches and seeds the augmentation, unless given their own
DataSchema = with_target(
    DataConfig, "memorization.data.DataModule", shuffle_seed=(int | None, II("seed")),
    augment=(AugmentSchema, field(default_factory=AugmentSchema)))
_SHAPE = {"in_shape": (tuple[int, ...], II("data.shape")),
          "num_classes": (int, II("data.num_classes"))}
MODELS = {
    # width and bias take a number or string, or a list: OmegaConf has no union of those
    "mlp": with_target(MLPConfig, "memorization.models.MLP", **_SHAPE, width=(Any, 512),
                       bias=(Any, "all")),
    "cnn": with_target(CNNConfig, "memorization.models.CNN", **_SHAPE),
    "alexnet": with_target(AlexNetConfig, "memorization.models.AlexNet", **_SHAPE),
    "small_alexnet": with_target(SmallAlexNetConfig, "memorization.models.SmallAlexNet",
                                 **_SHAPE),
    "small_inception": with_target(SmallInceptionConfig, "memorization.models.SmallInception",
                                   **_SHAPE),
}
ModuleSchema = with_target(ModuleConfig, "memorization.module.Classifier")


@dataclass
class RunConfig:
    """The top-level keys of conf/config.yaml (their meaning: the comments there)."""

    seed: int | None = 0
    stop_at_train_acc: float | None = 1.0
    ckpt_path: str | None = None
    resume: bool = True
    threads: int | None = None
    wait_for_lock: bool = False
    module: ModuleSchema = field(default_factory=ModuleSchema)
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)

    def __post_init__(self):
        check_number(self.seed, "seed", integer=True, lo=0, allow_none=True)
        stop = check_number(self.stop_at_train_acc, "stop_at_train_acc", lo=0, hi=1,
                            allow_none=True, what=" (null trains for trainer.max_epochs)")
        if stop == 0:
            raise ConfigError("stop_at_train_acc=0 would stop at once; use a value in (0, 1] "
                              "or null")
        check_bool(self.resume, "resume")
        check_bool(self.wait_for_lock, "wait_for_lock")
        check_number(self.threads, "threads", integer=True, lo=1, allow_none=True,
                     what=" (null: the launcher's share of the cores)")


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
    """A metric's config (protocol.py) as ``/schema/metrics/<name>``, with its ``class``: the
    metrics group's YAML places it with ``- /schema/metrics/<name>@<name>``."""
    register("metrics", open_node(kind.Config, **{"class": f"{kind.__module__}.{kind.__name__}"}),
             name=kind.name)


def _register_all() -> None:
    register("data", DataSchema)
    register("noise", NoiseConfig)
    register("optim", OptimConfig)
    register("relabel", RelabelConfig)
    for name, schema in MODELS.items():
        register("model", schema, name=name)
    register("metrics", open_node(MetricsConfig))  # every other key of the group is a metric
    for kind in (CosineMetric, PolarizationMetric, MASCMetric, CSRMetric):
        register_metric(kind)
    # the studies' own nodes (conf/sensitivity.yaml, conf/easy_hard.yaml)
    register("sensitivity", SensitivityConfig)
    register("easy_hard", EasyHardConfig)
    # the primary config's: open (struct off), so a key conf/config.yaml adds needs no schema
    # first; Hydra turns struct on once composed, so a misspelt override still fails
    root = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(root, False)
    ConfigStore.instance().store(group=GROUP, name="config", node=root)


_register_all()
