"""Entry point: ``python -m memorization.run [overrides]`` (Hydra; ``-m`` for a sweep).

Only composes: validate the config, then instantiate datamodule, model, callbacks, loggers and
trainer from it, and fit. Everything else lives in the pieces it composes.
"""

from __future__ import annotations

import errno
import json
import os
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
    resolved_dict,
    validate,
)
from memorization.errors import (  # noqa: E402
    ConfigError,
    TrainingDiverged,
    first_line,
    root_error,
)
from memorization.io import say  # noqa: E402
from memorization.jobs import (  # noqa: E402
    FIT,
    LAST,
    check_checkpoint,
    clear_markers,
    config_changes,
    failure,
    job_state,
    mark_failed,
)
from memorization.launch import apply_threads, job_threads, missing_plugin  # noqa: E402
from memorization.replicas.config import replica_count, trainer_options  # noqa: E402


def _conf_dir() -> str:
    """conf/ beside the package in a checkout (or editable install), inside it in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/config.yaml next to {here}; reinstall the package")


def _sweep_group() -> str | None:
    """W&B group of a job: its sweep folder in a multirun, none for a single run."""
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    return OmegaConf.select(hc, "sweep.dir", default=None, throw_on_missing=False)


def _job_name() -> str:
    """W&B name of a job: in a sweep, its values of the swept keys (``noise.p=0.4,seed=2``);
    else its overrides (``noise.p=0.2``), or "default"."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        from memorization.report.data import override_items, sweep_overrides

        swept = set(sweep_overrides(Path(str(hc.sweep.dir))))
        task = [str(t) for t in hc.overrides.task]
        mine = [f"{key}={value}" for key, value, _ in override_items(task) if key in swept]
        if mine:
            return ",".join(mine)
    return OmegaConf.select(hc, "job.override_dirname", default=None, throw_on_missing=False) \
        or "default"


OmegaConf.register_new_resolver("mem.sweep_group", _sweep_group, replace=True)
OmegaConf.register_new_resolver("mem.job_name", _job_name, replace=True)


def _instantiate_all(section: DictConfig | None) -> list:
    return [hydra.utils.instantiate(c) for c in (section or {}).values() if c is not None]


def _output_dir() -> Path | None:
    if not HydraConfig.initialized():
        return None
    out = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
    return Path(out) if out else None


STAGE = "stage"  # _resume_point's answer for a job whose fit finished but not its stage


def _resume_point(out: Path, resolved: dict, cfg: DictConfig) -> str | None:
    """What a run in a used job folder does: "skip" a finished run, resume an unfinished one
    (its checkpoint's path), rerun the stage after a finished fit (STAGE), start a failed one
    over (None), after checking that the settings are those of the run in the folder."""
    state = job_state(out)
    if state == "new":
        return None
    changes = config_changes(out, resolved)
    if changes:
        more = f" and {len(changes) - 2} more" if len(changes) > 2 else ""
        raise ConfigError(f"{out} holds a run with other settings ({'; '.join(changes[:2])}"
                          f"{more}): resume=false starts it over there, or choose another "
                          "folder (hydra.run.dir, or hydra.sweep.dir for -m)")
    last = out / LAST
    if state == "finished":
        hint = ""
        done = json.loads((out / "metrics.json").read_text()).get("epochs")
        if last.is_file() and done is not None and cfg.trainer.max_epochs > done:
            hint = f"; ckpt_path={last} trains it on to trainer.max_epochs={cfg.trainer.max_epochs}"
        say(f"skip {out}: finished before (its metrics.json){hint}; resume=false runs it again")
        return "skip"
    if state == "fitted":  # the fit finished before, the stage after it did not
        if last.is_file():
            say(f"resuming {out}: its fit finished before; running its relabel stage again")
            return STAGE
        say(f"start over {out}: its fit finished but left no {LAST} for its relabel stage")
        return None
    if state == "failed":
        why, kind = failure(out)
        if last.is_file() and kind != TrainingDiverged.__name__:
            say(f"resuming {out} from its {LAST} (it failed before: {why})")
            return str(last)
        say(f"start over {out}: it failed before ({why})")
        return None
    say(f"resuming {out} from its {LAST}")
    return str(last)


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
        ckpt = _resume_point(out, resolved, cfg)
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
    if relabel is not None:
        from memorization.relabel.masc_layers import probe_names

        probe_names(net, relabel.layers)  # a pattern matching no layer fails before training
        if relabel.control:  # the untrained network, for the random-initialization control
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


def _config_dirs(args: list[str]) -> list[Path] | None:
    """Where Hydra looks for configs with these arguments: conf/, then the folders added by
    ``--config-dir``/``-cd`` and ``hydra.searchpath=[...]`` (file:// or pkg:// entries); None
    with ``--config-path``/``-cp``, which replaces conf/ (no check then: Hydra's own)."""
    if {"--config-path", "-cp"} & {a.partition("=")[0] for a in args}:
        return None
    dirs = [Path(_conf_dir())]
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            dirs.append(Path(value).expanduser().resolve())
        elif flag.lstrip("+") == "hydra.searchpath" and eq:
            dirs += [d for e in value.strip("[]").split(",") if (d := _search_dir(e))]
    return dirs


