"""Shared fixtures: compose the real config from conf/ with test overrides."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

# W&B has no server here: never let a test wait for one.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)
# W&B stages every logged table as an artifact in its data folder: keep that out of $HOME
_WANDB_HOME = Path(tempfile.mkdtemp(prefix="wandb-home-"))
atexit.register(shutil.rmtree, _WANDB_HOME, ignore_errors=True)
for _var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
    os.environ.setdefault(_var, str(_WANDB_HOME / _var.lower()))

from memorization.base.io import conf_dir as _conf_dir  # noqa: E402
from memorization.base.process import setup_process  # noqa: E402
from memorization.jobs.catalog import compose  # noqa: E402  (the groups' schemas too)

setup_process()  # what every entry point does first: resolvers, denormals, warning filters

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(_conf_dir())

# Small, fast settings for jobs run inside tests.
FAST = ["data=synthetic", "logger=none", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.accelerator=cpu"]


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The config `python -m memorization.run <overrides>` would get, with hydra's runtime set."""
    cfg = compose("config", overrides)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.override_dirname = ",".join(overrides)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str, fast: bool = True) -> DictConfig:
        return compose_config([*(FAST if fast else []), *overrides], output_dir=tmp_path)

    return make


def run_cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None):
    """Run `python -m memorization.run ARGS` as a subprocess; returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "memorization.run", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
