"""The training engine: one Lightning assembly for every job that ``memorization.run`` trains.

A single run (:func:`train_single`) and a stacked job (``memorization/replicas/job.py``) are
both one ``Trainer.fit`` of a LightningModule (``module.Classifier`` or
``replicas.module.StackedClassifier``) built here from the same pieces, so seeding, the
config's callbacks (stop rule, checkpoints, divergence guard, layer metrics, progress bar), its
loggers and W&B, the Trainer's options and the end of a W&B run are written once:

- :func:`seed` seeds Python, NumPy and torch (and the dataloader workers) from a run's seed;
- :func:`config_callbacks` and :func:`config_loggers` instantiate the config's ``callbacks``
  and ``logger``/``history`` nodes (a stacked job gives each replica its own folder and W&B
  run through :func:`config_loggers`' arguments);
- :func:`make_trainer` builds the Trainer from ``cfg.trainer`` (without ``replicas``, ours);
- :func:`finish_wandb` closes the W&B run so the next job of a multirun starts its own.

Why Lightning for jobs and ``loop.py`` for the networks trained inside one: a job needs
checkpoints, resume, DDP, loggers and callbacks, which the Trainer gives at a per-step cost of
a few percent (docs/performance.md); the relabel retrain and the studies train many small
networks, or one briefly, inside a job, where a Trainer's set-up per network costs more than
the network's training (measured in ``benchmarks/engine.py``; docs/performance.md).

Layer: engine; imports parts (data, models, optim, replicas.config), the base and the engine's
module, callbacks, jobs and relabel, never the config or an entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.callbacks import ProgressBar as ProgressBarBase
from omegaconf import DictConfig, OmegaConf

from memorization.callbacks import LogConfig
from memorization.jobs import LAST, check_checkpoint
from memorization.replicas.config import trainer_options

# Denormals make the deep MLPs twice as slow on x86 CPUs after a few epochs.
torch.set_flush_denormal(True)


def seed(value: int) -> None:
    """Python, NumPy and torch from ``value``, and the dataloader workers after them."""
    L.seed_everything(value, workers=True, verbose=False)


def config_callbacks(cfg: DictConfig) -> list:
    """The config's ``callbacks`` nodes, instantiated in order (a null entry turned off);
    the progress bar left out when ``trainer.enable_progress_bar=false`` (Lightning refuses a
    bar it cannot show)."""
    out = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()
           if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):
        out = [c for c in out if not isinstance(c, ProgressBarBase)]
    return out


def config_loggers(cfg: DictConfig, folder: Path | None = None,
                   wandb: dict | None = None) -> list:
    """The config's loggers and its history logger, instantiated; ``folder``: where each one
    with a ``save_dir`` writes instead of its own; ``wandb``: more arguments of the W&B
    logger (a stacked job's replica: its own name, group and run; a group the config gives
    the logger is kept)."""
    out = []
    for c in (cfg.get("logger") or {}).values():
        if c is None:
            continue
        kw: dict = {"save_dir": str(folder)} if folder is not None and "save_dir" in c else {}
        if wandb and str(c.get("_target_", "")).endswith("WandbLogger"):
            kw |= {**wandb, **({"group": c.group} if c.get("group") else {})}
        out.append(hydra.utils.instantiate(c, **kw))
    if cfg.get("history") is not None:
        kw = {"save_dir": str(folder)} if folder is not None else {}
        out.append(hydra.utils.instantiate(cfg.history, **kw))
    return out


def make_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The Trainer of ``cfg.trainer``. Without a Checkpoint callback (callbacks=no_checkpoint)
    there is no checkpoint at all, not Lightning's own either."""
    saves = any(isinstance(c, Checkpoint) for c in callbacks)
    return hydra.utils.instantiate(trainer_options(cfg), callbacks=callbacks,
                                   logger=loggers or False,
                                   **({} if saves else {"enable_checkpointing": False}))


def finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def build_module(cfg: DictConfig, net: torch.nn.Module) -> L.LightningModule:
    """The config's LightningModule (``cfg.module``) around ``net``. The optimizer stays plain
    options: Hydra would build its _target_ here, before the parameters exist."""
    options = OmegaConf.to_container(cfg.module, resolve=True)
    return hydra.utils.get_class(options.pop("_target_"))(
        net=net, optim=OmegaConf.to_container(cfg.optim, resolve=True), **options)


def train_single(cfg: DictConfig, resolved: dict, out: Path | None, ckpt: str | None,
                 fitted: dict | None = None, relabel=None) -> dict | None:
    """One run: the data module, network and module of the config, its callbacks and loggers,
    one fit (from ``ckpt`` when given), then the relabel stage (``relabel``: its config when
    enabled). ``fitted``: the fit's report of an earlier attempt whose fit finished (only the
    stage runs again). Returns the run's summary (what metrics.json holds)."""
    if cfg.get("seed") is not None:  # `if cfg.get("seed")` would skip seed 0
        seed(cfg.seed)
    elif fitted is not None:  # the same initial weights as the attempt that fitted
        torch.manual_seed(fitted["torch_seed"])
    datamodule = hydra.utils.instantiate(cfg.data, noise=cfg.noise, _convert_="all")
    net = hydra.utils.instantiate(cfg.model, _convert_="all")
    # control: the untrained network, for the relabel stage's random-initialization control
    init_state = ({k: v.detach().clone() for k, v in net.state_dict().items()}
                  if relabel is not None and relabel.control else None)
    module = build_module(cfg, net)
    if ckpt is not None:
        check_checkpoint(ckpt, module, cfg.trainer.get("max_epochs"))
    # logged once the data is set up, so a data error fails before any logger starts a run
    callbacks = [*config_callbacks(cfg), LogConfig(resolved)]
    trainer = make_trainer(cfg, callbacks, config_loggers(cfg))
    report = next((c for c in callbacks if hasattr(c, "summary")), None)
    if relabel is not None and report is not None:
        report.stage_pending = True  # metrics.json only once the stage is done
    if fitted is None:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    summary = fitted or (report.summary if report is not None else None)
    if (relabel is not None and report is not None and summary is not None
            and not summary.get("interrupted") and trainer.is_global_zero):
        from memorization.relabel.job import load_trained, run_stage

        if fitted is not None:
            check_checkpoint(out / LAST, module)
            load_trained(module, out / LAST)
        run_seed = cfg.seed if cfg.get("seed") is not None else summary["torch_seed"]
        run_stage(relabel, trainer=trainer, module=module, dm=datamodule, report=report,
                  init_state=init_state, seed=run_seed, summary=fitted)
    return report.summary if report is not None else None
