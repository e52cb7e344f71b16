"""Training overhead and hardware use, in one process.

    python benchmarks/training.py [--depth 10] [--n-train 55000] [--epochs 2] [--device cpu]

1. Overhead: epochs of an MLP (default 10x512, Adam, batch 128, cross-entropy) on n_train x 784
   inputs through the framework (its Trainer set-up, DataModule, Classifier, with the per-epoch
   eval-mode accuracy on the training and the test set, metrics and checkpoints off) against a
   plain PyTorch loop over the same tensors, model, seed and batch order with the same per-epoch
   evaluation. Data: Fashion-MNIST (data.train_size of its 60,000) when Debian's
   dataset-fashion-mnist is installed, else synthetic data of that shape. Target: <= 1.05.
2. Hardware use: the epoch's floating-point work (training: 6 x multiply-adds per sample, the
   forward pass and the two backward products; evaluation: 2 x per sample) per second, against
   the fp32 matmul peak measured here (4096 x 4096 products). Target: >= 60% (MLP 3x512, 10x512).

Each epoch is timed after the first (warm-up) one: from the start of the training epoch to the
end of its evaluation. Prints the figures and appends them, dated, with the machine, to
docs/performance.md (``--no-record``: print only).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

torch.set_flush_denormal(True)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its set-up lines: noise here

from memorization.base import accel  # noqa: E402
from memorization.data import DataModule  # noqa: E402
from memorization.engine.module import Classifier  # noqa: E402
from memorization.engine.optim import OptimConfig  # noqa: E402
from memorization.models import MLP  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
PERF = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
# as the framework builds it (memorization/engine/optim.py: a fused step where the class has one)
OPTIM = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int = 4096, reps: int = 5) -> float:
    """fp32 GFLOP/s of n x n products (the best of ``reps``, after one warm-up)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def data_module(n_train: int, synthetic: bool) -> DataModule:
    shape = (1, 28, 28)
    if FASHION.is_dir() and not synthetic:
        kw = {"source": "fashion_mnist", "source_options": {"download": False}}
    else:
        kw = {"source": "synthetic", "source_options": {"n_train": n_train, "n_test": 10000,
                                                        "num_classes": 10, "shape": shape}}
    train_size = None if kw["source"] == "synthetic" else n_train
    return DataModule(shape=shape, num_classes=10, batch_size=128, eval_batch_size=4096,
                      train_size=train_size, noise={"name": "none"}, **kw)


class _EpochTimer(L.Callback):
    """Wall time from each training epoch's start to the end of its evaluation."""

    def __init__(self, device: torch.device):
        self.device, self.times, self._t = device, [], 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        sync(self.device)
        self._t = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            sync(self.device)
            self.times.append(time.perf_counter() - self._t)


def framework(depth: int, n_train: int, epochs: int, device: torch.device, synthetic: bool,
              precision: str = "32-true", matmul: str | None = None,
              compile: bool | str = False):
    """The framework's epochs; ``precision``, ``matmul`` and ``compile``: the speed options
    (trainer.precision, trainer.matmul_precision, trainer.compile; memorization/base/accel.py)."""
    torch.manual_seed(0)
    dm = data_module(n_train, synthetic)
    net = MLP(in_shape=(1, 28, 28), num_classes=10, depth=depth, width=512)
    module = Classifier(net, optim=OPTIM)
    module.compile_steps(compile)
    accel.apply_matmul_precision(matmul)
    try:
        return timed_fit(module, dm, epochs, device, precision), dm, net
    finally:
        accel.apply_matmul_precision(None)


