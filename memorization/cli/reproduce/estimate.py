"""The wall time of a reproduction, estimated before it runs.

Per sweep, from its first job's composed config: the network's forward floating-point
operations for one sample (``torch.utils.flop_counter`` on the real model), times per epoch 3x
for each training sample (forward and two backward products) and 1x for each evaluated sample
(the training set every epoch, the validation and test sets every
``trainer.check_val_every_n_epoch``), times ``trainer.max_epochs`` (an upper bound: a stop rule
ends most jobs sooner), times the sweep's jobs. Divided by the speed this machine reaches:
half of its fp32 matmul peak, measured here in a fraction of a second (docs/performance.md
measures the framework at about half of peak for MLPs), or by ``--tflops`` given for another
machine. Where sweeps of this reproduction already finished jobs, their measured wall time per
job is printed too, which is the better figure.

Dataset sizes that a config does not state (no ``data.train_size``) are the official splits
(:data:`SPLITS`); ``data.val_size`` is taken out of the training set as the data module does.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from memorization.cli.reproduce.plan import Paper, SweepSpec
from memorization.cli.reproduce.runner import done, record, sweep_folder

# (train, test) of the official splits; digits: the data module's 80/20 split of 1,797
SPLITS = {"digits": (1438, 359), "mnist": (60000, 10000), "fashion_mnist": (60000, 10000),
          "cifar10": (50000, 10000), "cifar100": (50000, 10000), "tiny_imagenet": (100000, 10000),
          "mnist1d": (4000, 1000), "synthetic": (256, 64)}
EFFICIENCY = 0.5


def matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s here (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def _compose(spec: SweepSpec):
    from memorization.jobs.catalog import compose

    first = [f"{k}={v.split(',')[0]}" for k, v in spec.params.items()]
    name = "config" if spec.entry == "memorization.run" else spec.entry.rsplit(".", 1)[1]
    return compose(name, [*spec.overrides, *first])


def job_flops(spec: SweepSpec) -> float:
    """Upper bound of one job's floating-point work (see the module docstring)."""
    import hydra
    from torch.utils.flop_counter import FlopCounterMode

    cfg = _compose(spec)
    net = hydra.utils.instantiate(cfg.model, _convert_="all")
    x = torch.zeros(1, *cfg.data.shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.eval()(x)
    fwd = counter.get_total_flops()
    n_train, n_test = SPLITS.get(cfg.data.source, (0, 0))
    size = cfg.data.get("train_size")
    val = cfg.data.get("val_size") or 0
    val = int(val * n_train) if 0 < val < 1 else int(val)
    n_fit = n_train - val
    if size is not None:
        n_fit = int(size * n_fit) if size <= 1 else min(int(size), n_fit)  # fraction or count
    study = cfg.get("easy_hard") or cfg.get("sensitivity")
    if study is not None:  # a study: n_seeds one-epoch runs (easy_hard), no evaluation sets
        return fwd * 3 * n_fit * study.get("epochs", 1) * study.get("n_seeds", 1)
    epochs = cfg.trainer.get("max_epochs") or 1
    replicas = cfg.trainer.get("replicas") or 1  # stacked seeds: that many networks a job
    every = cfg.trainer.get("check_val_every_n_epoch") or 1  # validation and test sets
    return replicas * fwd * epochs * (3 * n_fit + n_fit + (val + n_test) / every)


def estimate_lines(paper: Paper, scale: str, runs: Path, tflops: float | None = None
                   ) -> list[str]:
    specs = paper.scales[scale].sweeps
    try:
        work = sum(job_flops(s) * s.n_jobs for s in specs)
    except Exception as e:  # an estimate is no reason to fail: say why there is none
        return [f"estimate: none ({type(e).__name__}: {e})"]
    speed = tflops * 1e12 if tflops else EFFICIENCY * matmul_flops()
    where = (f"at {tflops:g} TFLOP/s sustained (small MLP batches reach a fraction of a GPU's "
             f"peak)" if tflops else
             f"at half of this machine's measured fp32 matmul peak ({2 * speed / 1e9:.0f} "
             f"GFLOP/s)")
    lines = [f"estimate: at most {work / 1e15:.3g} PFLOP, {_hours(work / speed)} {where}; "
             f"stop rules end most jobs sooner"]
    timed = [(record(sweep_folder(runs, paper, scale, s)).get("wall_s"),
              done(sweep_folder(runs, paper, scale, s))[0], s) for s in specs]
    per_job = [w / n for w, n, _ in timed if w and n]
    if per_job:
        left = sum(s.n_jobs - n for _, n, s in timed)
        mean = sum(per_job) / len(per_job)
        lines.append(f"measured so far: {mean:.0f} s a job; {left} jobs left, about "
                     f"{_hours(left * mean)}")
    return lines


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
