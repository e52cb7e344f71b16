"""The entry point as a user runs it: subprocesses for a sweep, DDP, and an installed package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from memorization.data import DataModule
from memorization.metrics import subset_accuracy
from memorization.metrics.callback import LayerMetrics
from memorization.models import MLP
from tests.conftest import ROOT, run_cli

QUICK = ["data=synthetic", "trainer.max_epochs=2", "stop_at_train_acc=null",
         "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def test_multirun_writes_one_folder_per_job_with_distinct_wandb_runs(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", "noise.p=0,0.5", *QUICK, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_ids = []
    for job, p, override in (("0", 0.0, "noise.p=0"), ("1", 0.5, "noise.p=0.5")):
        d = sweep / job
        cfg = yaml.safe_load((d / ".hydra" / "config.yaml").read_text())
        assert cfg["noise"]["p"] == p
        assert (d / "corruption.npz").is_file()
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["corruption"]["p"] == p and metrics["epochs"] == 2
        runs = list((d / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs
        run_ids.append(runs[0].name.rsplit("-", 1)[-1])
        # the run is named after the job's swept values only, and grouped by the sweep folder
        (run_file,) = runs[0].glob("run-*.wandb")
        data = run_file.read_bytes()
        assert override.encode() in data and str(sweep).encode() in data
    assert run_ids[0] != run_ids[1]
    # noise 0 corrupts nothing, noise 0.5 about half
    m0 = json.loads((sweep / "0" / "metrics.json").read_text())
    m1 = json.loads((sweep / "1" / "metrics.json").read_text())
    assert m0["corruption"]["n_corrupted"] == 0 < m1["corruption"]["n_corrupted"]


@pytest.mark.parametrize("masc", ["auto", "gram"])  # auto picks the sample route here
def test_ddp_two_cpu_processes_give_exact_metrics(tmp_path, masc):
    """A 2-process DDP run logs the same accuracies as one process evaluating its weights."""
    out = tmp_path / "ddp"
    res = run_cli(["trainer=ddp_cpu", *QUICK, "logger=none", "data.source_options.n_train=101",
                   f"metrics.masc.method={masc}", "metrics.every_n_epochs=1",
                   "data.eval_batch_size=16", "metrics.batch_size=16", "metrics.csr.beta=0",
                   "metrics.csr.batch_size=7", f"hydra.run.dir={out}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    final = json.loads((out / "metrics.json").read_text())["final"]
    cfg = OmegaConf.load(out / ".hydra" / "config.yaml")
    data, model = (OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "model"))
    dm = DataModule(**{k: v for k, v in data.items() if k != "_target_"}, noise=dict(cfg.noise))
    dm.setup("fit")
    net = MLP(**{k: v for k, v in model.items() if k != "_target_"})
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    with torch.no_grad():
        tr, te = dm.splits["train"].tensors, dm.splits["test"].tensors
        train = subset_accuracy(net(tr["x"]).argmax(1), tr["y"], tr["y_true"], tr["corrupted"])
        test = subset_accuracy(net(te["x"]).argmax(1), te["y"])
    # 101 samples over 2 ranks in batches of 16: any double count or dropped sample shows
    assert final["train/acc"] == pytest.approx(float(train["acc"]), abs=1e-7)
    assert final["train/acc_true"] == pytest.approx(float(train["acc_true"]), abs=1e-7)
    assert final["test/acc"] == pytest.approx(float(test["acc"]), abs=1e-7)
    # the per-layer metrics too: sums over ranks equal one process's (csr with beta = 0 is
    # deterministic per sample, so batching and sharding cannot change it)
    cb = LayerMetrics(OmegaConf.to_container(cfg.metrics, resolve=True))
    cb.setup(type("T", (), {"datamodule": dm})(), type("M", (), {"net": net})(), "fit")
    single = cb.compute(dm, net)
    assert len(single) > 20
    for key, value in single.items():
        assert final[key] == pytest.approx(float(value), abs=1e-6), key


@pytest.mark.slow
def test_installed_package_runs_from_anywhere(tmp_path):
    """A wheel carries conf/ inside the package: the job runs with no checkout around."""
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("memorization-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    assert (site / "memorization" / "conf" / "config.yaml").is_file()
    # every package of the checkout is in the wheel (the editable install of the test's venv
    # could otherwise supply a missing one, and the run below would not notice)
    for init in (ROOT / "memorization").rglob("__init__.py"):
        assert (site / init.relative_to(ROOT)).is_file(), init
    work = tmp_path / "elsewhere"
    work.mkdir()
    res = run_cli([*QUICK, "logger=none", "trainer.max_epochs=1"], cwd=work,
                  env={"PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "run summary" in res.stdout
    (metrics,) = (work / "outputs").glob("*/*/metrics.json")
    assert json.loads(metrics.read_text())["epochs"] == 1