def timed_fit(module: L.LightningModule, dm, epochs: int, device: torch.device,
              precision: str = "32-true") -> list[float]:
    """Each epoch's time (training + evaluation) of fitting ``module`` on ``dm``; no logger,
    checkpoint, progress bar or summary."""
    timer = _EpochTimer(device)
    trainer = L.Trainer(max_epochs=epochs, accelerator=device.type, devices=1, logger=False,
                        precision=precision,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        use_distributed_sampler=False, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.times


def plain(depth: int, dm: DataModule, epochs: int, device: torch.device) -> list[float]:
    """The same model, seed, tensors and batch order, in a bare loop."""
    from memorization.data.datamodule import EpochBatchSampler

    torch.manual_seed(0)
    net = MLP(in_shape=(1, 28, 28), num_classes=10, depth=depth, width=512).to(device)
    opt, _ = OptimConfig.from_dict(OPTIM).build(net.parameters())  # the framework's optimizer
    tr, te = dm.splits["train"].tensors, dm.splits["test"].tensors
    x, y = tr["x"].to(device), tr["y"].to(device)
    xt, yt = te["x"].to(device), te["y"].to(device)
    sampler = EpochBatchSampler(len(y), 128, shuffle=True, seed=dm.cfg.shuffle_seed)
    times = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        sync(device)
        t = time.perf_counter()
        net.train()
        for idx in sampler:
            idx = idx.to(device)
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            for xs, ys in ((x, y), (xt, yt)):
                hits = sum(int((net(xb).argmax(1) == yb).sum())
                           for xb, yb in zip(xs.split(4096), ys.split(4096), strict=True))
                _ = hits / len(ys)
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def epoch_flops(net: torch.nn.Module, n_train: int, n_test: int) -> float:
    """Multiply-adds of the linear layers x (6 per training sample, 2 per evaluated one)."""
    macs = sum(m.in_features * m.out_features for m in net.modules()
               if isinstance(m, torch.nn.Linear))
    return macs * (6 * n_train + 2 * (n_train + n_test))


def machine(device: torch.device) -> str:
    from memorization.base.launch import cpu_name

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--n-train", type=int, default=55000)
    ap.add_argument("--epochs", type=int, default=3,
                    help="the first one is a warm-up; the fastest of the others counts")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--speed-options", action="store_true",
                    help="also time the framework epoch with TF32 products, bf16-mixed steps "
                         "and torch.compile, each against the plain float32 framework epoch")
    ap.add_argument("--compile-backend", default=None,
                    help="the torch.compile backend of --speed-options (default: inductor)")
    args = ap.parse_args()
    device = torch.device(args.device)
    peak = matmul_peak(device)
    lines = [f"fp32 matmul peak: {peak:.0f} GFLOP/s"]
    rows = []
    for depth in args.depths:
        fw, dm, net = framework(depth, args.n_train, args.epochs, device, args.synthetic)
        bare = plain(depth, dm, args.epochs, device)
        t_fw, t_bare = min(fw[1:] or fw), min(bare[1:] or bare)
        n_tr, n_te = len(dm.splits["train"]), len(dm.splits["test"])
        flops = epoch_flops(net, n_tr, n_te)
        data = dm.cfg.source
        rows.append((depth, data, n_tr, t_fw, t_bare, t_fw / t_bare, flops / t_fw / 1e9,
                     flops / t_fw / 1e9 / peak))
        lines.append(f"MLP {depth}x512, {data} {n_tr} train + {n_te} test: framework "
                     f"{t_fw:.2f} s, plain loop {t_bare:.2f} s, ratio {t_fw / t_bare:.3f} "
                     f"(target <= 1.05); {flops / t_fw / 1e9:.0f} GFLOP/s = "
                     f"{flops / t_fw / 1e9 / peak:.0%} of peak (target >= 60%)")
        if args.speed_options:
            for name, kw in (("matmul_precision=high", {"matmul": "high"}),
                             ("precision=bf16-mixed", {"precision": "bf16-mixed"}),
                             (f"compile={args.compile_backend or 'true'}",
                              {"compile": args.compile_backend or True})):
                t = min(framework(depth, args.n_train, args.epochs, device, args.synthetic,
                                  **kw)[0][1:] or [float("nan")])
                lines.append(f"  MLP {depth}x512 with trainer.{name}: {t:.2f} s, "
                             f"{t_fw / t:.2f}x the float32 framework epoch's speed")
    print("\n".join(lines))
    if args.no_record:
        return
    table = ["| MLP | data | framework epoch | plain loop | ratio | GFLOP/s | of peak |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    table += [f"| {d}x512 | {src} {n} | {a:.2f} s | {b:.2f} s | {r:.3f} | {g:.0f} | {u:.0%} |"
              for d, src, n, a, b, r, g, u in rows]
    entry = (f"\n### benchmarks/training.py, {datetime.date.today()}\n\n{machine(device)}; "
             f"fp32 matmul peak {peak:.0f} GFLOP/s; Adam (as memorization/engine/optim.py "
             "builds it, for both), batch 128, an epoch = training + "
             "eval-mode accuracy on the training and test sets, timed after a warm-up epoch.\n\n"
             + "\n".join(table) + "\n")
    with PERF.open("a") as f:
        f.write(entry)
    print(f"appended to {PERF}")


if __name__ == "__main__":
    main()
