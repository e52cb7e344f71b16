"""Reading a sweep: every job folder's resolved config, overrides, ``metrics.json`` and history.

A job folder is any folder holding ``config_resolved.yaml`` or ``.hydra/config.yaml`` (a
multirun's ``N/``, or a single run's folder given directly). A job is

- ``finished`` when its ``metrics.json`` exists (written only when training ends),
- ``interrupted`` when that file says the run was interrupted (Ctrl-C),
- ``failed`` when its ``FAILED`` marker holds the error of its last attempt,
- ``damaged`` when one of its files cannot be what this program wrote: ``metrics.json`` not a
  JSON object, ``history.csv`` unreadable, not in the history format, or ending before the last
  epoch ``metrics.json`` counts (a copy cut short). Each damage is one line in
  :attr:`Sweep.problems` (``python -m memorization.report`` prints them as warnings and exits 1
  unless ``--lenient``); the job's readable parts stay out of the tables,
- ``unfinished`` otherwise: running, or killed; its history so far is still read.

The swept parameters are the keys of the multirun's sweep overrides (``noise.p=0,0.2,0.4`` in
``multirun.yaml``) and every override key whose value differs between jobs (so folders of several
sweeps combine). A swept key's value per job is its config group choice (``noise=gaussian``), else
the resolved config's value (``noise.p``), else the override's text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from memorization.base.errors import first_line
from memorization.base.io import flat_keys, read_json_object
from memorization.base.overrides import job_overrides, override_items, sweep_overrides
from memorization.loggers.history import COLUMNS, read_history

STATUSES = ("finished", "interrupted", "failed", "damaged", "unfinished")
# columns of the jobs table besides the swept parameters and the final values
FIXED = ("noise", "noise.p", "seed", "noise.seed")


@dataclass
class Job:
    folder: Path
    id: str
    overrides: list[str]
    config: dict
    choices: dict
    metrics: dict | None
    status: str
    problems: list[str] = field(default_factory=list)  # "FILE: what is wrong", one per damage


@dataclass
class Sweep:
    """A sweep (or several) read back: ``jobs`` one row per job (``job``, ``status``, the swept
    parameters, :data:`FIXED`, ``experiment``, ``epochs``, ``epochs_to_fit``, the corruption
    counts, and one column per final logged value such as ``test/acc``), ``history`` every job's
    history.csv rows with a ``job`` column, ``swept`` the swept keys in command-line order."""

    dirs: list[Path]
    jobs: pd.DataFrame
    history: pd.DataFrame
    swept: list[str]
    title: str
    job_list: list[Job] = field(default_factory=list)

    @property
    def finished(self) -> pd.DataFrame:
        return self.jobs[self.jobs["status"] == "finished"]

    @property
    def problems(self) -> list[str]:
        """One line per damaged file: ``PATH: what is wrong``."""
        return [p for j in self.job_list for p in j.problems]


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: 10x faster on hydra.yaml


def _yaml(path: Path, problems: list[str] | None = None):
    """The mapping in a YAML file; None when it is missing or damaged (then, with
    ``problems``, a line naming the file)."""
    if not path.is_file():
        return None
    try:
        value = yaml.load(path.read_text(), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        wrong = f"not YAML ({first_line(e)[:80]})"
    else:
        if isinstance(value, dict) or value is None:
            return value
        wrong = f"not a mapping but {type(value).__name__}"
    if problems is not None:
        problems.append(f"{path}: {wrong}")
    return None


def is_job(folder: Path) -> bool:
    return (folder / "config_resolved.yaml").is_file() or (folder / ".hydra/config.yaml").is_file()


def _runs(job: Path) -> list[Path]:
    """A job folder's runs: itself, or the replicas of a stacked job (``replicas/<k>/``, those
    that have started)."""
    from memorization.jobs.folder import replica_folders

    return [p for p in replica_folders(job) if is_job(p)] or [job]


def find_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep folder (or the folder itself, for a single run), in job-number
    order; ``report/`` and hidden folders are not jobs. A stacked job (trainer.replicas > 1)
    counts as its replicas, each a run of its own."""
    if is_job(sweep_dir):
        return _runs(sweep_dir)
    found = []
    for root, dirs, _ in os.walk(sweep_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("report", "wandb",
                                                                              "checkpoints"))
        here = Path(root)
        if here != sweep_dir and is_job(here):
            found += _runs(here)
            dirs[:] = []
    # numbers in number order, before names (a name and a number never compare)
    return sorted(found, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s)
                                        for s in p.relative_to(sweep_dir).parts])


