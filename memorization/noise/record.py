"""The corruption record: what a corruption did to every training sample.

Metrics read it later (clean vs corrupted subsets, polarization, true-label subspaces), so it is
saved beside every run and can be checked against a checkpoint by its content hash.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memorization.base.errors import ConfigError
from memorization.base.io import atomic_path

FORMAT_VERSION = 1


@dataclass(frozen=True)
class CorruptionRecord:
    """Per training sample: was it selected, is it corrupted, its true and its training label.

    ``selected`` is the Bernoulli(p) draw. ``corrupted`` says the sample now differs from the
    original: for label noise the training label differs from the true label (``label_uniform``
    may select a sample and redraw its own label: selected, not corrupted); for input noise every
    selected sample is corrupted.
    """

    name: str
    p: float
    seed: int
    selected: torch.Tensor  # bool [N]
    corrupted: torch.Tensor  # bool [N]
    true_labels: torch.Tensor  # int64 [N]
    train_labels: torch.Tensor  # int64 [N]
    inputs_hash: str  # sha256 of the training inputs after corruption
    hash: str = ""

    def __post_init__(self):
        n = self.true_labels.shape[0]
        for field in ("selected", "corrupted", "train_labels"):
            if getattr(self, field).shape != (n,):
                raise ConfigError(f"corruption record: {field} has shape "
                                 f"{tuple(getattr(self, field).shape)}, expected ({n},)")
        if not self.hash:
            object.__setattr__(self, "hash", self._content_hash())

    def _content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.name, float(self.p), int(self.seed)]).encode())
        for t in (self.selected, self.corrupted, self.true_labels, self.train_labels):
            h.update(_tensor_bytes(t))
        h.update(self.inputs_hash.encode())
        return h.hexdigest()

    @property
    def n(self) -> int:
        return int(self.true_labels.shape[0])

    @property
    def n_corrupted(self) -> int:
        return int(self.corrupted.sum())

    def summary(self) -> dict:
        """Scalars for loggers and metrics.json."""
        return {
            "noise": self.name,
            "p": float(self.p),
            "seed": int(self.seed),
            "n_train": self.n,
            "n_selected": int(self.selected.sum()),
            "n_corrupted": self.n_corrupted,
            "fraction_corrupted": self.n_corrupted / max(self.n, 1),
            "hash": self.hash,
        }

    def save(self, path: str | Path) -> Path:
        """Write the record as one ``.npz`` (numpy arrays plus metadata), atomically."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                format_version=np.array(FORMAT_VERSION),
                name=np.array(self.name),
                p=np.array(self.p, dtype=np.float64),
                seed=np.array(self.seed, dtype=np.int64),
                selected=self.selected.cpu().numpy(),
                corrupted=self.corrupted.cpu().numpy(),
                true_labels=self.true_labels.cpu().numpy(),
                train_labels=self.train_labels.cpu().numpy(),
                inputs_hash=np.array(self.inputs_hash),
                hash=np.array(self.hash),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> CorruptionRecord:
        try:
            return cls._load(Path(path))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{path}: not a readable corruption record ({e}); re-run the job "
                              "to regenerate it") from e

    @classmethod
    def _load(cls, path: Path) -> CorruptionRecord:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format_version"]) != FORMAT_VERSION:
                raise ConfigError(f"{path}: corruption record format {int(z['format_version'])}, "
                                 f"this version reads {FORMAT_VERSION}")
            rec = cls(
                name=str(z["name"]),
                p=float(z["p"]),
                seed=int(z["seed"]),
                selected=torch.from_numpy(z["selected"]),
                corrupted=torch.from_numpy(z["corrupted"]),
                true_labels=torch.from_numpy(z["true_labels"]),
                train_labels=torch.from_numpy(z["train_labels"]),
                inputs_hash=str(z["inputs_hash"]),
            )
            stored = str(z["hash"])
        if rec.hash != stored:
            raise ConfigError(f"{path}: corruption record content does not match its hash "
                             "(file damaged or edited); re-run the job to regenerate it")
        return rec


def _tensor_bytes(t: torch.Tensor) -> bytes:
    a = t.detach().cpu().contiguous().numpy()
    return str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()


def tensor_hash(t: torch.Tensor) -> str:
    return hashlib.sha256(_tensor_bytes(t)).hexdigest()
