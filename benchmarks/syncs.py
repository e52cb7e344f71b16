"""Host syncs per training step in steady state, for a single run and a stacked job.

    python benchmarks/syncs.py [--n-train 20000] [--device cuda|cpu]

A short job (MLP 3x512, synthetic Fashion-MNIST-shaped data, batch 128, 2 epochs) runs with
:class:`HostSyncCounter`, which counts, between the start of step 2 and of step 10 of each
epoch: the tensor calls that copy to the host (``.item()``, ``.cpu()``, ``.tolist()``,
``.numpy()``, ``bool``/``float``/``int``/index of a tensor), and on a GPU also what torch's
sync debug mode reports (``torch.cuda.set_sync_debug_mode``: every synchronizing CUDA call,
the copies above included). Both should be 0. tests/engine/test_sync_free.py asserts the first on a
CPU, tests/e2e/test_gpu.py the second on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import lightning as L
import torch

HOST = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


class HostSyncCounter(L.Callback):
    """Counts host syncs made from the start of step ``first`` to the start of step ``last``
    of every epoch: the steps between and every hook they run. ``seen`` (class-wide, so a job
    built from the config can be read afterwards): (what, where) per sync; ``steps``: steps
    counted."""

    seen: list[tuple[str, str]] = []
    steps = 0

    def __init__(self, first: int = 2, last: int = 6):
        self.first, self.last = first, last
        self._saved: dict = {}
        self._caught = None

    @classmethod
    def reset(cls) -> None:
        cls.seen, cls.steps = [], 0

    def _start(self) -> None:
        for name in HOST:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(t, *a, _name=name, _orig=original, **k):
                frame = traceback.extract_stack(limit=2)[0]  # the caller
                HostSyncCounter.seen.append((_name, f"{frame.filename}:{frame.lineno}"))
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, counted)
        if torch.cuda.is_available():
            self._caught = warnings.catch_warnings(record=True)
            self._records = self._caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def _stop(self) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved = {}
        if self._caught is not None:
            torch.cuda.set_sync_debug_mode("default")
            for w in self._records:
                if "synchroniz" in str(w.message):
                    HostSyncCounter.seen.append(("cuda", f"{w.filename}:{w.lineno}"))
            self._caught.__exit__(None, None, None)
            self._caught = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.first:
            self._start()
        elif batch_idx == self.last and self._saved:
            self._stop()
            HostSyncCounter.steps += self.last - self.first

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._saved:  # an epoch of fewer than ``last`` steps: its steps are not judged
            self._stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.syncs import HostSyncCounter as counter  # the class the config builds
    from memorization.cli.run import train
    from tests.conftest import compose_config

    accelerator = "gpu" if args.device == "cuda" else "cpu"
    for name, extra in (("single run", []),
                        ("stacked, 8 replicas, vmap", ["trainer.replicas=8",
                                                       "replicas.mode=vmap"])):
        counter.reset()
        folder = Path(tempfile.mkdtemp(prefix="syncs-"))
        cfg = compose_config([
            "data=synthetic", "logger=none", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", f"trainer.accelerator={accelerator}",
            "model=mlp_3x512", "data.shape=[1,28,28]", "data.num_classes=10",
            f"data.source_options.n_train={args.n_train}",
            "trainer.max_epochs=2", "stop_at_train_acc=null", "callbacks=no_checkpoint",
            "metrics.enabled=false", "+callbacks.sync._target_=benchmarks.syncs.HostSyncCounter",
            "+callbacks.sync.last=10", *extra], output_dir=folder)
        with contextlib.redirect_stdout(io.StringIO()):  # the job's own summary
            train(cfg)
        shutil.rmtree(folder, ignore_errors=True)
        steps = max(1, counter.steps)
        where = sorted({w for _, w in counter.seen})[:5]
        print(f"{name} on {args.device}: {len(counter.seen)} host syncs in {counter.steps} "
              f"steady-state steps ({len(counter.seen) / steps:.2f} per step)"
              f"{'; at ' + ', '.join(where) if where else ''}", flush=True)
    if args.device != "cuda":
        print("(on a CPU the divergence guard reads each step's loss on purpose, memorization/"
              "jobs.py: nothing waits there; on a GPU it copies the loss without waiting)")


if __name__ == "__main__":
    main()
