"""``history.csv``: every value a job logs, one row per (epoch, key), whatever the logger.

Long ("tidy") format, one header line, then rows

    epoch,split,layer,depth,metric,value
    3,train,,,loss,0.412...
    3,test,,,acc,0.871...
    3,,,,gap,0.05...
    5,train,fc2,2,cosine,0.071...

- ``epoch`` is the number of epochs completed when the value was logged (1 after the first
  epoch), the count ``epochs_to_fit`` uses; values logged outside an epoch (``epochs_to_fit`` at
  the end of fit) take the last epoch logged.
- ``metric``, ``split``, ``layer`` come from the logged key by :func:`parse_key`:
  ``train/acc_clean`` is metric ``acc_clean`` of split ``train``; ``cosine/train/fc3`` is metric
  ``cosine`` of split ``train`` at layer ``fc3``; ``csr/test`` is metric ``csr`` of split
  ``test``; ``gap`` has neither split nor layer.
- ``depth`` is the layer's index among the model's probe layers (0: the input), when the
  per-layer metrics told the logger the layer order (:meth:`HistoryLogger.set_layers`).
- Values are written with full float precision (``repr``), so the file holds exactly what was
  logged; NaN is written ``nan``.

Rows are appended at every log call (twice an epoch: after the evaluation and after the
epoch-end metrics), each call's rows in one ``write`` on an append-only file, so a running or
crashed job has its history so far. A write cut off midway (a full disk, a killed machine)
leaves at most a last line without its newline, which :func:`read_history` drops. The first log
call of a process drops the rows of that epoch and later ones, if the file holds any (a job
resumed from an earlier checkpoint, or a folder reused), atomically (a new file renamed over it).
In a job, :meth:`HistoryLogger.begin` does this when training starts, from the number of epochs
already done, and a job resumed from another folder's checkpoint starts with that folder's rows
of those epochs, so its history is whole.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from memorization.base.io import write_text_atomic

COLUMNS = ("epoch", "split", "layer", "depth", "metric", "value")
SPLITS = ("train", "val", "test")
STAGES = ("relabel",)  # key prefixes of the stages after a fit (memorization/jobs/relabel/)
END_OF_FIT = ("epochs_to_fit",)  # logged once, when a fit ends (memorization/engine/callbacks.py)
# bookkeeping keys Lightning adds to every log call, not values of the run
_SKIP = {"epoch", "step", "trainer/global_step"}


def parse_key(key: str) -> tuple[str, str, str]:
    """``(metric, split, layer)`` of a logged key; ``""`` where the key has none.

    Two-part keys put the split first when it is one of ``train``, ``val``, ``test``
    (``train/acc``) and second otherwise (``csr/test``); three-part keys are
    ``metric/split/layer`` (``masc_true/test/fc1``). A stage's keys (``relabel/...``, logged
    once after the fit) have the stage as split and the rest as metric
    (``relabel/masc/test_acc_after``: metric ``masc/test_acc_after`` of split ``relabel``)."""
    parts = key.split("/")
    if parts[0] in STAGES and len(parts) > 1:
        return "/".join(parts[1:]), parts[0], ""
    if len(parts) >= 3:
        return parts[0], parts[1], "/".join(parts[2:])
    if len(parts) == 2:
        a, b = parts
        return (b, a, "") if a in SPLITS else (a, b, "")
    return key, "", ""


def rows_of(metrics: Mapping[str, Any], epoch: int,
            depth: Mapping[str, int] | None = None) -> list[tuple]:
    """The history rows of one log call, in the order the keys came."""
    depth = depth or {}
    rows = []
    for key, value in metrics.items():
        if key in _SKIP:
            continue
        metric, split, layer = parse_key(key)
        d = depth.get(layer, "") if layer else ""
        rows.append((epoch, split, layer, d, metric, float(value)))
    return rows


def _csv_lines(rows: list[tuple], header: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(COLUMNS)
    for epoch, split, layer, depth, metric, value in rows:
        w.writerow((epoch, split, layer, depth, metric, repr(value)))
    return buf.getvalue()


def _rows_text(path: Path) -> list[str]:
    """The complete data lines of a history file (no header, no cut last line)."""
    text = path.read_text() if path.is_file() else ""
    return text[: text.rfind("\n") + 1].splitlines()[1:]


def read_history(path: str | os.PathLike):
    """``history.csv`` as a pandas DataFrame with the columns :data:`COLUMNS` (``split`` and
    ``layer`` as strings, ``""`` for none; ``depth`` float, NaN for none). A last line cut off
    by an interrupted write is dropped."""
    import pandas as pd

    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if not text.strip():
        return pd.DataFrame({c: [] for c in COLUMNS})
    df = pd.read_csv(io.StringIO(text), dtype={"split": str, "layer": str, "metric": str},
                     keep_default_na=False, na_values={"value": ["nan"], "depth": [""]})
    df["depth"] = pd.to_numeric(df["depth"], errors="coerce")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


class HistoryLogger(Logger):
    """A Lightning logger that appends every logged value to ``<save_dir>/history.csv``
    (the module docstring has the format). Added to every job by the entry point."""

    def __init__(self, save_dir: str | os.PathLike, filename: str = "history.csv"):
        super().__init__()
        self.path = Path(save_dir) / filename
        self.depth: dict[str, int] = {}
        self._epoch = 0  # the last epoch logged
        self._started = False

    @property
    def name(self) -> str:
        return "history"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    @property
    @rank_zero_experiment
    def experiment(self) -> Path:
        return self.path

    def set_layers(self, names: list[str]) -> None:
        """The probe layers in order (input first): their index is the rows' ``depth``."""
        self.depth = {n: i for i, n in enumerate(names)}

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the job folder holds config_resolved.yaml

    @rank_zero_only
    def begin(self, epochs_done: int, previous: str | os.PathLike | None = None) -> None:
        """Training starts after ``epochs_done`` epochs (0, or a checkpoint's): keep the rows of
        those epochs and drop the rest, atomically. ``previous``: the history.csv of the run a
        checkpoint came from, whose rows of those epochs start this file when it is another."""
        self._started = True
        self._epoch = epochs_done
        self.path.parent.mkdir(parents=True, exist_ok=True)
        source = self.path
        if previous is not None and Path(previous).is_file() and (
                not self.path.is_file() or not self.path.samefile(previous)):
            source = Path(previous)
        # the lines themselves, not parsed and written again: the values stay as they were;
        # the end of a fit's values go (a run resumed after its last epoch logs them again)
        kept = [line for line in _rows_text(source) if epochs_done > 0
                and int(line.split(",", 1)[0]) <= epochs_done
                and line.split(",")[4] not in END_OF_FIT]
        write_text_atomic(self.path, _csv_lines([], header=True) + "".join(
            line + "\n" for line in kept))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if "epoch" in metrics:
            self._epoch = int(metrics["epoch"]) + 1
        if not self._started:  # used without begin(): the first epoch logged starts the file
            if "epoch" in metrics:
                epoch = self._epoch
                self.begin(epoch - 1)
                self._epoch = epoch
            elif self.path.is_file():  # e.g. a value after a fit that had nothing to train
                self._started = True
                rows = _rows_text(self.path)
                self._epoch = int(rows[-1].split(",", 1)[0]) if rows else 0
            else:
                self.begin(0)
        rows = rows_of(metrics, self._epoch, self.depth)
        if not rows:
            return
        # one write per call on an O_APPEND descriptor: a reader sees whole calls or a cut line
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, _csv_lines(rows).encode())
        finally:
            os.close(fd)
