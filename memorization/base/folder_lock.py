"""One live process per job folder (and per sweep folder): an OS file lock on ``<folder>/.lock``.

A second process that would write into a folder in use (a rerun typed while the first run is
still going, a cluster that requeues a job that is still alive) refuses in one line that names
the holder's PID and host, or, with ``wait_for_lock=true``, waits until the holder ends.

Why ``flock(2)``: the kernel releases the lock when the holding process dies, however it dies
(kill -9 included), so nothing stale is ever left behind and no PID has to be checked for life.
The file's text (PID, host, start time, command) only describes the holder for the refusal
message; its presence means nothing. On NFS, Linux emulates ``flock`` with POSIX byte-range locks
(NFSv4, or NFSv3 with lockd), which hold across hosts; on file systems without lock support the
lock is refused with an OSError, reported as such. A lock is per open file, so a process holds
each folder once (:data:`_HELD` counts nested holds: the entry point locks a single run's folder
before Hydra writes there, the job function locks it again).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from memorization.base.errors import ConfigError, Refusal

NAME = ".lock"
_HELD: dict[str, list] = {}  # resolved folder -> [file object, hold count]


class FolderInUse(Refusal):
    """The folder is held by another live process; the message names it and the way out."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text().split("\n")
    except OSError:
        text = []
    fields = dict(line.split("=", 1) for line in text if "=" in line)
    pid, host = fields.get("pid", "?"), fields.get("host", "?")
    since = fields.get("since")
    return f"process {pid} on {host}" + (f" (since {since})" if since else "")


def _try_lock(f, wait: bool) -> bool:
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


@contextlib.contextmanager
def hold(folder: str | os.PathLike | None, *, wait: bool = False,
         what: str = "job folder") -> Iterator[None]:
    """Own ``folder`` (made if missing) while the block runs. Held by another process: raise
    :class:`FolderInUse`, or with ``wait`` block until it is free. ``None``: no folder, no lock."""
    if folder is None:
        yield
        return
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:  # this process holds it already (a single run: main, then the job)
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _release(key)
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAME
    try:
        f = open(path, "a+")  # noqa: SIM115  (held open for as long as the lock)
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not the lock file this package writes there: "
                          f"remove it (rmdir {path}) and rerun") from None
    except OSError as e:
        raise ConfigError(f"cannot open {path} ({e.strerror}): is {folder} a writable folder? "
                          "choose another with hydra.run.dir=...") from None
    try:
        if not _try_lock(f, wait=False):
            if not wait:
                raise FolderInUse(
                    f"{folder} is in use by {_holder(path)}: this {what} has one writer at a "
                    "time; wait for it to end, stop it, or add wait_for_lock=true to wait")
            print(f"waiting for {folder}: in use by {_holder(path)}", file=sys.stderr,
                  flush=True)
            _try_lock(f, wait=True)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid={os.getpid()}\nhost={socket.gethostname()}\n"
                    f"since={time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                    f"command={' '.join(sys.argv)}\n")
            f.flush()
        except OSError as e:  # a full disk, a lock file that is no file
            raise ConfigError(f"cannot write the lock file {path} ({e.strerror}): free space "
                              f"on its disk, or remove it if it is no plain file, or choose "
                              "another folder with hydra.run.dir=...") from None
    except BaseException:
        with contextlib.suppress(OSError):  # its buffer may not be writable either
            f.close()
        raise
    _HELD[key] = [f, 1]
    try:
        yield
    finally:
        _release(key)


def _release(key: str) -> None:
    entry = _HELD[key]
    entry[1] -= 1
    if entry[1] == 0:
        del _HELD[key]
        entry[0].close()  # closing the only descriptor of it releases the lock


def held(folder: str | os.PathLike) -> bool:
    """Whether this process holds ``folder``."""
    return str(Path(folder).resolve()) in _HELD
