"""What the stand-alone studies (``python -m memorization.sensitivity``, ``python -m
memorization.easy_hard``, ``python -m memorization.scores``) share: their checks, their data and
network, their outputs, and the figure of a whole sweep.

The studies compose the same groups as ``python -m memorization.run`` (data, noise, model, optim)
from their own primary configs (conf/sensitivity.yaml, conf/easy_hard.yaml), run their jobs by
the same rules as memorization.run's (:func:`study_job`), and train their many small networks
on the DataModule's tensors with the engine's ``fit_network`` (memorization/engine/trainer.py); the
sensitivity study's unrolled SGD keeps its own steps (gradients.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from memorization.base.errors import ConfigError, check_number
from memorization.base.io import atomic_path, say
from memorization.config.studies import STUDY_KEYS  # noqa: F401  (re-exported)


def device_of(name: str, key: str = "device") -> torch.device:
    """``auto``: the first GPU when there is one, else the CPU; or a torch device name this
    machine has (else one line naming ``key``, before the job starts)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}={name} is no torch device; use auto, cpu or cuda") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (
            device.index is not None and device.index >= torch.cuda.device_count())):
        raise ConfigError(f"{key}={name} but this machine sees "
                          f"{torch.cuda.device_count()} CUDA GPU(s); use {key}=auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}={name} but MPS is not available here; use {key}=auto or cpu")
    return device


def validate_study(cfg: DictConfig, key: str):
    """The checks of ``python -m memorization.run`` that apply to a study (the groups' own
    ranges, the noise against the data), then the study's node; returns the study's
    dataclass. The model's in_shape and num_classes are set by the study (downscaled images,
    one class per example), so they are not checked against the data here."""
    from memorization.jobs.validate import build, check_noise, check_wandb

    for group in ("data", "noise", "model", "optim", key):
        if cfg.get(group) is None:
            raise ConfigError(f"the config has no '{group}' section; pick one with "
                              f"{group}=<option> or restore conf/{key}.yaml")
    check_number(cfg.get("seed"), "seed", integer=True, lo=0)
    check_number(cfg.get("threads"), "threads", integer=True, lo=1, allow_none=True)
    for group in ("data", "noise", "model"):
        build(cfg, group)
    optim = build(cfg, "optim")
    optim.build([torch.zeros(1, requires_grad=True)])
    check_noise(cfg.noise, cfg.data.shape)
    check_wandb(cfg)
    node = build(cfg, key)
    if isinstance(getattr(node, "device", None), str):
        device_of(node.device, f"{key}.device")
    return node


