"""Stacked seeds: S replicas of an MLP trained in one process against S runs one after another.

    python benchmarks/stacked.py [--replicas 1 2 4 8 16 32] [--depth 3] [--n-train 10000]
                                 [--modes loop vmap] [--jobs 8] [--no-record]

1. Training throughput, in one process: an epoch of S replicas through the framework
   (memorization/jobs/: its data module, StackedClassifier, Trainer; the per-epoch
   eval-mode accuracy on the training and test sets of every replica) against S epochs of one
   run through the framework (Classifier), on the same data: Fashion-MNIST (the first n_train
   of its 60,000) when Debian's dataset-fashion-mnist is installed, else synthetic data of that
   shape. Ratio = S x (one run's epoch) / (the stacked epoch): above 1 is a gain. Each figure
   is the fastest epoch after a warm-up one; both modes (``loop``: the networks one after
   another in each step; ``vmap``: one batched computation).
2. Whole jobs (``--jobs S``, 0 to skip): ``python -m memorization.run trainer.replicas=S`` on
   the bundled digits against the sweep ``-m seed=0,...,S-1`` run one job after the other,
   wall time of each command (process start, data, set-up and reports included).

Prints the figures and appends them, dated, with the machine, to docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from training import FASHION, OPTIM, PERF, data_module, machine, matmul_peak, timed_fit

from memorization.engine.module import Classifier
from memorization.engine.stacked import StackedClassifier
from memorization.engine.stacked_data import StackedData
from memorization.models import MLP

ROOT = Path(__file__).resolve().parents[1]


def _fit(module, dm, epochs: int, device: torch.device) -> float:
    times = timed_fit(module, dm, epochs, device)
    return min(times[1:] or times)  # the first epoch warms up


def _nets(s: int, depth: int) -> list[MLP]:
    out = []
    for k in range(s):
        torch.manual_seed(k)
        out.append(MLP(in_shape=(1, 28, 28), num_classes=10, depth=depth, width=512))
    return out


def single(depth: int, n_train: int, epochs: int, device, synthetic: bool) -> float:
    return _fit(Classifier(_nets(1, depth)[0], optim=OPTIM), data_module(n_train, synthetic),
                epochs, device)


def stacked(s: int, mode: str, depth: int, n_train: int, epochs: int, device,
            synthetic: bool) -> float:
    dm = StackedData([data_module(n_train, synthetic) for _ in range(s)])
    module = StackedClassifier(_nets(s, depth), optim=OPTIM, num_classes=10, mode=mode)
    return _fit(module, dm, epochs, device)


def jobs(s: int, epochs: int) -> tuple[float, float]:
    """Wall time of one stacked job of S seeds, and of the S-job sweep one after another."""
    common = ["model=mlp_3x512", "metrics=none", "logger=none", "stop_at_train_acc=null",
              f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
              "hydra.callbacks.report.enabled=false"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for extra in ([f"trainer.replicas={s}", f"hydra.run.dir={tmp}/stacked"],
                      ["-m", f"seed={','.join(map(str, range(s)))}",
                       f"hydra.sweep.dir={tmp}/sweep"]):
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "memorization.run", *extra, *common],
                                 cwd=ROOT, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            if res.returncode != 0:
                sys.exit(f"the job failed ({' '.join(extra)}):\n{res.stderr[-2000:]}")
    return times[0], times[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2, help="the first one is a warm-up")
    ap.add_argument("--modes", nargs="+", default=["loop", "vmap"])
    ap.add_argument("--jobs", type=int, default=8, help="S of the whole-job comparison; 0: skip")
    ap.add_argument("--job-epochs", type=int, default=30)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    peak = matmul_peak(device)
    one = single(args.depth, args.n_train, args.epochs, device, args.synthetic)
    data = "synthetic" if args.synthetic or not FASHION.is_dir() else "fashion_mnist"
    lines = [f"fp32 matmul peak {peak:.0f} GFLOP/s; one run's epoch (MLP {args.depth}x512, "
             f"{data} {args.n_train} train): {one:.2f} s"]
    rows = []
    for s in args.replicas:
        cells = []
        for mode in args.modes:
            t = stacked(s, mode, args.depth, args.n_train, args.epochs, device, args.synthetic)
            cells.append((mode, t, s * one / t))
        rows.append((s, cells))
        lines.append(f"S={s:>2}: " + "; ".join(f"{m} {t:.2f} s, {r:.2f}x" for m, t, r in cells))
    job_line = ""
    if args.jobs:
        t_stack, t_seq = jobs(args.jobs, args.job_epochs)
        job_line = (f"whole jobs, digits MLP 3x512, {args.job_epochs} epochs: trainer.replicas="
                    f"{args.jobs} {t_stack:.1f} s, {args.jobs} jobs one after another "
                    f"{t_seq:.1f} s, ratio {t_seq / t_stack:.2f}x")
        lines.append(job_line)
    print("\n".join(lines))
    if args.no_record:
        return
    head = "| S | " + " | ".join(f"{m} epoch | {m} speed-up" for m in args.modes) + " |"
    table = [head, "| --- " * (1 + 2 * len(args.modes)) + "|"]
    table += ["| " + " | ".join([str(s)] + [f"{t:.2f} s | {r:.2f}x" for _, t, r in cells]) + " |"
              for s, cells in rows]
    entry = (f"\n### benchmarks/stacked.py, {datetime.date.today()}\n\n{machine(device)}; fp32 "
             f"matmul peak {peak:.0f} GFLOP/s; MLP {args.depth}x512, Adam, batch 128, {data} "
             f"{args.n_train} train; one run's epoch {one:.2f} s; speed-up = S x that / the "
             "stacked epoch (an epoch = training + eval-mode accuracy on the training and test "
             "sets of every replica, after a warm-up epoch).\n\n" + "\n".join(table) + "\n"
             + (f"\n{job_line} (wall time of each command).\n" if job_line else ""))
    with PERF.open("a") as f:
        f.write(entry)
    print(f"appended to {PERF}")


if __name__ == "__main__":
    main()
