"""One live process per folder, and nothing lost around it: a second process on a live job or
sweep folder refuses (or waits), a lock dies with its holder, a killed parallel sweep leaves no
worker behind and resumes to the uninterrupted sweep's metrics, a moved folder resumes, and a
finite but exploding loss fails the job. Subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memorization.loggers.history import read_history
from tests.conftest import run_cli

QUICK = ["data=synthetic", "logger=none", "trainer.accelerator=cpu", "metrics=none",
         "trainer.enable_progress_bar=false", "stop_at_train_acc=null"]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "PYTHONWARNINGS": "ignore"}
KEYS = ["epoch", "split", "layer", "metric"]


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "memorization.run", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _wait_for(what, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        assert proc is None or proc.poll() is None, "the process ended too soon"
        time.sleep(0.05)


def _epochs(folder: Path) -> int:
    """The last epoch in the folder's history.csv (0: none yet)."""
    hist = folder / "history.csv"
    epochs = read_history(hist)["epoch"] if hist.is_file() else []
    return int(epochs.max()) if len(epochs) else 0


def _each_row_once(folder: Path) -> bool:
    return not read_history(folder / "history.csv").duplicated(KEYS).any()


@pytest.mark.slow
def test_a_second_process_refuses_or_waits_and_the_lock_dies_with_its_holder(tmp_path):
    """A runs; B (the same command) refuses in one line naming A's PID and host and writes
    nothing; C (wait_for_lock=true) waits; A is killed with -9: C gets the folder at once (no
    stale lock), resumes and finishes, and the history holds each row once."""
    out = tmp_path / "job"
    args = [*QUICK, "trainer.max_epochs=1200", f"hydra.run.dir={out}"]
    a = _start(args, tmp_path, tmp_path / "a.err")
    try:
        _wait_for(lambda: _epochs(out) >= 3, proc=a)
        before = sorted(p.name for p in out.iterdir())
        b = run_cli(args, cwd=tmp_path)
        assert b.returncode == 2
        err = b.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"error: {out} is in use by process {a.pid} on {socket.gethostname()} (since ")
        assert "wait_for_lock=true" in err[0]
        assert sorted(p.name for p in out.iterdir()) == before and not (out / "FAILED").exists()
        c_log = tmp_path / "c.err"
        c = _start([*args, "wait_for_lock=true"], tmp_path, c_log)
        _wait_for(lambda: "waiting for" in c_log.read_text(), proc=c)
        assert a.poll() is None, "A ended before it could be killed: raise max_epochs"
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()
    assert c.wait(timeout=300) == 0, c_log.read_text()[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1200 and _epochs(out) == 1200 and _each_row_once(out)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _finals(sweep: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "metrics.json").read_text())["final"]
            for d in sorted(sweep.iterdir()) if (d / "metrics.json").is_file()}


@pytest.mark.slow
def test_kill_9_of_a_parallel_sweep_leaves_no_worker_and_the_rerun_matches(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    args = ["-m", "hydra/launcher=parallel", *QUICK, "trainer.max_epochs=400",
            "noise.p=0,0.4", "model.dropout=0.2"]  # dropout: the RNG state resumes too
    straight = tmp_path / "straight"
    res = run_cli([*args, f"hydra.sweep.dir={straight}"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    sweep = tmp_path / "sweep"
    parent = _start([*args, f"hydra.sweep.dir={sweep}"], tmp_path, tmp_path / "sweep.err")
    workers: set[int] = set()
    try:
        _wait_for(lambda: all(_epochs(sweep / j) >= 3 for j in ("0", "1")), proc=parent)
        workers = _descendants(parent.pid)
        # the sweep folder has one owner too: a second launch of it refuses
        again = run_cli([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
        assert again.returncode == 2 and f"in use by process {parent.pid}" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert workers, "no worker process was found"
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "a worker outlived its launcher"
    assert not (sweep / "0" / "metrics.json").exists() or not (sweep / "1" /
                                                               "metrics.json").exists()
    res = run_cli([*args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _finals(sweep) == _finals(straight) and len(_finals(sweep)) == 2
    assert all(_each_row_once(sweep / j) for j in ("0", "1"))


@pytest.mark.slow
def test_a_moved_folder_resumes_to_identical_metrics(tmp_path):
    """Killed after a checkpoint, the folder moved elsewhere: the same command with the new
    folder resumes there (its old path is no setting) and ends where an uninterrupted run
    does."""
    args = [*QUICK, "trainer.max_epochs=300", "model.dropout=0.2"]
    straight = tmp_path / "straight"
    assert run_cli([*args, f"hydra.run.dir={straight}"], cwd=tmp_path).returncode == 0
    first = tmp_path / "first"
    proc = _start([*args, f"hydra.run.dir={first}"], tmp_path, tmp_path / "first.err")
    try:
        _wait_for(lambda: _epochs(first) >= 3 and (first / "checkpoints/last.ckpt").is_file(),
                  proc=proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)
    res = run_cli([*args, f"hydra.run.dir={moved}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming {moved}" in res.stdout
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((moved / "metrics.json").read_text())
    assert b["final"] == a["final"] and b["epochs"] == a["epochs"] == 300
    assert _each_row_once(moved)


@pytest.mark.slow
def test_an_exploding_finite_loss_fails_the_job_in_one_line(tmp_path):
    """Adam at lr=1e6: the loss stays finite (about 1e30) but is no learning curve; the job
    fails with one line and FAILED. max_ratio=null lets such a run go on."""
    out = tmp_path / "job"
    res = run_cli([*QUICK, "optim=adam", "optim.lr=1e6", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the training loss rose to ")
    assert "callbacks.divergence.max_ratio=1e+06 times its first step's" in err[0]
    assert (out / "FAILED").is_file() and not (out / "metrics.json").exists()
    res = run_cli([*QUICK, "optim=adam", "optim.lr=1e6", "trainer.max_epochs=2",
                   "callbacks.divergence.max_ratio=null", f"hydra.run.dir={tmp_path / 'on'}"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_lock_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """A .lock that is a folder, and a disk that fills while the lock is written (its flush
    and then its close fail with ENOSPC): one ConfigError line each, no chained traceback."""
    import errno
    import io

    from memorization.base import folder_lock
    from memorization.base.errors import ConfigError

    (tmp_path / "a" / ".lock").mkdir(parents=True)
    with pytest.raises(ConfigError) as err, folder_lock.hold(tmp_path / "a"):
        pass
    assert str(err.value) == (f"{tmp_path / 'a' / '.lock'} is a folder, not the lock file this "
                              f"package writes there: remove it (rmdir "
                              f"{tmp_path / 'a' / '.lock'}) and rerun")

    class Full(io.StringIO):
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folder_lock, "open", lambda *a, **k: Full(), raising=False)
    monkeypatch.setattr(folder_lock, "_try_lock", lambda f, wait: True)
    full = r"cannot write the lock file .*\(No space left on device\): free space on its disk"
    with pytest.raises(ConfigError, match=full) as err, folder_lock.hold(tmp_path / "b"):
        pass
    assert err.value.__context__ is None or err.value.__suppress_context__
