"""Checks on the composed config, run before anything is built: bad values fail in one line."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from memorization.data import SOURCES
from memorization.errors import ConfigError
from memorization.module import LOSSES, OptimConfig
from memorization.noise import CORRUPTIONS, get_corruption


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first value that cannot work, and how to fix it."""
    for key in ("data", "noise", "model", "module", "optim", "trainer"):
        _require(cfg.get(key) is not None, f"the config has no '{key}' section; pick one with "
                                           f"{key}=<option> or restore conf/config.yaml")
    data, noise, model, trainer = cfg.data, cfg.noise, cfg.model, cfg.trainer
    seed = cfg.get("seed")
    _require(seed is None or (isinstance(seed, int) and seed >= 0),
             f"seed={seed} must be a non-negative integer or null")

    _require(data.source in SOURCES, f"data.source={data.source!r} is unknown; choose one of: "
                                     f"{', '.join(sorted(SOURCES))}")
    shape = tuple(data.shape)
    _require(len(shape) >= 1 and all(isinstance(d, int) and d >= 1 for d in shape),
             f"data.shape={list(shape)} must be a list of positive integers")
    _require(data.num_classes >= 2, f"data.num_classes={data.num_classes} must be >= 2")
    for key in ("batch_size", "eval_batch_size"):
        _require(data[key] >= 1, f"data.{key}={data[key]} must be >= 1")
    _require(data.val_size >= 0, f"data.val_size={data.val_size} must be >= 0 (a count or a "
                                 "fraction of the training split)")

    _require(noise.name in CORRUPTIONS, f"noise.name={noise.name!r} is unknown; choose one of: "
                                        f"{', '.join(sorted(CORRUPTIONS))}")
    p = noise.p
    _require(isinstance(p, (int, float)) and 0.0 <= p <= 1.0,
             f"noise.p={p} is outside [0, 1]; it is the probability that a training sample is "
             "corrupted")
    _require(isinstance(noise.seed, int) and not isinstance(noise.seed, bool),
             f"noise.seed={noise.seed} must be an integer")
    corruption = get_corruption(noise.name, apply_to_test=bool(noise.get("apply_to_test")))
    _require(corruption.fixed_p is None or p == corruption.fixed_p,
             f"noise={noise.name} is defined with p={corruption.fixed_p}, got noise.p={p}; drop "
             "the noise.p override (or use noise=label_uniform for a fraction)")
    corruption.check_shape(shape)

    in_shape = model.get("in_shape")
    _require(in_shape is None or math.prod(in_shape) == math.prod(shape),
             f"model.in_shape={list(in_shape or [])} does not fit the data's inputs {list(shape)}; "
             "leave model.in_shape at ${data.shape} or pick a matching model")
    k = model.get("num_classes")
    _require(k is None or k == data.num_classes,
             f"model.num_classes={k} but the data has {data.num_classes} classes; leave "
             "model.num_classes at ${data.num_classes}")

    _require(cfg.module.get("loss", "ce") in LOSSES,
             f"module.loss={cfg.module.get('loss')!r} is not one of {', '.join(LOSSES)}")
    OptimConfig(**OmegaConf.to_container(cfg.optim, resolve=True))

    max_epochs = trainer.get("max_epochs")
    _require(isinstance(max_epochs, int) and max_epochs >= 1,
             f"trainer.max_epochs={max_epochs} must be an integer >= 1")
    _require(trainer.get("use_distributed_sampler") is False,
             "trainer.use_distributed_sampler must be false: the data module shards batches "
             "over ranks itself")
    if cfg.get("metrics") is not None:
        from memorization.metrics.callback import MetricsConfig

        MetricsConfig.from_dict(OmegaConf.to_container(cfg.metrics, resolve=True))
    stop = cfg.get("stop_at_train_acc")
    _require(stop is None or 0.0 < stop <= 1.0,
             f"stop_at_train_acc={stop} must be in (0, 1] or null (train for max_epochs)")
