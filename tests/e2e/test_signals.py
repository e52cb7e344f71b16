"""A signal is never a success: SIGTERM (a scheduler's time limit, a preemption) and SIGINT
(Ctrl-C) end a run and a scores job with 128 + the signal's number and one line saying the
folder is unfinished and how to resume it; nothing in the folder reads as finished, and the
same command then resumes to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from memorization.jobs.folder import LAST, job_state
from tests.conftest import ROOT

RUN = ["model.depth=1", "model.width=16", "data.train_size=200", "stop_at_train_acc=null",
       "trainer.max_epochs=400", "logger=none", "metrics=none",
       "trainer.enable_progress_bar=false"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _start(args, folder, module="memorization.run"):
    return subprocess.Popen([sys.executable, "-m", module, *args, f"hydra.run.dir={folder}"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(path, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"no {path} in {seconds} s"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_exits_non_zero_and_resumes(tmp_path, sig):
    folder = tmp_path / "run"
    proc = _start(RUN, folder)
    _wait_for(folder / LAST, proc)  # a checkpoint: some epochs trained
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    lines = [x for x in err.splitlines() if x.startswith("interrupted by")]
    assert lines == [f"interrupted by {sig.name}: {folder} is unfinished; rerun the same "
                     "command to resume it"], err[-2000:]
    assert job_state(folder) == "resumable"
    again = subprocess.run([sys.executable, "-m", "memorization.run",
                            *RUN[:-2], "trainer.max_epochs=6", "logger=none",
                            "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}"],
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert job_state(folder) == "finished" and not metrics["interrupted"]


def test_a_signalled_scores_job_exits_non_zero(tmp_path):
    folder = tmp_path / "scores"
    args = ["data.train_size=200", "scores.models=40", "scores.epochs=30", "scores.device=cpu",
            "scores.mode=loop", "logger=none", "trainer.replicas=1"]
    proc = _start(args, folder, "memorization.scores")
    _wait_for(folder / "summary.json", proc)  # a chunk landed
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert f"interrupted by SIGTERM: {folder} is unfinished" in err
    assert not (folder / "metrics.json").exists()


def test_a_signalled_reproduction_exits_non_zero(tmp_path):
    """python -m memorization.reproduce, stopped by a scheduler while its first sweep runs:
    143, one line, its running sweep stopped with it."""
    proc = subprocess.Popen([sys.executable, "-m", "memorization.reproduce", "zhang", "--scale",
                             "smoke", "--runs", str(tmp_path)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("zhang/smoke/*/0/config_resolved.yaml")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert (f"interrupted by SIGTERM: the reproduction (its finished jobs under {tmp_path} are "
            "kept) is unfinished; rerun the same command to resume it") in err
    assert "Traceback" not in err


def test_a_signalled_parallel_sweep_exits_non_zero(tmp_path):
    """SIGTERM to a sweep's command while its joblib workers train: 143 and one line naming
    the sweep folder; its workers end with it."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "memorization.run", "-m",
                             "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *RUN,
                             "noise.p=0,0.2", f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(sweep / "0" / LAST, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert f"interrupted by SIGTERM: the sweep {sweep} is unfinished" in err
    assert "Traceback" not in err
    time.sleep(2)  # the workers notice their launcher is gone
    left = subprocess.run(["pgrep", "-f", str(sweep)], capture_output=True, text=True).stdout
    assert not left.strip()
