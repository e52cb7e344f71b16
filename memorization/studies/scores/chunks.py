"""The models of a scores job land in chunks: ``chunks/chunk_<c>.npz`` holds, for the models of
chunk c, their indices, subset ratios, who trained on which example (``included``), and the
class each predicted for every training and test example (``pred_train``, ``pred_test``). A
chunk is written atomically (a temporary file renamed into place), so a chunk file is whole or
absent: a killed job leaves the chunks it finished, and a rerun trains the models no chunk
holds (:func:`plan`). Read with NumPy's loader with pickles refused; the estimates
(estimator.py) can be computed from whatever chunks there are at any point.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memorization.base.errors import ConfigError
from memorization.base.io import atomic_path

FOLDER = "chunks"
KEYS = ("models", "ratios", "included", "pred_train", "pred_test")


def chunk_path(root: Path, index: int) -> Path:
    return Path(root) / FOLDER / f"chunk_{index:04d}.npz"


@dataclass
class Chunks:
    """Every landed chunk's rows, concatenated in model order: models [M], ratios [M],
    included / pred_train [M, N], pred_test [M, T]; ``chunk`` [M]: the file each row came
    from (the order the chunks landed in)."""

    models: torch.Tensor
    ratios: torch.Tensor
    included: torch.Tensor
    pred_train: torch.Tensor
    pred_test: torch.Tensor
    chunk: torch.Tensor

    @property
    def count(self) -> int:
        return len(self.models)

    def first(self, total: int) -> Chunks:
        """The rows of models 0..total-1 (a job asked for fewer models than its folder
        holds: the estimates of those, as if the others had not been trained)."""
        keep = self.models < total
        return Chunks(**{k: getattr(self, k)[keep] for k in (*KEYS, "chunk")})


def save_chunk(root: Path, index: int, **arrays: torch.Tensor) -> Path:
    """Write chunk ``index`` atomically; ``arrays``: the :data:`KEYS`, one row per model."""
    missing = set(KEYS) - set(arrays)
    if missing:
        raise ValueError(f"a chunk needs {', '.join(sorted(missing))}")
    rows = {len(arrays[k]) for k in KEYS}
    if len(rows) != 1:
        raise ValueError(f"the arrays of a chunk must have one row per model, got {rows}")
    path = chunk_path(root, index)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **{k: arrays[k].detach().cpu().numpy() for k in KEYS})
    return path


def landed(root: Path) -> list[int]:
    """The indices of the chunks whose files are there."""
    folder = Path(root) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(int(p.stem.removeprefix("chunk_")) for p in folder.glob("chunk_*.npz")
                  if p.stem.removeprefix("chunk_").isdigit())


def next_index(root: Path) -> int:
    """The file index of the next chunk to land: one past the last."""
    return max(landed(root), default=-1) + 1


def plan(todo: list[int], ratio_of, size: int) -> list[list[int]]:
    """The models ``todo`` in chunks of at most ``size``, each of one subset ratio
    (``ratio_of(k)``: its networks train on subsets of one size, stacked), in model order
    within a ratio, the ratios' chunks taking turns so every ratio's estimates grow
    together."""
    by_ratio: dict[float, list[int]] = {}
    for k in sorted(todo):
        by_ratio.setdefault(ratio_of(k), []).append(k)
    queues = [[ks[i:i + size] for i in range(0, len(ks), size)] for ks in by_ratio.values()]
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def load_chunks(root: Path) -> Chunks | None:
    """Every landed chunk, in model order (None: no chunk yet). A chunk whose examples do not
    match the others', or a model in two chunks, is an error naming the file."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    shape = None
    for c in landed(root):
        path = chunk_path(root, c)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in KEYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise ConfigError(f"{path} is damaged ({type(e).__name__}); delete it and rerun: "
                              "the job trains its models again") from None
        this = (arrays["included"].shape[1], arrays["pred_test"].shape[1])
        if shape is not None and this != shape:
            raise ValueError(f"{path} has {this[0]} training and {this[1]} test examples, the "
                             f"other chunks {shape[0]} and {shape[1]}: a chunk of another job")
        shape = this
        for k in KEYS:
            parts[k].append(arrays[k])
        parts.setdefault("chunk", []).append(np.full(len(arrays["models"]), c))
    if shape is None:
        return None
    cat = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
    order = torch.argsort(cat["models"])
    models = cat["models"][order]
    twice = models[1:][models[1:] == models[:-1]]
    if len(twice):
        raise ValueError(f"model {int(twice[0])} is in two chunks of {Path(root) / FOLDER}; "
                         "remove one of them (or the folder, to start over)")
    return Chunks(**{k: v[order] for k, v in cat.items()})
