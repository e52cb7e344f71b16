"""Running a reproduction's sweeps and reading them back.

Each sweep runs as its own ``python -m ENTRY -m ... hydra.sweep.dir=FOLDER`` process (its
output in ``FOLDER.log``), so it is exactly the command the document prints, and a rerun of
the reproduction skips every finished job and resumes the rest (the sweeps' own resume). One
progress bar covers the whole reproduction: jobs done of the total, and the time left at the
rate of the jobs finished in this invocation. Wall time per sweep adds up over invocations in
``FOLDER/reproduce.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from memorization.base.io import flat_keys, say, write_json_atomic
from memorization.base.overrides import job_overrides
from memorization.cli.reproduce.plan import Paper, Results, SweepSpec
from memorization.jobs.folder import job_state, sweep_job_folders

RECORD = "reproduce.json"


def sweep_folder(root: Path, paper: Paper, scale: str, spec: SweepSpec) -> Path:
    return root / paper.key / scale / spec.name


def done(folder: Path) -> tuple[int, int]:
    """(finished, failed) jobs of a sweep folder."""
    states = [job_state(p) for p in sweep_job_folders(folder)]
    return states.count("finished"), states.count("failed")


def record(folder: Path) -> dict:
    path = folder / RECORD
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def machine() -> str:
    """One line: CPU (or GPU), cores, torch."""
    import torch

    from memorization.base.launch import cpu_name

    cpu = cpu_name()
    gpu = (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def check_sweeps(paper: Paper, scale: str, extra: list[str]) -> list[str]:
    """One line per sweep whose first job would be refused (an unknown key or option, a value
    a run's config checks refuse), before any sweep starts: ``sweep NAME: the error``."""
    from memorization.base.errors import first_line, root_error
    from memorization.cli.entry import precheck
    from memorization.jobs.validate import validate

    errors = []
    for spec in paper.scales[scale].sweeps:
        run = spec.entry == "memorization.run"
        name = "config" if run else spec.entry.rsplit(".", 1)[1]
        err, cfg = precheck(["-m", *spec.arguments(), *extra], name)
        if err is None and cfg is None:
            err = (f"its config cannot be composed; `python -m {spec.entry} "
                   f"{' '.join([*spec.arguments(), *extra])} --cfg job` shows Hydra's message")
        elif err is None and run:
            try:
                validate(cfg, on_driver=True)
            except Exception as exc:  # a refused value: its one line
                err = first_line(root_error(exc))
        if err:  # its hints name this process's entry point: the sweep's is another
            err = err.replace("python -m memorization.reproduce ", f"python -m {spec.entry} ")
            errors.append(f"sweep {spec.name}: {err}")
    return errors


def first_error(folder: Path, log: Path) -> str:
    """The first line of what stopped a sweep: a failed job's one-line error (its ``FAILED``),
    else the first error line of the sweep's last command in its log."""
    for job in sweep_job_folders(folder):
        failed = job / "FAILED"
        if failed.is_file() and job_state(job) == "failed":
            try:
                line = failed.read_text(errors="replace").splitlines()[0].strip()
            except (OSError, IndexError):
                continue
            return f"job {job.name}: {line}"
    try:
        text = log.read_text(errors="replace").rsplit("\n$ ", 1)[-1]
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines()[1:] if ln.strip()]
    hit = next((ln for ln in lines if "error" in ln.lower() or "refuse" in ln.lower()), None)
    return hit or (lines[-1] if lines else "")


def run_sweeps(paper: Paper, scale: str, root: Path, extra: list[str] | None = None,
               progress: bool = True) -> dict[str, int]:
    """Run (or resume) every sweep of ``paper`` at ``scale``; returns each sweep's exit code
    (0 when all its jobs finished, skipped ones included)."""
    from tqdm.auto import tqdm

    specs = paper.scales[scale].sweeps
    total = sum(s.n_jobs for s in specs)
    finished = sum(done(sweep_folder(root, paper, scale, s))[0] for s in specs)
    bar = tqdm(total=total, initial=finished, unit="job", disable=not progress,
               desc=f"reproduce {paper.key} ({scale})", dynamic_ncols=True)
    codes: dict[str, int] = {}
    try:
        for spec in specs:
            folder = sweep_folder(root, paper, scale, spec)
            ok, _ = done(folder)
            if ok >= spec.n_jobs:
                codes[spec.name] = 0
                continue
            codes[spec.name] = _run_one(spec, folder, extra or [], bar)
    finally:
        bar.close()
    return codes


