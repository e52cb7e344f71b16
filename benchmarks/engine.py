"""What the one engine costs per network: ``engine.fit_network`` against a plain PyTorch loop.

    python benchmarks/engine.py [--n-train 1000] [--width 4096] [--runs 5] [--device cpu]

The same network (Arpit et al.'s MLP: 2 hidden layers of ``--width`` ReLU units, SGD lr 0.01,
batch 128; input 784) is trained for one epoch on ``--n-train`` examples, ``--runs`` times each:

1. by a plain PyTorch loop written here (the baseline: batches by indexing tensors on the
   device, one optimizer step per batch, nothing else);
2. by ``engine.fit_network``, the Lightning fit that the relabel retrain and the studies use
   (a Trainer built afresh per network; no logger, checkpoint or progress bar);
3. the Trainer's fixed cost per network: (2) minus (1).

Printed: seconds per network and the ratio (2) / (1), measured in this one process; plus the
per-step overhead of a whole job under Lightning, which ``benchmarks/training.py`` measures
(framework epoch / plain loop). Nothing is recorded: the figures go into docs/performance.md by
hand, with the machine.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import torch

torch.set_flush_denormal(True)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")

import torch.nn.functional as F  # noqa: E402

from memorization.data import DataModule  # noqa: E402
from memorization.engine import trainer as engine  # noqa: E402
from memorization.engine.optim import OptimConfig  # noqa: E402
from memorization.models import MLP  # noqa: E402

OPTIM = {"_target_": "torch.optim.SGD", "lr": 0.01}


def _net(width: int, seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(in_shape=(1, 28, 28), num_classes=10, depth=2, width=width, bias="all")


def _data(n_train: int) -> DataModule:
    return DataModule(source="synthetic", shape=(1, 28, 28), num_classes=10, batch_size=128,
                      eval_batch_size=4096, noise={"name": "none"}, shuffle_seed=0,
                      source_options={"n_train": n_train, "n_test": 100, "num_classes": 10,
                                      "shape": (1, 28, 28)})


def plain(width: int, x: torch.Tensor, y: torch.Tensor, seed: int, device) -> float:
    t = time.perf_counter()
    net = _net(width, seed).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=OPTIM["lr"])
    order = engine.seeded_orders(len(y), seed)(0).to(device)
    net.train()
    for idx in order.split(128):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    engine.predict(net, x)  # a study scores its examples afterwards
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def lightning(width: int, x: torch.Tensor, y: torch.Tensor, seed: int, device) -> float:
    t = time.perf_counter()
    net = _net(width, seed).to(device)
    engine.fit_network(net, OptimConfig(**OPTIM), x, y, epochs=1, batch_size=128, seed=seed)
    engine.predict(net, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    dm = _data(args.n_train)
    dm.setup("fit")
    tensors = dm.splits["train"].tensors
    x, y = tensors["x"].to(device), tensors["y"].to(device)
    plain(args.width, x, y, 0, device)  # warm-up, both
    lightning(args.width, x, y, 0, device)
    a, b = [], []
    for s in range(1, args.runs + 1):  # interleaved, so that drift hits both alike
        a.append(plain(args.width, x, y, s, device))
        b.append(lightning(args.width, x, y, s, device))
    pa, pb = statistics.median(a), statistics.median(b)
    print(f"one network (MLP 2x{args.width}, {args.n_train} examples, 1 epoch, "
          f"{device.type}), median of {args.runs}: plain loop {pa:.3f} s, engine.fit_network "
          f"{pb:.3f} s, ratio {pb / pa:.2f}; the Trainer's cost per network {pb - pa:.3f} s")


if __name__ == "__main__":
    main()