def _extra_dirs(args: list[str]) -> list[str]:
    return [str(d) for d in (_config_dirs(args) or [])[1:]]


def _search_dir(entry: str) -> Path | None:
    """The folder of one hydra.searchpath entry: file://DIR, pkg://package (or a bare DIR)."""
    import importlib.util

    entry = entry.strip().strip("'\"")
    scheme, sep, rest = entry.partition("://")
    if not sep:
        scheme, rest = "file", entry
    if scheme == "file" and rest:
        return Path(rest).expanduser().resolve()
    if scheme == "pkg":
        try:
            spec = importlib.util.find_spec(rest.replace("/", "."))
        except (ImportError, ValueError):
            return None
        places = list(spec.submodule_search_locations or []) if spec else []
        return Path(places[0]) if places else None
    return None


def _unknown_option(args: list[str]) -> str | None:
    """The first ``group=option`` override naming an option that no config folder of the run
    has (conf/, and those --config-dir and hydra.searchpath add), as a one-line error (Hydra's
    own message spans a dozen lines)."""
    dirs = _config_dirs(args)
    if dirs is None:
        return None
    from hydra.core.config_store import ConfigStore

    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or arg.startswith("-") or "." in key or key.startswith("hydra"):
            continue
        groups = [d / key for d in dirs if (d / key).is_dir()]
        if not groups or "(" in value:  # sweep functions such as range(...) pass
            continue
        stored = ConfigStore.instance().repo.get(key, {})  # options registered in Python
        known = sorted({p.stem for g in groups for p in g.glob("*.yaml")}
                       | {n.removesuffix(".yaml") for n, v in stored.items()
                          if not isinstance(v, dict)})
        for option in value.strip("[]").split(","):
            option = option.strip()
            if option and option != "null" and option not in known:
                return (f"{key}={option} is not an option of '{key}'; choose one of: "
                        f"{', '.join(known)}")
    return None


@hydra.main(version_base="1.3", config_path=_conf_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except Exception as exc:  # one line on the screen; the traceback in the job's FAILED
        err = root_error(exc)
        line = first_line(err)
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC,
                                                      errno.EDQUOT):
            line += " (is the output folder writable, with free space? hydra.run.dir=...)"
        out = _output_dir()
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


def _checked(args: list[str]) -> str | None:
    """The one-line error a run with these overrides would give before it starts: an unknown
    option, an output folder that cannot be made, with --cfg any bad value."""
    err = _unknown_option(args)
    if err or {"--help", "-h", "--hydra-help"} & set(args):
        return err
    from memorization.help import compose_first_job

    try:
        cfg = compose_first_job(Path(_conf_dir()), args, search=_extra_dirs(args))
    except Exception as exc:  # a value of the wrong type: one line; else Hydra's own message
        err = root_error(exc)
        return str(err) if isinstance(err, ConfigError) else None
    sweep = bool({"-m", "--multirun"} & set(args))
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    try:
        out = Path(str(OmegaConf.select(cfg, key)))
    except Exception:
        out = None
    if out is not None:
        place = next((p for p in [out, *out.parents] if p.exists()), None)
        if place is not None and not (place.is_dir() and os.access(place, os.W_OK)):
            return (f"the output folder {out} cannot be made there ({place} is not a writable "
                    f"folder); choose another with {key}=...")
    if {"--cfg", "-c"} & set(args):
        try:
            validate(cfg)
        except Exception as exc:
            return first_line(root_error(exc))
    return None


def own_wandb_service() -> None:
    """Forget a W&B service inherited from the process that started this one (wandb exports
    WANDB_SERVICE so that children share a parent's service). A job killed with kill -9 leaves
    its run registered in that shared service, which outlives it, and the rerun that resumes
    the run's id is refused ("run ID ... is in use"); a service of the job's own ends with it."""
    os.environ.pop("WANDB_SERVICE", None)


def main() -> None:
    own_wandb_service()
    args = sys.argv[1:]
    err = _checked(args) or missing_plugin(args)
    if not err and {"--help", "-h"} & set(args):  # every group and top-level key
        from memorization.help import format_help

        try:
            print(format_help(Path(_conf_dir()), args, _extra_dirs(args)))
            return
        except Exception as e:  # an override Hydra cannot compose: one line, as for a run
            err = str(e).strip().splitlines()[0]
    if err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    started = time.time()
    try:
        _hydra_main()
    except SystemExit as stop:  # the launcher gave up (a job's process died): what is where
        from memorization.report import callback

        where = callback.SWEEP_DIR
        if stop.code not in (0, None) and where is not None and where.is_dir():
            print(f"the sweep stopped early; "
                  f"{callback.format_status(callback.sweep_status(where, started))}"
                  "\nthe same command again resumes it", file=sys.stderr)
        raise
    from memorization.report.callback import SWEEP_FAILURES

    if SWEEP_FAILURES:  # a sweep with a failed job ends non-zero (the jobs all ran)
        sys.exit(1)


if __name__ == "__main__":
    main()