def _run_one(spec: SweepSpec, folder: Path, extra: list[str], bar) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", spec.entry, "-m", *spec.arguments(),
           f"hydra.sweep.dir={folder}", *extra]
    log = folder.with_suffix(".log")
    before = done(folder)[0]
    started = time.time()
    bar.set_postfix_str(spec.name)
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        seen = before
        try:
            while proc.poll() is None:
                time.sleep(2)
                now = done(folder)[0]
                bar.update(now - seen)
                seen = now
        except BaseException:  # Ctrl-C: stop the sweep too; its jobs resume on a rerun
            proc.terminate()
            proc.wait()
            raise
        finally:
            rec = record(folder)
            write_json_atomic(folder / RECORD, {
                "wall_s": round(rec.get("wall_s", 0) + time.time() - started, 1),
                "command": spec.command(str(folder)), "machine": machine(),
                "extra": extra})
    now = done(folder)[0]
    bar.update(now - seen)
    if proc.returncode:
        say(f"sweep {spec.name}: exit code {proc.returncode}, {now} of {spec.n_jobs} jobs "
            f"finished (its log: {log})")
        cause = first_error(folder, log)
        if cause:
            say(f"  {cause}")
    return proc.returncode


# ---- reading back ----------------------------------------------------------------------------

def load_results(paper: Paper, scale: str, root: Path, data: Path | None = None) -> Results:
    """The finished jobs of every sweep, read from its job folders (report files are not
    needed) or, where ``data`` (a document's folder) holds more finished jobs of a sweep than
    its folder, from the committed data (:mod:`memorization.cli.reproduce.data`)."""
    from memorization.cli.reproduce import data as committed

    saved = committed.load(paper, scale, data) if data is not None else Results()
    res = Results()
    for spec in paper.scales[scale].sweeps:
        folder = sweep_folder(root, paper, scale, spec)
        finished = done(folder)[0]
        if not finished:  # committed data refused as stale matters only where it was needed
            res.problems += [p for p in saved.problems
                             if f"{paper.key}_{scale}_{spec.name}.csv" in p]
        if spec.name in saved.jobs and saved.counts[spec.name][0] > finished:
            for part in ("jobs", "history", "counts", "records"):
                if spec.name in getattr(saved, part):
                    getattr(res, part)[spec.name] = getattr(saved, part)[spec.name]
            continue
        res.counts[spec.name] = (finished, spec.n_jobs)
        rec = record(folder)
        if rec:
            res.records[spec.name] = rec
        if not finished:
            continue
        if spec.entry != "memorization.run":
            res.jobs[spec.name] = _study_jobs(folder)
            continue
        _read_sweep(res, spec, folder)
    return res


def _read_sweep(res: Results, spec: SweepSpec, folder: Path) -> None:
    from memorization.cli.report.data import load_sweep

    sweep = load_sweep([folder])
    res.problems += sweep.problems  # damaged files: their jobs are left out, and said so
    jobs = sweep.finished.copy()
    # a key the spec sweeps over a single value is no swept column: take it from the config
    configs = {j.id: {k.replace('/', '.'): v for k, v in flat_keys(j.config).items()}
               for j in sweep.job_list}
    for key in (*spec.params, "seed", "trainer.max_epochs"):
        if key not in jobs.columns:
            jobs[key] = [configs.get(i, {}).get(key) for i in jobs["job"]]
    res.jobs[spec.name] = jobs
    res.history[spec.name] = sweep.history[sweep.history["job"].isin(jobs["job"])]


def _study_jobs(folder: Path) -> pd.DataFrame:
    """One row per finished study job: its overrides (``key=value``) and its metrics.json."""

    rows = []
    for job in sweep_job_folders(folder):
        if job_state(job) != "finished":
            continue
        row = {"job": job.name, "folder": str(job)}
        for item in job_overrides(job):
            key, _, value = item.partition("=")
            row[key.lstrip("+~")] = _scalar(value)
        row.update(json.loads((job / "metrics.json").read_text()))
        rows.append(row)
    return pd.DataFrame(rows)


def _scalar(text: str):
    try:
        return float(text) if any(c in text for c in ".e") else int(text)
    except ValueError:
        return text
