"""Stacked seeds: ``trainer.replicas=S`` trains S runs of one config at once, in one process.

The replicas differ by the seeds ``replicas.vary`` lists (the training seed by default: initial
weights and batch order; ``noise.seed`` for a corruption each). Each is reported as its own run
in ``<job>/replicas/<k>/`` (config, corruption record, history, W&B run, metrics.json, final
weights) and is a row of the sweep report; replica k equals the single run with its seeds.

- memorization/config/replicas.py: the ``replicas`` node, replica k's config, what cannot be
  stacked;
- memorization/engine/stacked_data.py: the replicas' data modules behind one, batches of every
  replica at once;
- memorization/engine/stacked.py: the LightningModule over S networks (loop or vmap),
  per-replica stop;
- stacked_callbacks.py: per-replica stop rule, epoch-end metrics, loggers, folders and summary;
- this module: the job, composed from those.

Called by the entry point once the job folder's state is
settled (skip, resume or start over apply to the whole job).
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from memorization.base.io import say
from memorization.config.replicas import check_net, replica_cfg, replica_count, replicas_config
from memorization.engine.callbacks import LogConfig, RunReport, StopAtTrainAccuracy
from memorization.engine.stacked_data import StackedData
from memorization.engine.trainer import (
    build_module,
    config_callbacks,
    config_loggers,
    make_trainer,
    seed,
)
from memorization.jobs.folder import check_checkpoint, resolved_dict
from memorization.jobs.stacked_callbacks import Replicas, replica_folder
from memorization.metrics.callback import LayerMetrics


def _run_name(cfg: DictConfig, rcfg: DictConfig, vary: list[str]) -> str:
    """The job's W&B name (``noise.p=0.2``) with replica k's values of the varied keys, in
    place where the name has them (a swept seed) and appended otherwise."""
    base = str(OmegaConf.select(cfg, "logger.wandb.name", default=None) or "")
    items = [i.partition("=") for i in base.split(",")] if base and base != "default" else []
    mine = {key: str(OmegaConf.select(rcfg, key)) for key in vary}
    out = [f"{k}={mine.pop(k) if k in mine else v}" if eq else k for k, eq, v in items]
    return ",".join(out + [f"{k}={v}" for k, v in mine.items()])


def _own_folder(resolved: dict, job: Path, folder: Path) -> dict:
    """Replica k's resolved config with its loggers writing where they do: its folder."""
    for node in [resolved.get("history"), *(resolved.get("logger") or {}).values()]:
        if isinstance(node, dict) and node.get("save_dir") == str(job):
            node["save_dir"] = str(folder)
    return resolved


def replica_loggers(cfg: DictConfig, rcfg: DictConfig, folder: Path, name: str,
                   group: str) -> list:
    """Replica k's loggers: the config's, writing into its folder; W&B a run of its own."""
    return config_loggers(cfg, folder, wandb={"name": name, "group": group,
                                              "reinit": "create_new"})


def train_replicas(cfg: DictConfig, resolved: dict, out: Path | None,
                   ckpt: str | None) -> dict | None:
    S, rc = replica_count(cfg), replicas_config(cfg)
    job = Path(out) if out is not None else Path(str(cfg.trainer.default_root_dir))
    rcfgs = [replica_cfg(cfg, k, rc.vary) for k in range(S)]
    dms, nets, seeds = [], [], []
    for rcfg in rcfgs:  # replica k's weights: those its single run would draw
        # seed=null: a seed of its own, drawn and recorded, so each replica can be rerun
        seeds.append(rcfg.seed if rcfg.get("seed") is not None
                     else int.from_bytes(os.urandom(4), "little") >> 1)
        seed(seeds[-1])
        dms.append(hydra.utils.instantiate(rcfg.data, noise=rcfg.noise, _convert_="all"))
        nets.append(hydra.utils.instantiate(rcfg.model, _convert_="all"))
    check_net(nets[0], S)
    module = build_module(cfg, nets, mode=rc.mode)
    if ckpt is not None:
        check_checkpoint(ckpt, module, cfg.trainer.get("max_epochs"),
                         given=cfg.get("ckpt_path") is not None)

    # the stop rule, the report and the layer metrics run per replica, in Replicas
    callbacks, stop, print_summary, with_metrics = [], None, True, False
    for cb in config_callbacks(cfg):
        if isinstance(cb, StopAtTrainAccuracy):
            stop = (cb.threshold, cb.monitor)
        elif isinstance(cb, RunReport):
            print_summary = cb.print_summary
        elif isinstance(cb, LayerMetrics):
            with_metrics = True
        else:
            callbacks.append(cb)
    metrics = [LayerMetrics(rcfg.metrics) if with_metrics else None for rcfg in rcfgs]
    group = str(OmegaConf.select(cfg, "logger.wandb.group", default=None) or job)
    loggers = [replica_loggers(cfg, rcfg, replica_folder(job, k), _run_name(cfg, rcfg, rc.vary),
                               group) for k, rcfg in enumerate(rcfgs)]
    previous = Path(ckpt).resolve().parent.parent if ckpt is not None else None
    replicas = Replicas(job, [_own_folder(resolved_dict(r), job, replica_folder(job, k))
                              for k, r in enumerate(rcfgs)], loggers, metrics, seeds,
                        stop=stop, print_summary=print_summary,
                        previous=previous if previous != job.resolve() else None)
    callbacks = [*callbacks, LogConfig(resolved), replicas]
    trainer = make_trainer(cfg, callbacks, [])  # each replica logs through Replicas
    if trainer.is_global_zero:
        say(f"stacked: {S} replicas in one process (replicas.vary={rc.vary}, "
            f"mode {rc.mode}); each reported in {job / 'replicas'}/<k>/")
    trainer.fit(module, datamodule=StackedData(dms), ckpt_path=ckpt, weights_only=True)
    return replicas.summary
