"""Two jobs at once on a shared CPU, with the thread budget the launcher sets, against the same
two jobs one after the other.

    python benchmarks/parallel.py [--epochs 200] [--model mlp_3x512] [--no-record]

Runs the same two-job sweep (seeds 0 and 1 of the digits job, no epoch-end metrics, no logger)
twice through ``python -m memorization.run -m``: with the default (basic) launcher, one job after
the other, each with torch's default threads; and with ``hydra/launcher=parallel`` (joblib,
``n_jobs=2``), which gives each job cores // 2 threads. Prints both wall times and their ratio
(parallel / sequential: below 1 is a gain) and appends them, dated, with the machine, to
docs/performance.md. Without the thread budget, two 2-thread processes on 2 cores run 5-30x
slower than one (thread oversubscription); the launcher's budget is what this checks.
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

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "docs" / "performance.md"


def sweep(extra: list[str], args, out: Path) -> float:
    cmd = [sys.executable, "-m", "memorization.run", "-m", "seed=0,1", f"model={args.model}",
           "metrics=none", "logger=none", "stop_at_train_acc=null",
           f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false",
           "hydra.callbacks.report.enabled=false", f"hydra.sweep.dir={out}", *extra]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"the sweep failed ({' '.join(extra) or 'basic launcher'}):\n"
                 f"{res.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--model", default="mlp_3x512")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seq = sweep([], args, Path(tmp) / "sequential")
        par = sweep(["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], args,
                    Path(tmp) / "parallel")
    line = (f"two digits jobs ({args.model}, {args.epochs} epochs): one after the other "
            f"{seq:.1f} s, two at once (hydra/launcher=parallel, {os.cpu_count()} cores) "
            f"{par:.1f} s, ratio {par / seq:.2f}")
    print(line)
    if args.no_record:
        return
    import torch

    with PERF.open("a") as f:
        f.write(f"\n### benchmarks/parallel.py, {datetime.date.today()}\n\n"
                f"{os.cpu_count()} cores, torch {torch.__version__}: {line} (wall time of each "
                "`python -m memorization.run -m` command, process starts included).\n")
    print(f"appended to {PERF}")


if __name__ == "__main__":
    main()
