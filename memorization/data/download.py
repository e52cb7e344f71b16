"""Dataset locations, and downloads that never leave a half-written or unverified file under
the final name."""

from __future__ import annotations

import hashlib
import os
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from memorization.base.errors import ConfigError
from memorization.base.io import atomic_path


def default_root(name: str) -> Path:
    """Where a dataset's files go by default: $XDG_DATA_HOME or ~/.local/share, /memorization/."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "memorization" / name


def fetch(url: str, dest: Path, check: Callable[[Path], bool], timeout: float = 60.0) -> bool:
    """Download ``url`` to ``dest``: into a temporary file beside it first, renamed only when
    ``check(temp_path)`` returns True (it may also raise ConfigError to refuse). Returns False,
    leaving nothing behind, when the network fails or the check refuses."""
    try:  # the temporary name ends in dest's suffix too: a check may read it by its extension
        with atomic_path(dest, suffix=dest.suffix) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f, \
                    tqdm(total=int(getattr(r, "headers", {}).get("Content-Length") or 0) or None,
                         unit="B", unit_scale=True, unit_divisor=1024,
                         desc=f"downloading {dest.name}",
                         leave=False, disable=None) as bar:  # disable=None: no bar off a terminal
                while block := r.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
            if not check(tmp):
                raise _Refused  # atomic_path removes the temporary file
        return True
    except (OSError, EOFError, zlib.error, ConfigError, _Refused):
        return False


class _Refused(Exception):
    """The downloaded file failed its check."""


def file_md5(path: Path) -> str:
    """MD5 of a file, read in 1 MiB blocks (the published checksums of dataset archives)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
