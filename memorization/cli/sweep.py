"""The start and the end of every ``-m`` sweep: a Hydra callback (conf/hydra/default.yaml).

At the start, every job's config is composed and checked before any job runs, so a bad value
in one job fails the whole sweep in one line instead of stopping it midway (or never running
the jobs after it). At the end: how many jobs finished, were skipped (finished by an earlier
run of the sweep), failed (with each one's folder and first error line) or did not finish,
then the sweep report, whose summary table is printed last. A sweep with a failed job exits
non-zero (:func:`exit_status`, which the entry points call with the sweep's folder: each job's
state is read from its folder, as the status line reports it)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def sweep_jobs(config: DictConfig, loader) -> list[list[str]]:
    """Each job's overrides, in job order, as Hydra's basic sweeper expands them (the
    sweeper's ``params`` first, then the command line's)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.get("sweeper", {}).get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(args)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_jobs(config: DictConfig, validate: Callable[[DictConfig], object] | None = None
               ) -> None:
    """Compose and validate every job of the sweep; exit 2 with one line at the first bad one.
    ``validate``: the entry point's check of a job (default: memorization.run's, with the
    devices left to each job)."""
    from hydra.core.global_hydra import GlobalHydra

    from memorization.base.errors import first_line, root_error
    from memorization.base.overrides import override_items, sweep_overrides

    loader = GlobalHydra.instance().config_loader()
    swept = set(sweep_overrides(Path(str(config.hydra.sweep.dir)))) or {
        k for k, _, sweep in override_items(list(config.hydra.overrides.task)) if sweep}
    if validate is None:
        from memorization.jobs.validate import validate as run_validate

        def validate(cfg):
            return run_validate(cfg, on_driver=True)
    try:
        jobs = sweep_jobs(config, loader)
    except Exception as exc:  # a sweep Hydra expands otherwise: each job checks itself
        print(f"note: the jobs were not checked before the sweep ({first_line(exc)}); each is "
              "checked when it starts", file=sys.stderr)
        return
    for num, overrides in enumerate(jobs):
        try:
            validate(loader.load_sweep_config(config, overrides))
        except Exception as exc:
            err = root_error(exc)
            mine = [f"{k}={v}" for k, v, _ in override_items(overrides) if k in swept]
            print(f"error: job {num} ({','.join(mine) or 'no overrides'}): "
                  f"{first_line(err)}; nothing was run", file=sys.stderr)
            sys.exit(2)


def sweep_status(sweep_dir: Path, since: float) -> dict[str, list[tuple[Path, str]]]:
    """The sweep's job folders by state: finished (in this launch), skipped (finished before
    ``since``), failed (with the first line of its FAILED), unfinished."""
    from memorization.cli.report.data import find_jobs
    from memorization.jobs.folder import failure, job_state

    status: dict[str, list[tuple[Path, str]]] = {
        k: [] for k in ("finished", "skipped", "failed", "unfinished")}
    for folder in find_jobs(sweep_dir) if sweep_dir.is_dir() else []:
        state = job_state(folder)
        if state == "finished":
            old = (folder / "metrics.json").stat().st_mtime < since
            status["skipped" if old else "finished"].append((folder, ""))
        elif state == "failed":
            status["failed"].append((folder, failure(folder)[0]))
        else:
            status["unfinished"].append((folder, ""))
    return status


def hydra_sweep(main: Callable[[], None], out: Path | None, sweep: bool) -> None:
    """Run an entry point's Hydra ``main``; with ``-m`` (``sweep``), ``out`` the sweep's
    folder: a sweep whose launcher gave up early (a job's process died) says what is where,
    and one that ran to its end with a failed job exits 1 (the jobs all ran)."""
    from memorization.cli.entry import interrupted, signal_of, sigterm_raises

    started = time.time()
    try:
        # a sweep's command: SIGTERM reaches it while a launcher waits on its workers too
        with sigterm_raises():
            main()
    except (KeyboardInterrupt, SystemExit) as stop:
        sig = signal_of(stop)
        if sig is not None:  # a signal is never a success, nor a traceback
            interrupted(sig, f"the sweep {out}" if sweep and out is not None else "the job")
        if isinstance(stop, KeyboardInterrupt):
            raise
        if sweep and out is not None and stop.code not in (0, None) and out.is_dir():
            status = sweep_status(out, started)
            if any(status.values()):  # not a refusal before the first job
                print(f"the sweep stopped early; {format_status(status)}"
                      "\nthe same command again resumes it", file=sys.stderr)
        raise
    if sweep and out is not None and out.is_dir() and sweep_status(out, started)["failed"]:
        sys.exit(1)


def format_status(status: dict[str, list[tuple[Path, str]]]) -> str:
    counts = ", ".join(f"{len(v)} {k}" for k, v in status.items() if v)
    lines = [f"sweep: {counts or 'no jobs'}"]
    lines += [f"  failed: {folder}: {line}" for folder, line in status["failed"]]
    return "\n".join(lines)


class SweepReport(Callback):
    """Checks every job before the sweep and reports at its end (module docstring).
    ``hydra.callbacks.report.enabled=false`` turns the report off (not the checks or the
    counts); ``figures=false`` writes the tables only; ``wandb=false`` keeps it out of W&B."""

    def __init__(self, enabled: bool = True, figures: bool = True, wandb: bool = True):
        self.enabled, self.figures, self.wandb = enabled, figures, wandb
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        check_jobs(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        status = sweep_status(sweep_dir, self.started)
        print(format_status(status), flush=True)
        if not self.enabled:
            return
        from memorization.cli.report import format_report, write_report

        try:
            report = write_report([sweep_dir], figures=self.figures, wandb=self.wandb)
        except Exception as e:  # the jobs are done and saved: say so, do not fail the sweep
            print(f"report: could not be written ({type(e).__name__}: {e}); retry with "
                  f"python -m memorization.report {sweep_dir}", file=sys.stderr)
            return
        # printed, not logged: Hydra's log file is still the last job's
        print(format_report(report), flush=True)
