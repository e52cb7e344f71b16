"""Why the networks trained inside a job use the plain loop and jobs the Lightning Trainer.

    python benchmarks/engine.py [--n-train 1000] [--width 4096] [--runs 5] [--device cpu]

The same network (Arpit et al.'s MLP: 2 hidden layers of ``--width`` ReLU units, SGD lr 0.01,
batch 128; input 784) is trained for one epoch on ``--n-train`` examples, ``--runs`` times each:

1. by ``memorization.loop.fit`` (what the relabel retrain and the studies use);
2. by a Lightning ``Trainer`` and the framework's ``Classifier``, built afresh per network as a
   study would have to (Trainer, data module, fit; no logger, checkpoint or progress bar);
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

import lightning as L
import torch

torch.set_flush_denormal(True)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")

from memorization import loop  # noqa: E402
from memorization.data import DataModule  # noqa: E402
from memorization.models import MLP  # noqa: E402
from memorization.module import Classifier  # noqa: E402
from memorization.optim import OptimConfig  # noqa: E402

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
    loop.fit(net, OptimConfig(**OPTIM), x, y, epochs=1, batch_size=128, seed=seed)
    loop.predict(net, x)  # a study scores its examples afterwards
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def lightning(width: int, n_train: int, seed: int, accelerator: str) -> float:
    t = time.perf_counter()
    dm = _data(n_train)
    module = Classifier(net=_net(width, seed), optim=dict(OPTIM))
    trainer = L.Trainer(max_epochs=1, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
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
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    plain(args.width, x, y, 0, device)  # warm-up, both
    lightning(args.width, args.n_train, 0, accelerator)
    a = [plain(args.width, x, y, s, device) for s in range(1, args.runs + 1)]
    b = [lightning(args.width, args.n_train, s, accelerator) for s in range(1, args.runs + 1)]
    pa, pb = statistics.median(a), statistics.median(b)
    print(f"one network (MLP 2x{args.width}, {args.n_train} examples, 1 epoch, "
          f"{device.type}), median of {args.runs}: plain loop {pa:.3f} s, Lightning Trainer "
          f"{pb:.3f} s, ratio {pb / pa:.2f}; the Trainer's cost per network {pb - pa:.3f} s")


if __name__ == "__main__":
    main()
