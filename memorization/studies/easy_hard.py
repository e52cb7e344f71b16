"""``python -m memorization.easy_hard``: Arpit et al.'s easy and hard examples (Sec. 3.1, Fig. 1).

The paper: "for each setting (real data, randX, randY), we train an MLP for a single epoch
starting from 100 different random initializations and shufflings of the data", and Fig. 1 shows
the "average (over 100 experiments) misclassification rate for each of 1000 examples after one
epoch of training", sorted, with "1000 points samples from a binomial distribution with n=100 and
p equal to the average estimated P(correct) for randX". Its MLPs (Sec. 2): 2 hidden layers of
4096 ReLU units, SGD with learning rate 0.01; the batch size is not stated.

Our reading and choices. The examples scored are the training examples (``split=train``), each
against its training label (the random one under randY): how well one epoch fits them. Run k
(k = 0..N-1) draws its weights and its batch order from seed ``seed + k``; the data (its
subset and its corruption) is the same for every run. Each run trains with the project's model
and optimizer settings (``model``, ``optim``, ``data.batch_size``), trained by the engine's
``fit_network`` over the DataModule's tensors, sequentially in one process.

The reference curve. With N runs and mean error rate p (the measured one, per job), if every
example's error count were independently Binomial(N, p), the per-example rates sorted
ascending would be the order statistics of n such draws divided by N. We draw the *expected*
order statistics, computed exactly rather than simulated:

    E[X_(k)] = sum_{x=1..N} P(X_(k) >= x) = sum_{x=1..N} P(#{i: X_i <= x-1} <= k-1)
             = sum_{x=1..N} BinomCDF(k-1; n, F(x-1)),    F the Binomial(N, p) CDF,

so the curve is deterministic, and its mean is exactly p (the order statistics sum to the sum
of the draws, whose expectation is n N p). Where the paper draws one binomial reference at
randX's mean, every job here gets its own, at its own mean.

Writes into the job folder: ``rates.csv`` (per example: index in the DataModule's split, labels,
corrupted, errors out of N, rate), ``easy_hard.png`` (the sorted rates and the reference, as
Fig. 1), ``metrics.json``; a sweep also gets ``easy_hard.png`` in its folder with every job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from memorization.base.io import say, write_json_atomic
from memorization.config.studies import SPLITS, EasyHardConfig  # noqa: F401  (re-exported)
from memorization.engine import trainer as engine
from memorization.studies import common


def binomial_reference(n_examples: int, n_runs: int, p: float) -> np.ndarray:
    """The expected ascending order statistics of ``n_examples`` independent Binomial(n_runs,
    p) error counts, divided by ``n_runs`` (module docstring); their mean is p."""
    from scipy.stats import binom

    if not 0 <= p <= 1:
        raise ValueError(f"p={p} must be in [0, 1]")
    counts = np.arange(n_runs)  # x - 1 for x = 1..N
    below = binom.cdf(counts, n_runs, p)  # F(x - 1) = P(X <= x - 1)
    k = np.arange(n_examples)[:, None]  # k - 1 for k = 1..n
    expected = binom.cdf(k, n_examples, below[None, :]).sum(axis=1)
    return expected / n_runs


def train_one(net: torch.nn.Module, optim, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, epochs: int, seed: int) -> torch.nn.Module:
    """``epochs`` epochs of minibatch training with cross-entropy (engine.fit_network), batches
    in an order drawn from ``seed`` (a fresh permutation per epoch); the schedule, if any, steps
    per epoch. ``optim``: an ``optim.OptimConfig``, or its ``build``."""
    return engine.fit_network(net, optim, x, y, epochs=epochs, batch_size=batch_size, seed=seed)


def errors_of(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              batch_size: int = 4096) -> torch.Tensor:
    """1 where the network (eval mode) misclassifies an example, else 0."""
    return (engine.predict(net, x, batch_size) != y).long()


def error_counts(make_net: Callable[[int], torch.nn.Module], optim,
                 train: tuple[torch.Tensor, torch.Tensor], score: tuple[torch.Tensor, torch.Tensor],
                 seeds: list[int], batch_size: int, epochs: int,
                 progress: bool = False) -> torch.Tensor:
    """For each scored example, in how many of the runs (one per seed: a network from
    ``make_net(seed)`` trained on ``train``) it is misclassified afterwards."""
    counts = torch.zeros(len(score[1]), dtype=torch.long, device=score[1].device)
    bar = tqdm(seeds, desc="seeds", unit="run", disable=not progress, dynamic_ncols=True)
    for done, s in enumerate(bar, start=1):
        net = train_one(make_net(s), optim, *train, batch_size, epochs, s)
        counts += errors_of(net, *score)
        bar.set_postfix(mean_error=f"{float(counts.sum()) / (len(counts) * done):.3f}")
    return counts


def run(cfg: DictConfig) -> dict:
    from memorization.jobs.validate import build

    ec: EasyHardConfig = common.validate_study(cfg, "easy_hard")
    common.apply_job_threads(cfg)
    device, out, started = common.device_of(ec.device), common.output_dir(), time.time()
    data = common.load_examples(cfg, "train", ec.image_size, device)
    scored = data if ec.split == "train" else common.load_examples(
        cfg, "test", ec.image_size, device)
    k = int(data["num_classes"])
    optim = build(cfg, "optim")
    seeds = [cfg.seed + i for i in range(ec.n_seeds)]

    def make_net(seed: int) -> torch.nn.Module:
        return common.build_net(cfg, data["x"].shape[1:], k, device, seed=seed)

    params = sum(p.numel() for p in make_net(seeds[0]).parameters())
    say(f"easy and hard examples: {ec.n_seeds} runs of {ec.epochs} epoch(s) on "
        f"{cfg.data.source} ({len(data['y'])} training examples {list(data['x'].shape[1:])}, "
        f"{int(data['corrupted'].sum())} corrupted, noise {cfg.noise.name} p={cfg.noise.p}); "
        f"{params} parameters, {optim._target_} lr={optim.lr}, batch {cfg.data.batch_size}; "
        f"scoring the {len(scored['y'])} {ec.split} examples")
    counts = error_counts(make_net, optim, (data["x"], data["y"]),
                          (scored["x"], scored["y"]), seeds, cfg.data.batch_size, ec.epochs,
                          progress=True).cpu()
    rates = counts.double() / ec.n_seeds
    p = float(rates.mean())
    ref = binomial_reference(len(rates), ec.n_seeds, p)
    cpu = {key: v.cpu() for key, v in scored.items()}
    common.write_csv(out / "rates.csv", pd.DataFrame({
        "index": cpu["index"].numpy(), "label": cpu["y"].numpy(),
        "true_label": cpu["y_true"].numpy(), "corrupted": cpu["corrupted"].numpy(),
        "errors": counts.numpy(), "rate": rates.numpy()}))
    ordered = np.sort(rates.numpy())
    label = common.job_label(out)
    _figure(out / "easy_hard.png", [(label, ordered, ref)], ec)
    summary = {
        "n_seeds": ec.n_seeds, "epochs": ec.epochs, "split": ec.split,
        "n_examples": len(rates), "corrupted": int(cpu["corrupted"].sum()),
        "noise": cfg.noise.name, "noise_p": float(cfg.noise.p), "mean_error": p,
        "std_rate": float(rates.std(unbiased=False)), "reference_std": float(ref.std()),
        "always_correct": float((counts == 0).double().mean()),
        "always_wrong": float((counts == ec.n_seeds).double().mean()),
        # the mean gap between the sorted rates and the reference curve: 0 when every example
        # is as hard as every other (up to binomial noise)
        "distance_to_reference": float(np.abs(ordered - ref).mean()),
        "seconds": round(time.time() - started, 2)}
    common.log_to_wandb(cfg, out, "rank", [
        {"rank": i, "rate_sorted": float(r), "binomial_reference": float(b)}
        for i, (r, b) in enumerate(zip(ordered, ref, strict=True))],
        [out / "easy_hard.png"], summary)
    write_json_atomic(out / "metrics.json", summary)  # last: the job is finished
    say(f"mean misclassification {p:.3f}, spread of the rates {summary['std_rate']:.3f} "
        f"(binomial reference {summary['reference_std']:.3f}); outputs: {out}")
    return summary


def _figure(path: Path, curves: list[tuple[str, np.ndarray, np.ndarray]],
            ec: EasyHardConfig | None = None) -> None:
    fig, (ax,) = common.new_figure(width=6.5)
    for i, (label, ordered, ref) in enumerate(curves):
        color = f"C{i}"
        ax.plot(np.arange(len(ordered)), ordered, color=color, label=label)
        ax.plot(np.arange(len(ref)), ref, color=color, ls=":", alpha=0.8,
                label=f"binomial reference (p={ordered.mean():.3f})")
    runs = f" over {ec.n_seeds} runs of {ec.epochs} epoch(s)" if ec else ""
    ax.set(xlabel="examples, sorted by misclassification rate",
           ylabel=f"misclassification rate{runs}", ylim=(-0.02, 1.02),
           title="easy and hard examples")
    ax.legend(fontsize=8)
    common.save_figure(fig, path)


def sweep_figure(sweep_dir: Path) -> Path | None:
    """Every finished job's sorted rates with its reference, in one figure (Fig. 1)."""
    import json

    curves = []
    for job in common.finished_jobs(sweep_dir, "rates.csv"):
        rates = pd.read_csv(job / "rates.csv")
        n_seeds = json.loads((job / "metrics.json").read_text())["n_seeds"]
        ordered = np.sort(rates["rate"].to_numpy())
        curves.append((common.job_label(job), ordered,
                       binomial_reference(len(ordered), n_seeds, float(ordered.mean()))))
    if not curves:
        return None
    path = sweep_dir / "easy_hard.png"
    _figure(path, curves)
    return path
