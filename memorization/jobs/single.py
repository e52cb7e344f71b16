"""A single run on the engine (memorization/engine/trainer.py): the config's data module, network
and LightningModule, its callbacks and loggers, one ``Trainer.fit``, then the relabel stage. The
stacked form of the same is memorization/jobs/stacked.py.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from memorization.base.accel import full_precision
from memorization.engine.callbacks import LogConfig
from memorization.engine.trainer import (
    build_module,
    config_callbacks,
    config_loggers,
    make_trainer,
    seed,
)
from memorization.jobs.folder import LAST, check_checkpoint


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
        check_checkpoint(ckpt, module, cfg.trainer.get("max_epochs"),
                         given=cfg.get("ckpt_path") is not None)
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
        from memorization.jobs.relabel.job import load_trained, run_stage

        if fitted is not None:
            check_checkpoint(out / LAST, module, given=False)
            load_trained(module, out / LAST)
        run_seed = cfg.seed if cfg.get("seed") is not None else summary["torch_seed"]
        with full_precision():  # the subspaces in float32/64 whatever the steps ran in
            run_stage(relabel, trainer=trainer, module=module, dm=datamodule, report=report,
                      init_state=init_state, seed=run_seed, summary=fitted)
    return report.summary if report is not None else None