def load_examples(cfg: DictConfig, split: str, image_size: int | None,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """One split of the DataModule (corrupted and normalized there, as in a normal job) as
    tensors on ``device``: ``x``, ``y`` (training labels), ``y_true``, ``corrupted``, ``index``
    (the position in the DataModule's split), ``num_classes`` (a 0-d tensor).

    The training split is ``data.train_size`` of the training examples (Arpit et al.'s 1,000),
    drawn from ``data.train_seed`` before the corruption, so a fraction ``noise.p`` of exactly
    these examples is corrupted (selected by ``noise.seed`` as in a normal job), and the
    normalization uses their clean statistics.
    ``image_size``: images larger than that are downscaled to it by averaging pixel areas
    (Arpit et al.'s "downscaled 14x14" MNIST); smaller ones are kept as they are."""
    dm = hydra.utils.instantiate(cfg.data, noise=cfg.noise, _convert_="all")
    dm.setup("fit")
    out = dict(dm.splits[split].tensors)
    if "y_true" not in out:  # the test split has no corruption record
        out["y_true"] = out["y"]
        out["corrupted"] = torch.zeros_like(out["y"], dtype=torch.bool)
        out["index"] = torch.arange(len(out["y"]), device=out["y"].device)
    x = out["x"]
    if image_size is not None and x.dim() == 4 and max(x.shape[-2:]) > image_size:
        size = (min(image_size, x.shape[-2]), min(image_size, x.shape[-1]))
        x = F.interpolate(x, size=size, mode="area")  # averages: linear, so after normalizing
    out["x"] = x.float()
    out = {k: v.to(device) for k, v in out.items()}
    out["num_classes"] = torch.tensor(dm.cfg.num_classes)
    return out


def build_net(cfg: DictConfig, in_shape, num_classes: int, device: torch.device,
              seed: int | None = None) -> torch.nn.Module:
    """The configured model for inputs of ``in_shape`` and ``num_classes`` outputs, its
    weights drawn from ``seed`` (the global generator is reseeded: the studies are one
    process that trains its networks one after the other)."""
    if seed is not None:
        torch.manual_seed(seed)
    net = hydra.utils.instantiate(cfg.model, in_shape=list(in_shape), num_classes=num_classes,
                                  _convert_="all")
    return net.to(device)


def output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def apply_job_threads(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from memorization.base.launch import apply_threads, job_threads

    if HydraConfig.initialized():
        apply_threads(job_threads(HydraConfig.get(), cfg.get("threads")))


def write_csv(path: Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_figure(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def new_figure(cols: int = 1, width: float = 5.5, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height))  # no pyplot: no global state, no display
    return fig, fig.subplots(1, cols, squeeze=False)[0]


def job_label(folder: Path) -> str:
    """A job's overrides as a short label (``noise=gaussian,noise.p=1``), else its folder."""
    from memorization.base.overrides import job_overrides

    items = [o for o in job_overrides(folder) if not o.startswith(("hydra.", "experiment="))]
    return ",".join(items) or folder.name


def finished_jobs(sweep_dir: Path, marker: str) -> list[Path]:
    """The job folders under ``sweep_dir`` holding ``marker`` (a study's file) and a
    metrics.json (written last: the job finished), in job order."""
    from memorization.jobs.folder import sweep_job_folders

    return [p for p in sweep_job_folders(sweep_dir)
            if (p / marker).is_file() and (p / "metrics.json").is_file()]


def study_job(run: Callable[[DictConfig], dict], cfg: DictConfig) -> dict:
    """A study's job in its folder, by the rules of memorization.run's jobs
    (memorization/jobs/folder.py): a folder holding this job's finished result (metrics.json, the
    same settings in config_resolved.yaml) is skipped unless ``resume=false``; a folder holding
    a run with other settings is refused; anything else starts over (a study keeps no
    checkpoint), its old result and failure removed first."""
    import json

    from memorization.jobs.folder import resolved_dict, resume_point, start_fresh

    out, resolved = output_dir(), resolved_dict(cfg)
    if cfg.get("resume", True) and resume_point(out, resolved, 0) == "skip":
        return json.loads((out / "metrics.json").read_text())
    start_fresh(out, resolved)
    return run(cfg)


def log_to_wandb(cfg: DictConfig, out: Path, axis: str, rows: list[dict],
                 figures: list[Path], summary: dict) -> None:
    """The job's W&B run, when the config has ``logger.wandb`` (offline unless set otherwise,
    as for memorization.run; ``logger=none``: no run): ``rows`` as its history against
    ``axis`` (``step``, ``epoch`` or ``rank``), the figures as images, ``summary`` as its
    summary, the resolved config; named and grouped as the training jobs are. Logged at the end
    of the job, from what it wrote."""
    w = (cfg.get("logger") or {}).get("wandb")
    if not w:
        return
    import os

    import wandb
    from omegaconf import OmegaConf

    opts = OmegaConf.to_container(w, resolve=True)
    config = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
              for k, v in cfg.items() if k != "hydra"}
    run = wandb.init(project=opts.get("project"), group=opts.get("group") or None,
                     name=opts.get("name") or None, tags=opts.get("tags") or None,
                     mode=os.environ.get("WANDB_MODE") or opts.get("mode", "offline"),
                     dir=str(out), settings=wandb.Settings(silent=True))
    try:
        run.config.update(config)
        run.define_metric(axis)
        run.define_metric("*", step_metric=axis)
        for row in rows:
            run.log({k: v for k, v in row.items() if v is not None})
        run.log({f"figures/{path.stem}": wandb.Image(str(path))
                 for path in figures if path.is_file()})
        run.summary.update({k: v for k, v in summary.items() if v is not None})
    finally:
        run.finish()
    say(f"W&B: {opts.get('mode', 'offline')} run {run.id} in {out / 'wandb'}")


def finite(value: float) -> float | None:
    """A JSON-safe number: None for NaN or infinity."""
    return value if math.isfinite(value) else None
