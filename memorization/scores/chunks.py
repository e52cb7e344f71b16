"""The models of a scores job land in chunks: ``chunks/chunk_<c>.npz`` holds, for the models of
chunk c, their indices, subset ratios, who trained on which example (``included``), and who
predicted each training and test example's label right. A chunk is written atomically (a
temporary file renamed into place), so a chunk file is whole or absent: a killed job leaves
the chunks it finished, and a rerun trains from the first missing one. Read with NumPy's
loader with pickles refused; the estimates (estimator.py) can be computed from whatever
chunks there are at any point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memorization.io import atomic_path

FOLDER = "chunks"
KEYS = ("models", "ratios", "included", "correct_train", "correct_test")


def chunk_path(root: Path, index: int) -> Path:
    return Path(root) / FOLDER / f"chunk_{index:04d}.npz"


@dataclass
class Chunks:
    """Every landed chunk's rows, concatenated in model order: models [M], ratios [M],
    included / correct_train [M, N], correct_test [M, T]."""

    models: torch.Tensor
    ratios: torch.Tensor
    included: torch.Tensor
    correct_train: torch.Tensor
    correct_test: torch.Tensor

    @property
    def count(self) -> int:
        return len(self.models)


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


def next_chunk(root: Path, total: int) -> int | None:
    """The first chunk of ``total`` not landed yet; None when all are."""
    done = set(landed(root))
    return next((c for c in range(total) if c not in done), None)


def load_chunks(root: Path) -> Chunks | None:
    """Every landed chunk, in model order (None: no chunk yet). A chunk whose examples do not
    match the others' is an error naming its file."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    shape = None
    for c in landed(root):
        path = chunk_path(root, c)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in KEYS}
        this = (arrays["included"].shape[1], arrays["correct_test"].shape[1])
        if shape is not None and this != shape:
            raise ValueError(f"{path} has {this[0]} training and {this[1]} test examples, the "
                             f"other chunks {shape[0]} and {shape[1]}: a chunk of another job")
        shape = this
        for k in KEYS:
            parts[k].append(arrays[k])
    if shape is None:
        return None
    cat = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
    order = torch.argsort(cat["models"])
    return Chunks(**{k: v[order] for k, v in cat.items()})
