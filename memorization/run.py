"""Entry point: ``python -m memorization.run [overrides]`` (Hydra; ``-m`` for a sweep).

Only composes: validate the config, then instantiate datamodule, model, callbacks, loggers and
trainer from it, and fit. Everything else lives in the pieces it composes.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import torch

# Denormals make the deep MLPs twice as slow on x86 CPUs after a few epochs.
torch.set_flush_denormal(True)
# Lightning 2.6 with torch 2.13 warns this on every fit; it is harmless.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

import hydra  # noqa: E402
import lightning as L  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from lightning.pytorch.callbacks import Checkpoint  # noqa: E402
from lightning.pytorch.callbacks import ProgressBar as ProgressBarBase  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from memorization.callbacks import LogConfig  # noqa: E402
from memorization.config import (  # noqa: E402  (and registers the schemas)
    build,
    composed_resolved,
    validate,
)
from memorization.entry import (  # noqa: E402
    conf_dir,
    error_line,
    extra_dirs,
    job_held,
    started,
    unknown_option,
)
from memorization.errors import (  # noqa: E402
    ConfigError,
    Refusal,
    TrainingDiverged,
    first_line,
    root_error,
)
from memorization.jobs import (  # noqa: E402
    FIT,
    LAST,
    STAGE,
    check_checkpoint,
    clear_markers,
    job_state,
    mark_failed,
    resolved_dict,
    resume_point,
    settings_refusal,
)
from memorization.launch import (  # noqa: E402
    apply_threads,
    job_threads,
    missing_plugin,
)
from memorization.replicas.config import replica_count, trainer_options  # noqa: E402


def _instantiate_all(section: DictConfig | None) -> list:
    return [hydra.utils.instantiate(c) for c in (section or {}).values() if c is not None]


def _output_dir() -> Path | None:
    if not HydraConfig.initialized():
        return None
    out = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
    return Path(out) if out else None


def train(cfg: DictConfig) -> dict | None:
    """Fit one job; returns the run summary (what metrics.json holds). A job folder that holds
    a finished run is skipped, one with a checkpoint of an unfinished run resumes from it
    (``resume=false``: start over); see memorization/jobs.py."""
    validate(cfg)
    if HydraConfig.initialized():  # the job's share of the cores under a parallel launcher
        apply_threads(job_threads(HydraConfig.get(), cfg.get("threads"), trainer_cfg=cfg.trainer))
    out, ckpt = _output_dir(), cfg.get("ckpt_path")
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
    if replica_count(cfg) > 1:  # stacked seeds: memorization/replicas/
        from memorization.replicas.job import train_replicas

        try:
            return train_replicas(cfg, resolved, out, ckpt)
        finally:
            _finish_wandb()
    if cfg.get("seed") is not None:  # `if cfg.get("seed")` would skip seed 0
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    elif fitted is not None:  # the same initial weights as the attempt that fitted
        torch.manual_seed(fitted["torch_seed"])

    datamodule = hydra.utils.instantiate(cfg.data, noise=cfg.noise, _convert_="all")
    net = hydra.utils.instantiate(cfg.model, _convert_="all")
    relabel = build(cfg, "relabel")
    relabel = relabel if relabel is not None and relabel.enabled else None
    init_state = None
    # relabel's layer patterns were checked by validate(); control: the untrained network, for
    # the random-initialization control
    if relabel is not None and relabel.control:
        init_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    # optim as plain options: Hydra would build its _target_ here, before the parameters exist
    options = OmegaConf.to_container(cfg.module, resolve=True)
    module = hydra.utils.get_class(options.pop("_target_"))(
        net=net, optim=OmegaConf.to_container(cfg.optim, resolve=True), **options)
    if ckpt is not None:
        check_checkpoint(ckpt, module, cfg.trainer.get("max_epochs"))
    # logged once the data is set up, so a data error fails before any logger starts a run
    callbacks = [*_instantiate_all(cfg.get("callbacks")), LogConfig(resolved)]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it cannot show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBarBase)]
    loggers = _instantiate_all(cfg.get("logger"))
    if cfg.get("history") is not None:
        loggers.append(hydra.utils.instantiate(cfg.history))
    # no Checkpoint callback (callbacks=no_checkpoint): no checkpoint at all, not Lightning's own
    saves = any(isinstance(c, Checkpoint) for c in callbacks)
    trainer = hydra.utils.instantiate(trainer_options(cfg), callbacks=callbacks,
                                      logger=loggers or False,
                                      **({} if saves else {"enable_checkpointing": False}))
    report = next((c for c in callbacks if hasattr(c, "summary")), None)
    if relabel is not None and report is not None:
        report.stage_pending = True  # metrics.json only once the stage is done
    try:
        if fitted is None:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        summary = fitted or (report.summary if report is not None else None)
        if (relabel is not None and report is not None and summary is not None
                and not summary.get("interrupted") and trainer.is_global_zero):
            from memorization.relabel.job import load_trained, run_stage

            if fitted is not None:
                check_checkpoint(out / LAST, module)
                load_trained(module, out / LAST)
            seed = cfg.seed if cfg.get("seed") is not None else summary["torch_seed"]
            run_stage(relabel, trainer=trainer, module=module, dm=datamodule, report=report,
                      init_state=init_state, seed=seed, summary=fitted)
    finally:
        _finish_wandb()
    return report.summary if report is not None else None


def _finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    out = _output_dir()
    try:
        with job_held(cfg, out):
            _job(cfg, out)
    except Refusal as err:  # another process holds the folder, or another run is in it
        print(f"error: {first_line(err)}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            sys.exit(2)


def _job(cfg: DictConfig, out: Path | None) -> None:
    try:
        train(cfg)
    except Exception as exc:  # one line on the screen; the traceback in the job's FAILED
        err = root_error(exc)
        if isinstance(err, Refusal):
            raise err from None  # nothing is written into a folder that is not this run's
        line = error_line(err)
        where = ""
        if out is not None:
            try:
                mark_failed(out, exc, err)
                where = "" if isinstance(err, ConfigError | TrainingDiverged) else \
                    f" (traceback in {out / 'FAILED'})"
            except OSError:
                pass
        print(f"error: {line}{where}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return  # the other jobs go on; the end of the sweep counts this one
        sys.exit(2 if isinstance(err, ConfigError) else 1)


def _check_folder(cfg: DictConfig, out: Path) -> None:
    """A single run's folder that holds a run with other settings is refused before Hydra
    writes into it (its .hydra/ files would no longer describe the run there)."""
    if (cfg.get("resume", True) and cfg.get("ckpt_path") is None
            and job_state(out) != "new"):
        settings_refusal(out, composed_resolved(cfg, out))


def main() -> None:
    args = sys.argv[1:]
    if {"--help", "-h"} & set(args):  # every group and top-level key
        from memorization.help import format_help

        err = unknown_option(args) or missing_plugin(args)
        if not err:
            try:
                print(format_help(Path(conf_dir()), args, extra_dirs(args)))
                return
            except Exception as e:  # an override Hydra cannot compose: one line, as for a run
                err = str(e).strip().splitlines()[0]
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    started_at = time.time()
    with started("config", validate=validate, check_folder=_check_folder):
        try:
            _hydra_main()
        except SystemExit as stop:  # the launcher gave up (a job's process died): what is where
            from memorization import sweep

            where = sweep.SWEEP_DIR
            status = sweep.sweep_status(where, started_at) \
                if stop.code not in (0, None) and where is not None and where.is_dir() else {}
            if any(status.values()):  # not a refusal before the first job
                print(f"the sweep stopped early; {sweep.format_status(status)}"
                      "\nthe same command again resumes it", file=sys.stderr)
            raise
    from memorization.sweep import SWEEP_FAILURES

    if SWEEP_FAILURES:  # a sweep with a failed job ends non-zero (the jobs all ran)
        sys.exit(1)


if __name__ == "__main__":
    main()
