"""Reading an offline W&B run back from its ``.wandb`` transaction log, for tests."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path


def _records(path: Path):
    """The ``Record`` protos of a ``.wandb`` file: a LevelDB-style log (a 7-byte header ``:W&B``,
    magic, version; 32 KiB blocks of chunks, each crc32 u32, length u16, type u8 (1 full,
    2 first, 3 middle, 4 last) and data; a block's tail shorter than a chunk header is padding)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B transaction log"
    block, pos, chunks = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += block - pos % block
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def _set(tree: dict, item) -> None:
    path = [item.key] if item.key else list(item.nested_key)
    for label in path[:-1]:
        tree = tree.setdefault(label, {})
    tree[path[-1]] = json.loads(item.value_json)


def read_offline_run(save_dir: Path, timeout: float = 30.0) -> dict:
    """The offline run under ``save_dir``: ``history`` (a dict per ``run.log``, media as their
    JSON, e.g. ``{"_type": "table-file", "path": "media/table/...", ...}``), ``summary`` and
    ``config`` (nested dicts, the last value of every key), ``metrics`` (the ``define_metric``
    records in order) and ``files`` (the run's files folder, which media paths are relative to).

    ``wandb.finish()`` can return before wandb-core has written the log out (the file may hold
    just its header for a moment): this waits up to ``timeout`` s for the run's ``exit`` record."""
    (run_dir,) = Path(save_dir).glob("wandb/offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = list(_records(log))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{log} has no exit record after {timeout} s"
        time.sleep(0.05)
    run = {"history": [], "summary": {}, "config": {}, "metrics": [], "files": run_dir / "files",
           "name": None, "group": None}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row: dict = {}
            for item in record.history.item:
                _set(row, item)
            run["history"].append(row)
        elif kind in ("summary", "config"):
            for item in getattr(record, kind).update:
                _set(run[kind], item)
        elif kind == "metric":
            run["metrics"].append(record.metric)
        elif kind == "run":
            run["name"], run["group"] = record.run.display_name, record.run.run_group
    return run


def read_table(run: dict, ref: dict) -> tuple[list[str], list[list]]:
    """Columns and rows of a logged table (its history entry ``ref``)."""
    assert ref["_type"] == "table-file"
    table = json.loads((run["files"] / ref["path"]).read_text())
    return table["columns"], table["data"]
