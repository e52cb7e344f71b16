"""The benchmark scripts still run (tiny sizes, nothing recorded; no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_training_benchmark_runs_and_prints_its_figures():
    res = subprocess.run([sys.executable, "benchmarks/training.py", "--no-record", "--synthetic",
                          "--n-train", "600", "--depths", "1", "--epochs", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fp32 matmul peak" in res.stdout
    assert "MLP 1x512, synthetic 600 train" in res.stdout and "ratio" in res.stdout


def test_parallel_benchmark_runs_both_sweeps():
    res = subprocess.run([sys.executable, "benchmarks/parallel.py", "--no-record", "--epochs",
                          "1", "--model", "mlp"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "one after the other" in res.stdout and "two at once" in res.stdout


def test_stacked_benchmark_runs_both_modes_and_whole_jobs():
    res = subprocess.run([sys.executable, "benchmarks/stacked.py", "--no-record", "--synthetic",
                          "--n-train", "600", "--depth", "1", "--replicas", "1", "2",
                          "--jobs", "2", "--job-epochs", "1"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "one run's epoch (MLP 1x512, synthetic 600 train)" in res.stdout
    assert "S= 2: loop" in res.stdout and "vmap" in res.stdout
    assert "trainer.replicas=2" in res.stdout and "2 jobs one after another" in res.stdout
