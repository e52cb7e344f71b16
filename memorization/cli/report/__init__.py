"""The sweep report: ``python -m memorization.report SWEEP_DIR [SWEEP_DIR …]``.

Reads every job folder of the sweep(s) (:mod:`memorization.cli.report.data`) and writes into
``SWEEP_DIR/report/`` (the first folder's, or ``--out``):

- ``history.csv``: every value of every job, one a row (job, status, swept parameters, epoch,
  split, layer, depth, metric, value);
- ``final.csv``: one row per job, its status, swept parameters and final values;
- ``summary.md``: the Markdown table of the finished jobs (also printed);
- ``relabel.md`` and ``relabel.csv``, when jobs ran the MASC relabel stage
  (memorization/jobs/relabel/): per job, test accuracies before and after retraining and of MASC's
  best layer, wrong training labels before and after relabeling (also printed);
- the figures (:mod:`memorization.cli.report.figures`), each a PNG, seeds aggregated as mean with
  a min–max band; a figure the sweep has no data for is skipped with one line.

A job whose files are damaged (a ``metrics.json`` that is no JSON object, a ``history.csv`` that
cannot be read or ends before the last epoch: :mod:`memorization.cli.report.data`) is marked
``damaged`` in ``final.csv``, left out of the tables and figures, and named in one warning line
per file; the command then exits 1 (``--lenient``: 0), after writing the report of the rest.

Jobs still running (or crashed) count as unfinished: their history so far is in
``history.csv``, but the summary table, ``final.csv``'s final values and the figures hold the
finished jobs only, so a report of a running sweep shows what has finished. Every file is
written atomically. When the jobs logged to W&B, the figures and tables are also logged to one
run named ``report`` in the sweep's W&B group (same project and mode), unless ``wandb=False``.

Layer: commands; imports anything below (it reads job folders through jobs and loggers).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from memorization.base.io import atomic_path, write_text_atomic
from memorization.cli.report.data import Sweep, load_sweep
from memorization.cli.report.tables import (
    finals,
    markdown,
    markdown_rows,
    relabel_rows,
    summary_rows,
    tidy,
)

__all__ = ["Report", "load_sweep", "write_report"]


@dataclass
class Report:
    sweep: Sweep
    out: Path
    table: str  # the Markdown summary, as printed
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    wandb_dir: Path | None = None  # the offline W&B run holding the report, if any


def _csv(df, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def write_report(dirs: list[str | Path], out: str | Path | None = None, figures: bool = True,
                 wandb: bool = True) -> Report:
    """Write the report of the sweep folder(s) ``dirs``; returns what was written."""
    sweep = load_sweep(dirs)
    out = Path(out) if out is not None else sweep.dirs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(sweep)
    report = Report(sweep, out, table)
    report.files += [_csv(tidy(sweep), out / "history.csv"), _csv(finals(sweep), out / "final.csv")]
    write_text_atomic(out / "summary.md", f"# {sweep.title}\n\n{table}")
    report.files.append(out / "summary.md")
    relabel = relabel_rows(sweep)
    if relabel:
        text = ("MASC relabel and retrain (test accuracies on the reported 80% of the test set; "
                "wrong labels: fractions of the training set)\n\n"
                + "\n".join(markdown_rows(relabel)) + "\n")
        write_text_atomic(out / "relabel.md", f"# {sweep.title}\n\n{text}")
        cols = [c for c in sweep.finished.columns if c.startswith("relabel/")]
        done = sweep.finished[sweep.finished["relabel/model/test_acc_before"].notna()]
        report.files += [out / "relabel.md", _csv(done[["job", *sweep.swept, *cols]],
                                                  out / "relabel.csv")]
        report.table += "\n" + text
    if figures:
        from memorization.cli.report.figures import write_figures

        done = sweep.finished
        history = sweep.history[sweep.history["job"].isin(done["job"])]
        pngs, report.skipped = write_figures(done, history, sweep.swept, sweep.title, out)
        report.files += pngs
    if wandb:
        try:
            _log_to_wandb(report)
        except Exception as e:  # the files are written: W&B is a copy
            report.skipped.append(f"W&B: the report was not logged ({type(e).__name__}: {e})")
    return report


def _wandb_settings(sweep: Sweep) -> dict | None:
    """project, group and mode of the jobs' W&B runs; None when they did not log to W&B."""
    for job in sweep.job_list:
        w = ((job.config.get("logger") or {}).get("wandb")) or {}
        if w:
            mode = os.environ.get("WANDB_MODE") or w.get("mode") or "offline"
            if mode == "disabled":
                return None
            return {"project": w.get("project"), "group": w.get("group"), "mode": mode}
    return None


def _log_to_wandb(report: Report) -> None:
    settings = _wandb_settings(report.sweep)
    if settings is None:
        return
    import wandb

    quiet = {} if {"WANDB_SILENT", "WANDB_QUIET"} & set(os.environ) else {
        "settings": wandb.Settings(silent=True)}
    run = wandb.init(**settings, name="report", job_type="report", dir=str(report.out),
                     reinit="finish_previous", **quiet)
    report.wandb_dir = Path(run.settings.sync_dir) if run.settings.mode == "offline" else None
    try:
        logs = {f"report/{p.stem}": wandb.Image(str(p)) for p in report.files
                if p.suffix == ".png"}
        for name, rows in (("summary", summary_rows(report.sweep)),
                           ("relabel", relabel_rows(report.sweep))):
            if rows:
                cols = list(rows[0])
                logs[f"report/{name}"] = wandb.Table(columns=cols,
                                                     data=[[r[c] for c in cols] for r in rows])
        run.log(logs)
    finally:
        run.finish()


def format_report(report: Report) -> str:
    """What the command prints: damaged files, skipped figures, where the files are, then the
    table."""
    lines = [*(f"warning: {p}" for p in report.sweep.problems), *report.skipped,
             f"report: {len(report.files)} files in {report.out}"]
    if report.wandb_dir is not None:
        lines.append(f"W&B: the report in {report.wandb_dir} (wandb sync to upload)")
    lines += ["", report.table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from memorization.base.process import setup_process

    setup_process()
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m memorization.report",
        description="Tables and figures of one or more sweep folders (multirun/DATE/TIME).")
    parser.add_argument("dirs", nargs="+", metavar="SWEEP_DIR")
    parser.add_argument("--out", help="where to write (default: SWEEP_DIR/report, the first)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--no-wandb", action="store_true",
                        help="do not log the report to W&B even when the jobs did")
    parser.add_argument("--lenient", action="store_true",
                        help="exit 0 even when some job's files are damaged (they are still "
                             "named, and left out)")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.dirs, out=args.out, figures=not args.no_figures,
                              wandb=not args.no_wandb)
    except OSError as e:  # a missing folder, no jobs, an unwritable report folder
        if e.errno is not None and e.strerror:  # the OS's: name the path and the way out
            import errno

            where = e.filename or args.out or args.dirs[0]
            full = "free space on its disk, or " if e.errno == errno.ENOSPC else ""
            print(f"error: {where}: {e.strerror}; {full}choose another report folder with "
                  "--out", file=sys.stderr)
        else:
            print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    damaged = int((report.sweep.jobs["status"] == "damaged").sum())
    if damaged and not args.lenient:
        print(f"error: {damaged} job(s) damaged (the warnings above); the report holds the "
              "rest. Restore or delete those job folders and rerun the sweep's command to "
              "redo them, or pass --lenient", file=sys.stderr)
        return 1
    return 0
