"""Helpers of the studies' tests (memorization.sensitivity, memorization.easy_hard)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from memorization.jobs.catalog import compose
from tests.conftest import CONF, ROOT


def study_presets(key: str) -> list[str]:
    """The presets in conf/experiment/ that set the study's node ``key``."""
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")
                  if any(line.startswith(f"{key}:") for line in p.read_text().splitlines()))


def compose_study(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The config ``python -m memorization.<name> <overrides>`` would get, Hydra's runtime set."""
    cfg = compose(name, overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_study(name: str, args: list[str], timeout: int = 300):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", f"memorization.{name}", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def noise_sweep(name: str, args: list[str], sweep: Path) -> list[dict]:
    """``python -m memorization.<name> -m noise=none,random_labels ARGS`` with W&B offline
    (the tests' WANDB_MODE) into ``sweep``; its two jobs' metrics.json, once it succeeded."""
    with_wandb = [a for a in args if a != "logger=none"]
    res = run_study(name, ["-m", "noise=none,random_labels", *with_wandb,
                           f"hydra.sweep.dir={sweep}"])
    assert res.returncode == 0, res.stderr[-2000:]
    return [json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1")]
