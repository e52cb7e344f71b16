"""What stacking buys the scores job: M models trained one at a time against M models trained
S at a time (``engine.fit_stacked``, loop and vmap), the work of ``python -m
memorization.scores``.

    python benchmarks/scores.py [--models 20] [--stack 10] [--epochs 5] [--n 1000] [--device cpu]

Each model is an MLP 3x512 on 8x8 inputs (the digits default), Adam lr 1e-3, batches of 128,
on its own random subset of ``--n`` synthetic examples with its own batch order:

1. one at a time: ``engine.fit_network`` per model (the baseline, a Trainer per model);
2. ``--stack`` at a time, loop mode: one ``engine.fit_stacked`` per chunk (the networks one
   after another inside each step; bitwise the same models as 1);
3. ``--stack`` at a time, vmap mode: the same chunks as one batched computation per step.

Printed: seconds per model and each one's ratio to (1), measured in this one process. Nothing
is recorded: the figures go into docs/performance.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch

torch.set_flush_denormal(True)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")

from memorization.engine import trainer as engine  # noqa: E402
from memorization.engine.optim import OptimConfig  # noqa: E402
from memorization.models import MLP  # noqa: E402

OPTIM = OptimConfig(_target_="torch.optim.Adam", lr=1e-3)


def _nets(models: list[int], device) -> list[MLP]:
    out = []
    for k in models:
        torch.manual_seed(k)
        out.append(MLP(in_shape=(1, 8, 8), num_classes=10, depth=3, width=512).to(device))
    return out


def _subsets(n: int, models: list[int], device) -> torch.Tensor:
    m = round(0.7 * n)
    return torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(k))[:m]
                        for k in models]).to(device)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_at_a_time(x, y, models, epochs, device) -> float:
    subsets = _subsets(len(y), models, device)
    t = time.perf_counter()
    for k, net in zip(models, _nets(models, device), strict=True):
        sub = subsets[models.index(k)]
        engine.fit_network(net, OPTIM, x[sub], y[sub], epochs=epochs, batch_size=128,
                           order=engine.seeded_orders(len(sub), 1000 + k))
    _sync(device)
    return time.perf_counter() - t


def stacked(x, y, models, epochs, stack, mode, device) -> float:
    t = time.perf_counter()
    for i in range(0, len(models), stack):
        chunk = models[i:i + stack]
        subsets = _subsets(len(y), chunk, device)
        engine.fit_stacked(_nets(chunk, device), OPTIM, x, y, subsets, epochs=epochs,
                           batch_size=128, mode=mode,
                           orders=[engine.seeded_orders(subsets.shape[1], 1000 + k)
                                   for k in chunk])
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--stack", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, 1, 8, 8, generator=g).to(device)
    y = torch.randint(0, 10, (a.n,), generator=g).to(device)
    models = list(range(a.models))
    stacked(x, y, models[:2], 1, 2, "loop", device)  # warm-up: imports, first kernels
    base = one_at_a_time(x, y, models, a.epochs, device)
    rows = [("one at a time (baseline)", base)]
    for mode in ("loop", "vmap"):
        rows.append((f"{a.stack} at a time, {mode}",
                     stacked(x, y, models, a.epochs, a.stack, mode, device)))
    print(f"scores job: {a.models} MLPs 3x512, {a.epochs} epochs on {round(0.7 * a.n)} of "
          f"{a.n} examples each, on {device} ({torch.get_num_threads()} threads)")
    for name, sec in rows:
        print(f"  {name:28s} {sec / a.models:7.3f} s/model  {base / sec:5.2f}x the baseline's "
              "speed")


if __name__ == "__main__":
    main()
