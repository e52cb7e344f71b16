"""The ``metrics`` config group: the driver's settings, and one entry per metric.

Every key of the group that is not a driver setting is a metric, whose entry names its class and
sets its config's fields::

    masc:
      class: memorization.metrics.masc_probe.MASCMetric
      variance: 0.99

(``class`` rather than Hydra's ``_target_``: the callback is instantiated recursively, and the
driver, not Hydra, builds the metrics from their checked configs.) The entry's key must be the
class's ``name``, the prefix of its logged keys and of its config's error messages. A metric is
turned off with ``enabled: false``, all of them with ``metrics=none`` (the driver's
``enabled: false``); a dict given in code is read over ``conf/metrics/default.yaml``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from memorization.base.errors import ConfigError, check_all
from memorization.base.store import open_node, register
from memorization.metrics.protocol import LayerMetric, MetricConfig, ModelMetric

Metric = LayerMetric | ModelMetric


@dataclass
class MetricsConfig:
    """The driver's settings (the group's keys that are not metrics)."""

    enabled: bool = True
    every_n_epochs: int = 5  # and after the last epoch
    probe_size: int | None = 10000  # training samples probed; null: all of them
    probe_seed: int = 0
    batch_size: int = 1024
    test: bool = True  # probe the test set as well

    def __post_init__(self) -> None:
        check_all([
            (isinstance(self.enabled, bool) and isinstance(self.test, bool),
             f"metrics.enabled={self.enabled!r} and metrics.test={self.test!r} must be true or "
             "false"),
            (_integer(self.every_n_epochs, 1),
             f"metrics.every_n_epochs={self.every_n_epochs} must be an integer >= 1"),
            (self.probe_size is None or _integer(self.probe_size, 1),
             f"metrics.probe_size={self.probe_size} must be >= 1 or null (all training samples)"),
            (_integer(self.batch_size, 1),
             f"metrics.batch_size={self.batch_size} must be an integer >= 1"),
            (_integer(self.probe_seed, 0),
             f"metrics.probe_seed={self.probe_seed!r} must be an integer >= 0"),
        ])


@dataclass(frozen=True)
class MetricsSuite:
    """A checked ``metrics`` group: the driver's settings and, per metric name in the group's
    order, its class and its config."""

    settings: MetricsConfig
    entries: dict[str, tuple[type[Metric], MetricConfig]]

    def build(self) -> dict[str, Metric]:
        """The enabled metrics, in the config's order."""
        return {name: kind(cfg) for name, (kind, cfg) in self.entries.items() if cfg.enabled}


def read_metrics_config(d: dict | DictConfig | None) -> MetricsSuite:
    """The checked ``metrics`` group (a dict, or Hydra's node), read over
    ``conf/metrics/default.yaml`` (so ``{"masc": {"variance": 0.9}}`` keeps every other metric
    as it is there): the first value that cannot work raises one :class:`ConfigError` line."""
    if isinstance(d, DictConfig):
        d = OmegaConf.to_container(d, resolve=True)
    base = OmegaConf.load(_defaults())
    base.pop("defaults", None)  # Hydra's defaults list (the schemas), not a metric
    d = OmegaConf.to_container(OmegaConf.merge(base, d or {}))
    own = {f.name for f in fields(MetricsConfig)}
    settings = MetricsConfig(**{k: v for k, v in d.items() if k in own})
    return MetricsSuite(settings, {key: _entry(key, value) for key, value in d.items()
                                   if key not in own})


def _defaults() -> Path:
    """conf/metrics/default.yaml: beside the package in a checkout, inside it in a wheel."""
    from memorization.base.io import conf_dir

    return Path(conf_dir()) / "metrics" / "default.yaml"


def _integer(value, lo: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def _entry(key: str, value) -> tuple[type[Metric], MetricConfig]:
    if not isinstance(value, dict) or not isinstance(value.get("class"), str):
        raise ConfigError(f"metrics.{key} is not a metric entry: give it `class: <module>.<Class>` "
                          "(see conf/metrics/default.yaml), or remove it")
    options = {k: v for k, v in value.items() if k != "class"}
    kind = _import(key, value["class"])
    if kind.name != key:
        raise ConfigError(f"metrics.{key} names {value['class']}, whose name is "
                          f"{kind.name!r}; call the entry {kind.name}")
    if not isinstance(options.get("enabled", True), bool):
        raise ConfigError(f"metrics.{key}.enabled={options['enabled']!r} must be true or false")
    try:
        cfg = kind.Config(**options)
    except TypeError as e:  # an unknown option
        raise ConfigError(f"metrics.{key}: {e}; its options are "
                          f"{', '.join(f.name for f in fields(kind.Config))}") from e
    return kind, cfg


def _import(key: str, path: str) -> type[Metric]:
    module, _, attr = path.rpartition(".")
    try:
        kind = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"metrics.{key}.class={path} cannot be imported ({e})") from e
    if not (isinstance(kind, type) and issubclass(kind, LayerMetric | ModelMetric)):
        raise ConfigError(f"metrics.{key}.class={path} is not a LayerMetric or ModelMetric "
                          "(memorization/metrics/protocol.py)")
    return kind


register("metrics", open_node(MetricsConfig))  # every other key of the group is a metric
