"""The GPU path (``pytest -m gpu``, run by ``make bench-gpu`` on a lent GPU): the default job on
``trainer=gpu``, a stacked job in vmap and in loop mode, the metrics suite on the device
against the same suite on the CPU, DDP with one device, the divergence guard, a relabel stage,
mixed precision, torch.compile and the sync-free step.

Skipped without CUDA. ``MEMORIZATION_GPU_TEST_DEVICE=cpu`` runs the same tests on the CPU
instead (the device-against-CPU comparisons then compare the CPU with itself): a way to try
this file's code where no GPU is lent, not a proof of anything about GPUs.
"""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

from benchmarks.syncs import HostSyncCounter
from memorization.cli.run import train
from tests.conftest import compose_config, run_cli

DEVICE = os.environ.get("MEMORIZATION_GPU_TEST_DEVICE", "cuda")
ACCELERATOR = "gpu" if DEVICE == "cuda" else "cpu"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA"),
]
# the CPU settings of tests/conftest.py's FAST, on the device under test
ON_DEVICE = ["logger=none", "trainer.enable_progress_bar=false",
             "trainer.enable_model_summary=false", f"trainer.accelerator={ACCELERATOR}"]


def _job(tmp_path, *overrides: str) -> dict:
    cfg = compose_config([*ON_DEVICE, *overrides], output_dir=tmp_path)
    return train(cfg)


def test_default_job_fits_digits_on_the_device(tmp_path):
    summary = _job(tmp_path, "trainer.max_epochs=60")
    # the default corrupts 20% of the labels: the network fits them, and the test set stays
    # far above chance (0.1)
    assert summary["final"]["train/acc"] == 1.0 and summary["final"]["test/acc"] > 0.7
    assert summary["epochs_to_fit"] is not None and "masc_true/test" in str(summary["final"])


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_stacked_replica_matches_its_single_run(tmp_path, mode):
    """Replica 1 of a stacked job against the single run of seed 1, both on the device:
    equal within float rounding (vmap batches the products, so not bitwise). Two epochs: by
    five, rounding differences have grown through training to 7e-4 of the test loss on one CPU
    thread, while another seed's run differs by 2e-2 already after two."""
    common = ["trainer.max_epochs=2", "stop_at_train_acc=null", "metrics=none"]
    stacked = _job(tmp_path / "stacked", *common, "trainer.replicas=2", f"replicas.mode={mode}")
    single = _job(tmp_path / "single", *common, "seed=1")
    assert stacked is not None
    replica = json.loads((tmp_path / "stacked" / "replicas" / "1" / "metrics.json").read_text())
    for key in ("train/loss", "test/loss"):
        assert replica["final"][key] == pytest.approx(single["final"][key], rel=1e-4)


def test_metrics_suite_on_the_device_equals_the_cpu():
    """cosine, polarization and MASC of one trained network on the device and on the CPU."""
    from memorization.data import DataModule
    from memorization.metrics.callback import LayerMetrics
    from memorization.models import MLP

    def suite(device):
        torch.manual_seed(0)
        dm = DataModule(source="synthetic", shape=(1, 8, 8), num_classes=4,
                        source_options={"n_train": 600, "n_test": 200, "num_classes": 4,
                                        "shape": (1, 8, 8), "spread": 0.3},
                        noise={"name": "label_flip", "p": 0.2, "seed": 0})
        dm.setup("fit")
        for split in dm.splits.values():
            split.tensors = {k: v.to(device) for k, v in split.tensors.items()}
        net = MLP(in_shape=(1, 8, 8), num_classes=4, depth=3, width=64).to(device)
        cb = LayerMetrics({"probe_size": 300, "csr": {"enabled": False}})
        cb.setup(type("T", (), {"datamodule": dm})(), type("M", (), {"net": net})(), "fit")
        return {k: float(v) for k, v in cb.compute(dm, net).items()}

    here, cpu = suite(torch.device(DEVICE)), suite(torch.device("cpu"))
    assert here.keys() == cpu.keys() and len(here) > 10
    for key in here:
        assert here[key] == pytest.approx(cpu[key], rel=1e-3, abs=1e-4), key


def test_ddp_with_one_device(tmp_path):
    out = tmp_path / "ddp"
    res = run_cli([*ON_DEVICE, "trainer=ddp", f"trainer.accelerator={ACCELERATOR}",
                   "trainer.devices=1", "trainer.max_epochs=3", "metrics=none",
                   f"hydra.run.dir={out}"], cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3


def test_divergence_guard_stops_a_diverging_run(tmp_path):
    """lr 1e4 with SGD blows the loss up within a few steps: the job fails with one line."""
    out = tmp_path / "diverged"
    res = run_cli([*ON_DEVICE, "optim=sgd", "optim.lr=10000", "trainer.max_epochs=20",
                   "metrics=none", f"hydra.run.dir={out}"], cwd=tmp_path, timeout=300)
    assert res.returncode == 1
    assert "the training loss" in res.stderr and (out / "FAILED").exists()


def test_relabel_stage_on_the_device(tmp_path):
    summary = _job(tmp_path, "relabel.enabled=true", "relabel.max_epochs=2",
                   "trainer.max_epochs=3", "stop_at_train_acc=null", "metrics=none")
    assert summary is not None and summary.get("relabel")


def test_bf16_mixed_steps_keep_the_metrics_in_float32(tmp_path):
    summary = _job(tmp_path, "trainer.precision=bf16-mixed", "trainer.max_epochs=20")
    assert summary["final"]["train/acc"] > 0.7
    assert all(v == v for v in summary["final"].values() if isinstance(v, float))  # no NaN


def test_compile_trains_like_eager(tmp_path):
    common = ["trainer.max_epochs=3", "stop_at_train_acc=null", "metrics=none"]
    eager = _job(tmp_path / "eager", *common)
    compiled = _job(tmp_path / "compiled", *common, "trainer.compile=true")
    assert compiled["final"]["train/loss"] == pytest.approx(eager["final"]["train/loss"],
                                                            rel=1e-3)


@pytest.mark.parametrize("stack", [[], ["trainer.replicas=4", "replicas.mode=vmap"]],
                         ids=["single", "stacked-vmap"])
def test_steady_state_steps_make_no_host_sync_on_the_device(tmp_path, stack):
    HostSyncCounter.reset()
    with warnings.catch_warnings():
        _job(tmp_path, "trainer.max_epochs=2", "stop_at_train_acc=null",
             "callbacks.checkpoint=null", "metrics=none", "data.batch_size=32",
             "+callbacks.sync._target_=benchmarks.syncs.HostSyncCounter", *stack)
    assert HostSyncCounter.steps > 0
    if DEVICE == "cuda":  # on a CPU the divergence guard reads each loss: no wait there
        assert HostSyncCounter.seen == []
