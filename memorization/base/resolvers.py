"""The ``${mem.*}`` resolvers of the config's YAML: the W&B logger's group and name, and the Ray
launcher's GPUs per job. :func:`register` is called by ``setup_process``
(memorization/base/process.py), which every entry point and every job calls first, so a config
resolves the same in a job, a study, the help and the reproduction estimates.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


def sweep_group() -> str | None:
    """W&B group of a job: its sweep folder in a multirun, none for a single run."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return OmegaConf.select(hc, "sweep.dir", default=None, throw_on_missing=False)


def job_name() -> str:
    """W&B name of a job: in a sweep, its values of the swept keys (``noise.p=0.4,seed=2``);
    else its overrides (``noise.p=0.2``), or "default"."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        from memorization.base.overrides import override_items, sweep_overrides

        swept = set(sweep_overrides(Path(str(hc.sweep.dir))))
        task = [str(t) for t in hc.overrides.task]
        mine = [f"{key}={value}" for key, value, _ in override_items(task) if key in swept]
        if mine:
            return ",".join(mine)
    return OmegaConf.select(hc, "job.override_dirname", default=None, throw_on_missing=False) \
        or "default"


def gpus_if_cuda(n: int = 1) -> int:
    """ray.yaml's default GPUs per job: ``n`` on a machine that sees a GPU, else 0."""
    from memorization.base.launch import cuda_available

    return n if cuda_available() else 0


def register() -> None:
    OmegaConf.register_new_resolver("mem.sweep_group", sweep_group, replace=True)
    OmegaConf.register_new_resolver("mem.job_name", job_name, replace=True)
    OmegaConf.register_new_resolver("mem.gpus_if_cuda", gpus_if_cuda, replace=True)