def _read_job(folder: Path, job_id: str) -> Job:
    problems: list[str] = []
    config = (_yaml(folder / "config_resolved.yaml", problems)
              or _yaml(folder / ".hydra/config.yaml", problems) or {})
    # a stacked job's replica: Hydra's files are its job's
    stacked = folder.parent.name == "replicas" and is_job(folder.parent.parent)
    hydra_dir = (folder.parent.parent if stacked else folder) / ".hydra"
    hydra_cfg = _yaml(hydra_dir / "hydra.yaml", problems) or {}
    choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    overrides = job_overrides(hydra_dir.parent)
    metrics, wrong = read_json_object(folder / "metrics.json")
    if metrics is None and wrong != "missing":
        problems.append(f"{folder / 'metrics.json'}: {wrong}")
    status = ("damaged" if problems
              else "failed" if metrics is None and (folder / "FAILED").is_file()
              else "unfinished" if metrics is None
              else "interrupted" if metrics.get("interrupted") else "finished")
    return Job(folder, job_id, overrides, config, choices, metrics, status,
               problems)


def _select(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _value(job: Job, key: str, text: str | None = None):
    """A swept key's value in a job: its group choice, its config value, or the override."""
    if key in job.choices and not isinstance(_select(job.config, key), (int, float, str)):
        return job.choices[key]
    value = _select(job.config, key)
    if isinstance(value, (int, float, str, bool)) or value is None and text is None:
        return value
    return text if text is not None else str(value)


def swept_keys(dirs: list[Path], jobs: list[Job]) -> list[str]:
    keys: list[str] = [k for d in dirs for k in sweep_overrides(d)]
    per_job = [{k: v for k, v, _ in override_items(j.overrides)} for j in jobs]
    for d in per_job:
        # a key whose text differs between jobs, or that only some jobs set, was swept
        keys += [k for k in d if len({p.get(k) for p in per_job}) > 1]
    out = []
    for k in keys:  # first occurrence, without Hydra's own keys
        if k not in out and not k.startswith("hydra"):
            out.append(k)
    return out


def _job_row(job: Job, swept: list[str]) -> dict:
    texts = {k: v for k, v, _ in override_items(job.overrides)}
    row: dict = {"job": job.id, "status": job.status}
    for key in swept:
        row[key] = _value(job, key, texts.get(key))
    noise = job.config.get("noise") or {}
    row.setdefault("noise", noise.get("name"))
    row.setdefault("noise.p", noise.get("p"))
    row.setdefault("seed", job.config.get("seed"))
    row.setdefault("noise.seed", noise.get("seed"))
    row["experiment"] = job.choices.get("experiment")
    m = job.metrics or {}
    corruption = m.get("corruption") or {}
    row["epochs"] = m.get("epochs")
    row["epochs_to_fit"] = m.get("epochs_to_fit")
    for k in ("n_corrupted", "n_train", "fraction_corrupted"):
        row[k] = corruption.get(k)
    for k, v in (m.get("final") or {}).items():
        row[k] = v
    # a stage after the fit (memorization/jobs/relabel/): its values as relabel/... columns; the
    # per-epoch lists stay in metrics.json
    for k, v in flat_keys(m.get("relabel") or {}, "relabel").items():
        if not isinstance(v, list):
            row[k] = v
    return row


def _history(job: Job) -> pd.DataFrame:
    """The job's history rows; a damaged history.csv (see the module docstring) marks the job
    damaged and gives no rows."""
    path = job.folder / "history.csv"
    empty = pd.DataFrame({c: [] for c in COLUMNS})
    wrong = ""
    df = empty
    if path.is_file():
        try:
            df = read_history(path)
        except UnicodeDecodeError:
            wrong = "not text (binary bytes)"
        except (OSError, ValueError, pd.errors.ParserError) as e:
            wrong = f"unreadable as a history ({first_line(e)})"
        else:
            missing = [c for c in COLUMNS if c not in df.columns]
            epochs = (job.metrics or {}).get("epochs")
            last = pd.to_numeric(df["epoch"], errors="coerce").max() if "epoch" in df else None
            if missing:
                wrong = f"not a history: no column {', '.join(missing)}"
            elif isinstance(epochs, int) and epochs > 0 and not (len(df) and last >= epochs):
                end = f"ends at epoch {last:g}" if len(df) else "has no rows"
                wrong = f"{end} but metrics.json counts {epochs} epochs (truncated)"
    if wrong:
        job.problems.append(f"{path}: {wrong}")
        job.status = "damaged"
        df = empty
    df.insert(0, "job", job.id)
    return df


def _title(jobs: pd.DataFrame, job_list: list[Job], swept: list[str]) -> str:
    experiments = {j.choices.get("experiment") for j in job_list}
    if len(experiments) == 1 and None not in experiments:
        head = str(experiments.pop())
    else:
        first = job_list[0].choices if job_list else {}
        head = " · ".join(f"{g}={first[g]}" for g in ("data", "model", "noise")
                          if g in first and g not in swept)
    parts = []
    for key in swept:
        vals = sorted({v for v in jobs[key] if v is not None and v == v}, key=_sort_key)
        parts.append(f"{key}={','.join(_fmt(v) for v in vals)}")
    return head + (": " + " · ".join(parts) if parts else "")


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def load_sweep(dirs: list[str | Path]) -> Sweep:
    """Read every job under ``dirs`` (sweep folders or single run folders)."""
    paths = [Path(d) for d in dirs]
    for p in paths:
        if not p.is_dir():
            raise FileNotFoundError(f"{p} is not a folder; give a sweep folder such as "
                                    "multirun/DATE/TIME")
    folders = [(p, f) for p in paths for f in find_jobs(p)]
    if not folders:
        raise FileNotFoundError(f"no job folders (with config_resolved.yaml) under "
                                f"{', '.join(map(str, paths))}")
    base = Path(os.path.commonpath([str(p.resolve()) for p in paths]))
    job_list = []
    for sweep_dir, folder in folders:
        rel = folder.resolve().relative_to(base if len(paths) > 1 else sweep_dir.resolve())
        job_list.append(_read_job(folder, str(rel) if str(rel) != "." else
                                  folder.resolve().name))
    from memorization.config.studies import STUDY_KEYS

    study = next(((j, k) for j in job_list for k in STUDY_KEYS if k in j.config), None)
    if study is not None:  # its results are its own files: a training table would be wrong
        job, key = study
        raise FileNotFoundError(
            f"{job.folder} holds a job of python -m memorization.{key}, not a training run: its "
            "results are the files it wrote there (and the sweep's figure); "
            "memorization.report reads the folders of memorization.run")
    swept = swept_keys(paths, job_list)
    histories = [_history(j) for j in job_list]  # first: a damaged history changes the status
    jobs = pd.DataFrame([_job_row(j, swept) for j in job_list])
    # a job without rows yet (no history.csv) would turn every job's epochs into floats
    history = pd.concat([h for h in histories if len(h)] or histories[:1], ignore_index=True)
    return Sweep(paths, jobs, history, swept, _title(jobs, job_list, swept), job_list)
