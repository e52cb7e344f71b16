"""The benchmark scripts still run (tiny sizes, nothing recorded; no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_training_benchmark_runs_and_prints_its_figures():
    res = subprocess.run([sys.executable, "benchmarks/training.py", "--no-record", "--synthetic",
                          "--n-train", "600", "--depths", "1", "--epochs", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fp32 matmul peak" in res.stdout
    assert "MLP 1x512, synthetic 600 train" in res.stdout and "ratio" in res.stdout


@pytest.mark.slow
def test_parallel_benchmark_runs_both_sweeps():
    res = subprocess.run([sys.executable, "benchmarks/parallel.py", "--no-record", "--epochs",
                          "1", "--model", "mlp"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "one after the other" in res.stdout and "two at once" in res.stdout


@pytest.mark.slow
def test_stacked_benchmark_runs_both_modes_and_whole_jobs():
    res = subprocess.run([sys.executable, "benchmarks/stacked.py", "--no-record", "--synthetic",
                          "--n-train", "600", "--depth", "1", "--replicas", "1", "2",
                          "--jobs", "2", "--job-epochs", "1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "one run's epoch (MLP 1x512, synthetic 600 train)" in res.stdout
    assert "S= 2: loop" in res.stdout and "vmap" in res.stdout
    assert "trainer.replicas=2" in res.stdout and "2 jobs one after another" in res.stdout


def test_scores_benchmark_compares_chunks_with_one_at_a_time():
    res = subprocess.run([sys.executable, "benchmarks/scores.py", "--models", "4", "--stack",
                          "2", "--epochs", "1", "--n", "200"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "one at a time (baseline)" in res.stdout and "2 at a time, vmap" in res.stdout


@pytest.mark.slow
def test_gpu_check_runs_quick_on_a_cpu_and_resumes(tmp_path):
    """`QUICK=1 make bench-gpu`: every part at tiny sizes on the CPU; a second run finds each
    part's output and runs nothing again."""
    env = {**os.environ, "QUICK": "1", "RESULTS": str(tmp_path), "PY": sys.executable,
           "OMP_NUM_THREADS": "2"}
    res = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, capture_output=True,
                         text=True, timeout=400, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    parts = ("tests", "training", "stacked", "metrics", "syncs", "scores")
    assert all((tmp_path / f"{p}.txt").stat().st_size > 0 for p in parts)
    assert "host syncs in" in (tmp_path / "syncs.txt").read_text()
    again = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env=env)
    assert again.returncode == 0
    assert again.stdout.count("(done in an earlier run)") == len(parts)
