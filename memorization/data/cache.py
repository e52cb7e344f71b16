"""A cache of parsed dataset arrays, so a slow parse (Tiny ImageNet's 110,000 JPEGs) runs once.

After the first parse a source saves its arrays (images as uint8 pixels where they are 8-bit, the
int64 labels, the class count) in one uncompressed ``.npz`` in its ``root``, and later loads read
that instead of parsing again. The file also holds a *key* describing the sources it was made
from; a cache whose key differs from the current one is stale and is rebuilt.

The key: for every source file its path (relative to the dataset folder), size and ``mtime_ns``,
hashed together (:func:`stat_key`), plus whatever the caller adds (a parser version, a pinned
checksum). Statting is cheap even for Tiny ImageNet's extracted folder (110,000 files), whereas
hashing the contents would cost as much as a good part of the parse. Editing, replacing, adding
or removing a file changes the key; what it misses is a change that keeps both the size and the
nanosecond mtime (only done deliberately, e.g. ``touch -d`` back to the old time after an
edit of equal length). A copy made with ``cp -p``/``rsync -t`` keeps the mtime and, being the
same bytes, rightly keeps the cache.

Safety: the cache is written to a temporary file beside it and renamed into place only when
complete, so a crash or a full disk never leaves a half-written cache under the final name (a
killed write can leave a hidden ``.<name>.*.tmp`` file, which is never read and can be deleted). A
cache that cannot be read (truncated, damaged, not ours) is ignored with a warning and rebuilt;
a root that cannot be written (read-only) just skips caching. ``cache=False`` in a loader's
``source_options`` neither reads nor writes it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memorization.base.io import atomic_path
from memorization.data.sources import RawData

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout of the .npz changes
SUFFIX = ".parsed.npz"
_SPLITS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class Arrays:
    """A source's parsed arrays: images (N, C, H, W) as uint8 pixels 0..255, or as float32 already
    in [0, 1] for sources that are not 8-bit; int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def to_raw(self) -> RawData:
        return RawData(to_float(self.x_train), torch.from_numpy(self.y_train.astype(np.int64)),
                       to_float(self.x_test), torch.from_numpy(self.y_test.astype(np.int64)),
                       num_classes=self.num_classes)


def to_float(x: np.ndarray) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (exactly ``x.astype(np.float32) / 255``); float as is."""
    if x.dtype == np.uint8:
        return torch.from_numpy(x).to(torch.float32).div_(255.0)
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


def cache_path(root: Path, name: str) -> Path:
    return root / f"{name}{SUFFIX}"


def stat_key(base: Path, names: Iterable[str]) -> str:
    """A digest of the path (relative to ``base``), size and mtime_ns of every file named, and of
    every file under every folder named; a missing name counts as missing. Order-free."""
    entries = []

    def walk(rel: str) -> None:
        with os.scandir(os.path.join(base, rel)) as it:
            for e in it:
                sub = f"{rel}/{e.name}"
                if e.is_dir():
                    walk(sub)
                else:
                    st = e.stat()
                    entries.append(f"{sub}\0{st.st_size}\0{st.st_mtime_ns}")

    for name in names:
        try:
            st = os.stat(os.path.join(base, name))
        except FileNotFoundError:
            entries.append(f"{name}\0missing")
            continue
        if stat.S_ISDIR(st.st_mode):
            walk(name)
        else:
            entries.append(f"{name}\0{st.st_size}\0{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def read_cache(path: Path, key: str) -> Arrays | None:
    """The cached arrays when ``path`` holds a readable cache made under ``key``; else None (a
    stale cache silently, an unreadable one with a warning)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if int(f["format"]) != FORMAT or str(f["key"]) != key:
                log.info("%s is out of date (its sources changed); parsing again", path)
                return None
            arrays = Arrays(*(f[k] for k in _SPLITS), num_classes=int(f["num_classes"]))
        _validate(arrays)
    except Exception as e:  # noqa: BLE001 -- whatever is wrong with a cache, parse instead
        log.warning("ignoring the unreadable cache %s (%s: %s); parsing the source again",
                    path, type(e).__name__, e)
        return None
    return arrays


def _validate(a: Arrays) -> None:
    for split in ("train", "test"):
        x, y = getattr(a, f"x_{split}"), getattr(a, f"y_{split}")
        if x.dtype not in (np.uint8, np.float32) or x.ndim < 2 or y.ndim != 1 \
                or y.dtype != np.int64 or len(x) != len(y):
            raise ValueError(f"{split} arrays {x.dtype}{x.shape} / {y.dtype}{y.shape} are not "
                             "images and labels")
    if a.num_classes < 1:
        raise ValueError(f"num_classes={a.num_classes}")


def write_cache(path: Path, key: str, arrays: Arrays) -> bool:
    """Save atomically (temporary file, then rename); False, leaving nothing, when it cannot."""
    try:
        # opened by open(), not mkstemp: the cache gets the umask's permissions, like any file
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, format=np.int64(FORMAT), key=np.str_(key),
                     num_classes=np.int64(arrays.num_classes),
                     **{k: getattr(arrays, k) for k in _SPLITS})
        return True
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # a read-only root
            log.info("not caching the parsed arrays: %s is not writable", path.parent)
        else:
            log.warning("could not write the cache %s (%s); going on without it", path, e)
        return False


def load_or_parse(path: Path, key: str, parse: Callable[[], Arrays], enabled: bool = True
                  ) -> Arrays:
    """The arrays from the cache at ``path`` when it is valid for ``key``; otherwise ``parse()``
    them and (when ``enabled``) save them there for the next run."""
    if enabled and (arrays := read_cache(path, key)) is not None:
        return arrays
    arrays = parse()
    if enabled:
        _validate(arrays)
        write_cache(path, key, arrays)
    return arrays
