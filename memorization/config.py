"""Checks on the composed config, run before anything is built: bad values fail in one line."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from memorization.data import SOURCES
from memorization.errors import ConfigError
from memorization.module import LOSSES, AdversarialConfig, OptimConfig
from memorization.noise import CORRUPTIONS, get_corruption


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _number(value, key: str, *, integer: bool = False, lo: float | None = None,
            hi: float | None = None, allow_none: bool = False, what: str = ""):
    """``value`` as a checked int/float: one line naming ``key`` when it is not."""
    if value is None and allow_none:
        return None
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        rng = (f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None
               else f" >= {lo:g}" if lo is not None else "")
        kind = "an integer" if integer else "a number"
        none = " or null" if allow_none else ""
        raise ConfigError(f"{key}={value} must be {kind}{rng}{none}{what}")
    return value


def validate(cfg: DictConfig, on_driver: bool = False) -> None:
    """Raise :class:`ConfigError` naming the first value that cannot work, and how to fix it.
    ``on_driver``: the checks of a sweep's jobs before launch, on a machine that may not be
    where they run (no GPU on a SLURM login node), so the devices are not checked."""
    for key in ("data", "noise", "model", "module", "optim", "trainer"):
        _require(cfg.get(key) is not None, f"the config has no '{key}' section; pick one with "
                                           f"{key}=<option> or restore conf/config.yaml")
    data, noise, model, trainer = cfg.data, cfg.noise, cfg.model, cfg.trainer
    _number(cfg.get("seed"), "seed", integer=True, lo=0, allow_none=True)

    _require(data.source in SOURCES, f"data.source={data.source!r} is unknown; choose one of: "
                                     f"{', '.join(sorted(SOURCES))}")
    shape = tuple(data.shape)
    _require(len(shape) >= 1 and all(isinstance(d, int) and d >= 1 for d in shape),
             f"data.shape={list(shape)} must be a list of positive integers")
    _number(data.num_classes, "data.num_classes", integer=True, lo=2)
    for key in ("batch_size", "eval_batch_size"):
        _number(data[key], f"data.{key}", integer=True, lo=1)
    _number(data.val_size, "data.val_size", lo=0,
            what=" (a count, or a fraction of the training split in (0, 1))")
    for key in ("normalize", "on_device", "eval_train"):
        _require(isinstance(data.get(key, True), bool), f"data.{key}={data.get(key)} must be "
                                                        "true or false")

    _require(noise.name in CORRUPTIONS, f"noise.name={noise.name!r} is unknown; choose one of: "
                                        f"{', '.join(sorted(CORRUPTIONS))}")
    p = _number(noise.p, "noise.p", lo=0, hi=1,
                what=": the probability that a training sample is corrupted")
    _number(noise.seed, "noise.seed", integer=True, lo=0)
    corruption = get_corruption(noise.name, apply_to_test=bool(noise.get("apply_to_test")))
    _require(corruption.fixed_p is None or p == corruption.fixed_p,
             f"noise={noise.name} is defined with p={corruption.fixed_p}, got noise.p={p}; drop "
             "the noise.p override (or use noise=label_uniform for a fraction)")
    corruption.check_shape(shape)

    _validate_model(model, shape, data.num_classes)
    _require(cfg.module.get("loss", "ce") in LOSSES,
             f"module.loss={cfg.module.get('loss')!r} is not one of {', '.join(LOSSES)}")
    try:
        OptimConfig(**OmegaConf.to_container(cfg.optim, resolve=True))
    except TypeError as e:  # an unknown option, or a value of the wrong type
        raise ConfigError(f"optim: {e}") from e
    try:
        AdversarialConfig(**OmegaConf.to_container(cfg.module.get("adversarial") or {},
                                                   resolve=True))
    except TypeError as e:
        raise ConfigError(f"module.adversarial: {e}") from e

    _number(trainer.get("max_epochs"), "trainer.max_epochs", integer=True, lo=1)
    _require(trainer.get("use_distributed_sampler") is False,
             "trainer.use_distributed_sampler must be false: the data module shards batches "
             "over ranks itself")
    accelerator = str(trainer.get("accelerator", "auto"))
    _require(on_driver or accelerator not in ("gpu", "cuda") or torch.cuda.is_available(),
             f"trainer.accelerator={accelerator} but no GPU is visible; use trainer=default "
             "(auto) or trainer=cpu")
    stop = _number(cfg.get("stop_at_train_acc"), "stop_at_train_acc", lo=0, hi=1,
                   allow_none=True, what=" (null trains for trainer.max_epochs)")
    _require(stop != 0, "stop_at_train_acc=0 would stop at once; use a value in (0, 1] or null")
    from hydra.core.hydra_config import HydraConfig

    from memorization.launch import check_launcher

    hydra_cfg = cfg.get("hydra") or (HydraConfig.get() if HydraConfig.initialized() else None)
    if hydra_cfg is not None:  # a launcher that cannot run this job: one line, before any
        check_launcher(hydra_cfg, trainer)
    ckpt = cfg.get("ckpt_path")
    _require(ckpt is None or Path(str(ckpt)).is_file(),
             f"ckpt_path={ckpt} is not a file; point it at a checkpoint such as "
             "<run folder>/checkpoints/last.ckpt")
    _require(isinstance(cfg.get("resume", True), bool),
             f"resume={cfg.get('resume')} must be true or false")
    _number(cfg.get("threads"), "threads", integer=True, lo=1, allow_none=True,
            what=" (null: the launcher's share of the cores)")
    every = ((cfg.get("callbacks") or {}).get("checkpoint") or {}).get("every_n_epochs", 1)
    _number(every, "callbacks.checkpoint.every_n_epochs", integer=True, lo=1,
            what=" (callbacks=no_checkpoint turns checkpoints off)")
    wandb_cfg = (cfg.get("logger") or {}).get("wandb") or {}
    mode = os.environ.get("WANDB_MODE") or str(wandb_cfg.get("mode", "offline"))
    _require(not wandb_cfg or mode != "online" or _wandb_key_available(),
             "logger.wandb.mode=online but no W&B API key is set here: run `wandb login` (or set "
             "WANDB_API_KEY), or use logger.wandb.mode=offline and `wandb sync` later")
    if cfg.get("metrics") is not None:
        from memorization.metrics.config import read_metrics_config

        read_metrics_config(cfg.metrics)


def _wandb_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:  # where W&B looks: $NETRC, else ~/.netrc
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _validate_model(model: DictConfig, shape: tuple[int, ...], num_classes: int) -> None:
    in_shape = model.get("in_shape")
    _require(in_shape is None or (all(isinstance(d, int) for d in in_shape)
                                  and math.prod(in_shape) == math.prod(shape)),
             f"model.in_shape={list(in_shape or [])} does not fit the data's inputs {list(shape)}; "
             "leave model.in_shape at ${data.shape} or pick a matching model")
    k = model.get("num_classes")
    _require(k == num_classes,
             f"model.num_classes={k} but the data has {num_classes} classes; leave "
             "model.num_classes at ${data.num_classes}")
    from memorization.models import (
        AlexNetConfig,
        CNNConfig,
        MLPConfig,
        SmallAlexNetConfig,
        SmallInceptionConfig,
    )

    configs = {"memorization.models.MLP": MLPConfig,
               "memorization.models.SmallAlexNet": SmallAlexNetConfig,
               "memorization.models.SmallInception": SmallInceptionConfig,
               "memorization.models.CNN": CNNConfig,
               "memorization.models.AlexNet": AlexNetConfig}
    kind = configs.get(model.get("_target_"))
    if kind is not None:
        options = {k: v for k, v in OmegaConf.to_container(model, resolve=True).items()
                   if k != "_target_"}
        try:
            kind(**options)
        except TypeError as e:  # an unknown option, or a value of the wrong type
            raise ConfigError(f"model: {e}") from e
