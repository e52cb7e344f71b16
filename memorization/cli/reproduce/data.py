"""The data a reproduction's verdicts are computed from, committed beside its document.

Per sweep, ``<out>/data/<paper>_<scale>_<sweep>.csv``: one row per finished job (its swept
values, seed, final values, and the per-layer values the claims read: the report's
``final.csv`` columns, without the job folder's path), and, for a sweep whose claims read the
epochs (Arpit's A4), ``..._history.csv``: its per-epoch accuracies and losses (no per-layer
rows). ``<out>/data/<paper>_<scale>.json`` holds each sweep's job counts, wall time, command and
machine. With these files alone, ``python -m memorization.reproduce PAPER --document-only``
rebuilds the verdicts and the document: a reader checks a verdict without the job folders or a
rerun. Figures are drawn from the job folders; without them the document links the committed
ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from memorization.base.io import write_json_atomic, write_text_atomic
from memorization.cli.reproduce.plan import Paper, Results

# sweeps whose claims read per-epoch values, and which of them (split, metric; None: all)
HISTORY_SWEEPS = {("arpit", "csr"): {("train", "acc"), ("val", "acc"), ("test", "acc")},
                  ("theunissen", "label_noise"): {("train", "acc")},
                  ("theunissen", "input_noise"): {("train", "acc")}}


def folder(out: Path) -> Path:
    return out / "data"


def _stem(paper: Paper, scale: str) -> str:
    return f"{paper.key}_{scale}"


def save(paper: Paper, scale: str, results: Results, out: Path) -> list[Path]:
    """Write the data of every sweep with a finished job; returns the files written."""
    root = folder(out)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, jobs in results.jobs.items():
        path = root / f"{_stem(paper, scale)}_{name}.csv"
        write_text_atomic(path, jobs.drop(columns=["folder"], errors="ignore")
                          .to_csv(index=False))
        written.append(path)
        hist = results.history.get(name)
        if (paper.key, name) in HISTORY_SWEEPS and hist is not None and len(hist):
            plain = hist[hist["layer"].isna() | (hist["layer"] == "")] if "layer" in hist \
                else hist
            keep = HISTORY_SWEEPS[(paper.key, name)]
            if keep is not None:
                plain = plain[[(a, b) in keep for a, b in zip(plain["split"], plain["metric"],
                                                              strict=True)]]
            path = root / f"{_stem(paper, scale)}_{name}_history.csv"
            write_text_atomic(path, plain.to_csv(index=False))
            written.append(path)
    specs = {spec.name: spec for spec in paper.scales[scale].sweeps}
    meta = {name: {"finished": c[0], "planned": c[1], **results.records.get(name, {}),
                   "arguments": " ".join(specs[name].arguments())}
            for name, c in results.counts.items() if name in specs}
    path = root / f"{_stem(paper, scale)}.json"
    write_json_atomic(path, meta)
    written.append(path)
    return written


def load(paper: Paper, scale: str, out: Path) -> Results:
    """The committed data of ``paper`` at ``scale`` (empty where there is none)."""
    root = folder(out)
    res = Results()
    meta_path = root / f"{_stem(paper, scale)}.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path}: not readable JSON ({e}); restore it from git") from e
    for spec in paper.scales[scale].sweeps:
        path = root / f"{_stem(paper, scale)}_{spec.name}.csv"
        if not path.is_file():
            continue
        try:
            jobs = pd.read_csv(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable CSV ({e}); restore it from git") from e
        m = meta.get(spec.name, {})
        made = m.get("arguments")
        if made is not None and made != " ".join(spec.arguments()):
            res.problems.append(f"{path}: made by other sweep arguments than today's ({made}); "
                                f"left out: rerun the sweep")
            continue
        res.jobs[spec.name] = jobs
        hist = path.with_name(f"{path.stem}_history.csv")
        if hist.is_file():
            res.history[spec.name] = pd.read_csv(hist)
        runs = jobs["job"].nunique() if "job" in jobs else len(jobs)  # replicas share a job
        res.counts[spec.name] = (int(m.get("finished", runs)),
                                 int(m.get("planned", spec.n_jobs)))
        res.records[spec.name] = {k: v for k, v in m.items()
                                  if k not in ("finished", "planned")}
    return res
