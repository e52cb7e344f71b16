"""One job of ``memorization.run``: check its config, settle its folder, then train it with the
engine (memorization/engine/trainer.py: one run, or S stacked replicas).

The folder's state decides what happens (memorization/jobs/folder.py): a folder holding a finished
run is skipped, one with a checkpoint of an unfinished run resumes from it, one whose fit
finished but not its relabel stage runs the stage again, and anything else starts over
(``resume=false``: always start over).
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from memorization.base.launch import apply_threads, job_threads
from memorization.config.replicas import replica_count
from memorization.engine.trainer import finish_wandb
from memorization.jobs.folder import FIT, STAGE, clear_markers, resolved_dict, resume_point
from memorization.jobs.single import train_single
from memorization.jobs.validate import build, validate


def hydra_output_dir() -> Path | None:
    """The running Hydra job's folder, or None outside Hydra."""
    if not HydraConfig.initialized():
        return None
    out = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
    return Path(out) if out else None


def train(cfg: DictConfig) -> dict | None:
    """Fit one job; returns the run summary (what metrics.json holds). See the module
    docstring for what a used folder does."""
    validate(cfg)
    if HydraConfig.initialized():  # the job's share of the cores under a parallel launcher
        apply_threads(job_threads(HydraConfig.get(), cfg.get("threads"), trainer_cfg=cfg.trainer))
    out, ckpt = hydra_output_dir(), cfg.get("ckpt_path")
    resolved = resolved_dict(cfg)
    fitted = None  # the fit's report, when an earlier attempt finished the fit
    if out is not None and ckpt is None and cfg.get("resume", True):
        ckpt = resume_point(out, resolved, int(cfg.trainer.max_epochs))
        if ckpt == "skip":
            return json.loads((out / "metrics.json").read_text())
        if ckpt == STAGE:
            fitted, ckpt = json.loads((out / FIT).read_text()), None
    if out is not None and ckpt is None and fitted is None:
        clear_markers(out)  # a fresh start: no old result, failure, checkpoint or W&B run id
    try:
        if replica_count(cfg) > 1:  # stacked seeds: memorization/jobs/
            from memorization.jobs.stacked import train_replicas

            return train_replicas(cfg, resolved, out, ckpt)
        # relabel's layer patterns were checked by validate()
        relabel = build(cfg, "relabel")
        return train_single(cfg, resolved, out, ckpt, fitted,
                            relabel if relabel is not None and relabel.enabled else None)
    finally:
        finish_wandb()
