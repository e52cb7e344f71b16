"""Outputs: files written atomically (a reader, or a crash, never sees a half-written file under
its final name), and text for the researcher, shown on the terminal and kept in the job's log."""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renamed over ``path`` when the block ends
    without an error, removed otherwise (raise inside the block to drop what was written).
    The name ``.<name>.<pid>.<random>.tmp<suffix>`` is unique to the writer (two processes, or
    threads, writing the same file never share one) and hidden; ``suffix`` is for a check that
    reads the file by its extension (a ``.gz`` download)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json_object(path: str | os.PathLike) -> tuple[dict | None, str]:
    """A JSON file that should hold one object (``metrics.json``): ``(the dict, "")``, or
    ``(None, what is wrong)`` when it is missing, unreadable, not JSON or not an object. Written
    atomically, such a file is damaged only by something else writing it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    except UnicodeDecodeError:
        return None, "not text (binary bytes)"
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg} at line {e.lineno})"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    return obj, ""


_FILE_LOG = logging.getLogger("memorization.file")  # run.log only (conf/hydra/job_logging)


def say(text: str) -> None:
    """Print ``text`` and copy it into the job's run.log (when Hydra set up logging)."""
    print(text, flush=True)
    _FILE_LOG.info(text)


def pct(v, none: str = "–", width: int = 0) -> str:
    """A fraction as a percentage with one decimal (``0.412`` -> ``41.2%``), right-aligned in
    ``width``; ``none`` for a missing or NaN value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none.rjust(width)
    return f"{100 * v:{width}.1f}%"


def flat_keys(node: dict, prefix: str = "") -> dict:
    """A nested dict as one level, keys joined by "/" (``{"a": {"b": 1}}`` -> ``{"a/b": 1}``)."""
    out = {}
    for key, value in node.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out |= flat_keys(value, name)
        else:
            out[name] = value
    return out


def conf_dir() -> str:
    """conf/ beside the package in a checkout (or editable install), inside it in a wheel."""
    here = Path(__file__).resolve().parents[1]  # the package
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no conf/config.yaml next to {here}; reinstall the package")
