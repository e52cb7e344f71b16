"""Cost of the epoch-end metrics suite relative to a training epoch, in one process.

    python benchmarks/metrics.py [--n-train 55000] [--probe 10000] [--device cpu|cuda]

Times, on the same device and data:
  baseline  one training epoch of Theunissen's MLP 10x512 (Adam, MSE, batch 128) over n_train
            samples of 28x28: real Fashion-MNIST when Debian's dataset-fashion-mnist is
            installed, else synthetic data of that shape (MASC's cost depends on the layers'
            rank, so the data matters);
  suite     LayerMetrics.compute with cosine + polarization + MASC on every probe layer, on a
            fixed probe subset of the training set and a test set of the same size;
  csr       LASS (Arpit et al. Alg. 1, 20 steps) throughput in samples per second.
Prints suite / baseline (the target is <= 0.5) and the throughput. Timings after one warm-up.
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import torch
import torch.nn.functional as F

torch.set_flush_denormal(True)

from memorization.data import DataModule  # noqa: E402
from memorization.metrics.callback import LayerMetrics  # noqa: E402
from memorization.models import MLP  # noqa: E402
from memorization.noise import corrupt_dataset  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def read_idx(path: Path) -> torch.Tensor:
    """A gzip IDX file (ubyte) as a uint8 tensor. A minimal reader for this benchmark only; the
    project's dataset readers come with the datasets issue."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def use_fashion_mnist(dm, n_train: int, n_test: int) -> None:
    """Swap the synthetic tensors for real Fashion-MNIST ones (standardized, first n samples)."""
    x = read_idx(FASHION / "train-images-idx3-ubyte.gz")[:n_train].float().div(255)
    y = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:n_train].long()
    xt = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:n_test].float().div(255)
    yt = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:n_test].long()
    mean, std = x.mean(), x.std()
    rec = corrupt_dataset(x, y, 10, "label_flip", 0.2, seed=0).record
    dm.splits["train"].tensors.update(x=((x - mean) / std).unsqueeze(1), y=rec.train_labels,
                                      y_true=y, corrupted=rec.corrupted,
                                      index=torch.arange(len(y)))
    dm.splits["test"].tensors.update(x=((xt - mean) / std).unsqueeze(1), y=yt)
    dm.std = torch.tensor([float(std)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_epoch(net, dm, device, batch_size=128) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    tr = dm.splits["train"].tensors
    x, y = tr["x"].to(device), tr["y"].to(device)
    net.train()
    sync(device)
    t = time.perf_counter()
    for idx in torch.randperm(len(y), device=device).split(batch_size):
        loss = F.mse_loss(net(x[idx]), F.one_hot(y[idx], 10).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=55000)
    ap.add_argument("--probe", type=int, default=10000)
    ap.add_argument("--csr-n", type=int, default=1000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--synthetic", action="store_true",
                    help="synthetic data even when Debian's Fashion-MNIST is installed")
    args = ap.parse_args()
    device = torch.device(args.device)
    shape = (1, 28, 28)
    dm = DataModule(source="synthetic", shape=shape, num_classes=10, normalize=True,
                    source_options={"n_train": args.n_train, "n_test": args.probe,
                                    "num_classes": 10, "shape": shape, "spread": 0.3},
                    noise={"name": "label_flip", "p": 0.2, "seed": 0})
    dm.setup("fit")
    real = FASHION.is_dir() and not args.synthetic
    if real:
        use_fashion_mnist(dm, args.n_train, args.probe)
    for split in dm.splits.values():
        split.tensors = {k: v.to(device) for k, v in split.tensors.items()}
    dm.std = dm.std.to(device)
    torch.manual_seed(0)
    net = MLP(in_shape=shape, num_classes=10, depth=10, width=512, bias="first").to(device)

    train_epoch(net, dm, device)  # warm-up, and weights that are not at initialization
    baseline = train_epoch(net, dm, device)

    def evaluations(cfg) -> tuple[float, float, int]:
        """Times of a fresh callback's first evaluation and of its next one (the input layer's
        values, which depend on the data only, are computed in the first and reused after)."""
        cb = LayerMetrics(cfg)
        cb.setup(type("T", (), {"datamodule": dm})(), type("M", (), {"net": net})(), "fit")
        times = []
        for _ in range(2):
            sync(device)
            t = time.perf_counter()
            logs = cb.compute(dm, net)
            sync(device)
            times.append(time.perf_counter() - t)
        return times[0], times[1], len(logs)

    no_csr = {"probe_size": args.probe, "csr": {"enabled": False}}
    evaluations(no_csr)  # warm-up
    first, suite, n_values = evaluations(no_csr)
    parts = {name: evaluations({**no_csr, **{m: {"enabled": m == name}
                                             for m in ("cosine", "polarization", "masc")}})[1]
             for name in ("cosine", "polarization", "masc")}
    csr_only = {"cosine": {"enabled": False}, "polarization": {"enabled": False},
                "masc": {"enabled": False}, "csr": {"n": args.csr_n}}
    csr_time = evaluations(csr_only)[1]

    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"data {'Fashion-MNIST (label_flip p=0.2)' if real else 'synthetic'}")
    print(f"baseline: one training epoch, MLP 10x512, {args.n_train} samples: {baseline:.2f} s")
    print(f"suite: cosine + polarization + MASC on 11 layers, probe {args.probe} train + "
          f"{args.probe} test ({n_values} values)")
    print(f"  first evaluation (fits the input layer too): {first:.2f} s "
          f"({first / baseline:.2f} of an epoch)")
    print(f"  every later evaluation: {suite:.2f} s")
    for name, t in parts.items():
        print(f"  {name} alone, later evaluation: {t:.2f} s ({t / baseline:.2f} of an epoch)")
    print(f"ratio suite (later evaluation) / epoch: {suite / baseline:.2f} (target <= 0.5)")
    print(f"csr: {args.csr_n} test samples, 20 LASS steps: {csr_time:.2f} s, "
          f"{args.csr_n / csr_time:.0f} samples/s")


if __name__ == "__main__":
    main()
