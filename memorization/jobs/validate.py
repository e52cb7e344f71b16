"""Checks on the composed config, run before anything is built: bad values fail in one line.

Each group's own keys are checked by its dataclass (memorization/base/store.py: types while Hydra
composes, ranges in ``__post_init__``), which :func:`build` makes from the group's node. What
stays here spans groups, or the machine: the model against the data's shape and classes, the
noise against the data, the trainer and launcher, files and keys that must exist.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from dataclasses import fields, is_dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import memorization.jobs.catalog  # noqa: F401  (registers the schemas, for composing in tests too)
from memorization.base import accel
from memorization.base.errors import ConfigError, check_number, first_line, root_error
from memorization.config.replicas import check_stackable, replica_count
from memorization.config.studies import STUDY_KEYS
from memorization.engine.checkpoint import DivergenceGuard
from memorization.jobs.folder import resolved_dict
from memorization.noise import get_corruption


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def build(cfg: DictConfig, key: str):
    """The dataclass of ``cfg[key]``, which runs its checks; None for a node without a schema
    (a model of one's own, named by ``_target_``, has only the checks below)."""
    node = cfg.get(key)
    kind = OmegaConf.get_type(node) if OmegaConf.is_dict(node) else None
    if kind is None or not is_dataclass(kind):
        return None
    names = [f.name for f in fields(kind)]
    extra = next((k for k in node if k not in names), None)
    if extra is not None and key != "optim":  # optim: any argument of its _target_ (optim.py)
        raise ConfigError(f"{key}.{extra} is not a key of {key}; its keys: "
                          f"{', '.join(n for n in names if n != '_target_')}")
    try:
        return OmegaConf.to_object(node)
    except Exception as e:
        err = root_error(e)
        raise (err if isinstance(err, ConfigError) else
               ConfigError(f"{key}: {first_line(err)}")) from e


def check_run(cfg: DictConfig):
    """The top-level keys, checked by RunConfig (memorization/config/schemas.py)."""
    from memorization.config.schemas import RunConfig

    keys = [f.name for f in fields(RunConfig) if f.name != "module"]
    return RunConfig(**{k: cfg.get(k) for k in keys if k in cfg})


@functools.cache
def _top_level_keys() -> frozenset[str]:
    """The top-level keys of memorization.run's primary config, read from conf/config.yaml
    (no Hydra call: this runs inside Hydra's jobs too): its own keys, the groups and packages
    its defaults list names, RunConfig's fields and Hydra's node."""
    from dataclasses import fields

    import yaml

    from memorization.base.io import conf_dir
    from memorization.config.schemas import RunConfig

    primary = yaml.safe_load((Path(conf_dir()) / "config.yaml").read_text()) or {}
    keys = {k for k in primary if k != "defaults"} | {"hydra"}
    for entry in primary.get("defaults") or []:
        name = next(iter(entry)) if isinstance(entry, dict) else str(entry)
        if name.startswith("override ") or name == "_self_":
            continue
        keys.add(name.rpartition("@")[2] if "@" in name else name.split("/")[0])
    return frozenset(keys | {f.name for f in fields(RunConfig)})


def validate(cfg: DictConfig, on_driver: bool = False) -> None:
    """Raise :class:`ConfigError` naming the first value that cannot work, and how to fix it.
    ``on_driver``: the checks of a sweep's jobs before launch, on a machine that may not be
    where they run (no GPU on a SLURM login node), so the devices are not checked."""
    study = next((k for k in STUDY_KEYS if k in cfg), None)
    _require(study is None, f"the config has a '{study}' node: that preset is for "
                            f"python -m memorization.{study}, not memorization.run")
    for key in ("data", "noise", "model", "module", "optim", "trainer"):
        _require(cfg.get(key) is not None, f"the config has no '{key}' section; pick one with "
                                           f"{key}=<option> or restore conf/config.yaml")
    unread = sorted(set(cfg.keys()) - _top_level_keys())
    _require(not unread, f"nothing reads a top-level key '{unread[0] if unread else ''}' (added "
                         "with +?): remove it; python -m memorization.run --help lists the keys")
    check_run(cfg)
    data, noise, model, trainer = cfg.data, cfg.noise, cfg.model, cfg.trainer
    for key in ("data", "noise", "model", "module", "relabel"):
        build(cfg, key)
    optim = build(cfg, "optim")
    if optim is not None:  # the arguments its _target_ takes: built on one dummy parameter
        optim.build([torch.zeros(1, requires_grad=True)])

    shape = tuple(data.shape)
    check_noise(noise, shape)
    _validate_model(model, shape, data.num_classes)

    check_number(trainer.get("max_epochs"), "trainer.max_epochs", integer=True, lo=1)
    if replica_count(cfg) > 1:
        check_stackable(cfg)
    _require(trainer.get("use_distributed_sampler") is False,
             "trainer.use_distributed_sampler must be false: the data module shards batches "
             "over ranks itself")
    accelerator = str(trainer.get("accelerator", "auto"))
    _require(on_driver or accelerator not in ("gpu", "cuda") or torch.cuda.is_available(),
             f"trainer.accelerator={accelerator} but no GPU is visible; use trainer=default "
             "(auto) or trainer=cpu")
    accel.check(trainer)
    from hydra.core.hydra_config import HydraConfig

    from memorization.base.launch import check_launcher

    hydra_cfg = cfg.get("hydra") or (HydraConfig.get() if HydraConfig.initialized() else None)
    if hydra_cfg is not None:  # a launcher that cannot run this job: one line, before any
        check_launcher(hydra_cfg, trainer)
    ckpt = cfg.get("ckpt_path")
    _require(ckpt is None or Path(str(ckpt)).is_file(),
             f"ckpt_path={ckpt} is not a file; point it at a checkpoint such as "
             "<run folder>/checkpoints/last.ckpt")
    every = ((cfg.get("callbacks") or {}).get("checkpoint") or {}).get("every_n_epochs", 1)
    check_number(every, "callbacks.checkpoint.every_n_epochs", integer=True, lo=1,
                 what=" (callbacks=no_checkpoint turns checkpoints off)")
    DivergenceGuard.checked_ratio(
        ((cfg.get("callbacks") or {}).get("divergence") or {}).get("max_ratio"))
    _check_layers(cfg)
    check_wandb(cfg)


def _check_layers(cfg: DictConfig) -> None:
    """Every layer pattern of the metrics and the relabel stage against the probe layers of the
    network the config builds (built here, on the CPU, without training), so that a pattern
    matching no layer fails before anything is written, not after the logger started."""
    wanted = []
    if cfg.get("metrics") is not None:
        from memorization.metrics.config import read_metrics_config

        suite = read_metrics_config(cfg.metrics)
        if suite.settings.enabled:
            wanted += [(f"metrics.{name}.layers", getattr(mcfg, "layers", None))
                       for name, (_, mcfg) in suite.entries.items() if mcfg.enabled]
    relabel = cfg.get("relabel") or {}
    if relabel.get("enabled"):
        wanted.append(("relabel.layers", relabel.get("layers")))
    wanted = [(key, list(p)) for key, p in wanted if p is not None]
    if not wanted:
        return
    import hydra

    from memorization.metrics.masc_probe import pick_layers

    with torch.random.fork_rng(devices=[]):  # the job's own draws stay those of its seed
        net = hydra.utils.instantiate(cfg.model, _convert_="all")
    probes = getattr(net, "probe_layers", None)
    if probes is None:
        return  # a network without probe layers: the metrics say so themselves
    names = [layer.name for layer in probes()]
    for key, patterns in wanted:
        pick_layers(names, patterns, key)


def composed_resolved(cfg, folder: str | os.PathLike) -> dict:
    """What a composed config (``hydra.compose``, before Hydra runs it) resolves to as the job
    in ``folder``: its ``${hydra:runtime.output_dir}`` is that folder; Hydra's own state is left
    as it was found."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    mine = copy.deepcopy(cfg)  # keeps Hydra's typed node, which HydraConfig requires
    with open_dict(mine):
        mine.hydra.runtime.output_dir = str(Path(folder).resolve())
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(mine)
    try:
        return resolved_dict(mine)
    finally:
        HydraConfig.instance().cfg = before


def check_noise(noise: DictConfig, shape: tuple[int, ...]) -> None:
    """The noise against the data: a type whose p is fixed, one that needs images."""
    corruption = get_corruption(noise.name, apply_to_test=bool(noise.get("apply_to_test")))
    _require(corruption.fixed_p is None or noise.p == corruption.fixed_p,
             f"noise={noise.name} is defined with p={corruption.fixed_p}, got noise.p={noise.p}; "
             "drop the noise.p override (or use noise=label_uniform for a fraction)")
    corruption.check_shape(tuple(shape))


def check_wandb(cfg: DictConfig) -> None:
    """W&B online needs a key here: without one, wandb.init waits on the network."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb") or {}
    mode = os.environ.get("WANDB_MODE") or str(wandb_cfg.get("mode", "offline"))
    _require(not wandb_cfg or mode != "online" or _wandb_key_available(),
             "logger.wandb.mode=online but no W&B API key is set here: run `wandb login` (or set "
             "WANDB_API_KEY), or use logger.wandb.mode=offline and `wandb sync` later")


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
