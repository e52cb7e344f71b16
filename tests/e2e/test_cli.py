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
from tests.wandb_offline import read_offline_run, read_table

QUICK = ["data=synthetic", "trainer.max_epochs=2", "stop_at_train_acc=null",
         "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


def test_multirun_on_digits_ends_with_its_report(tmp_path):
    """A real 2-job sweep on the digits: a folder per job, a W&B run per job named after its
    swept value, holding one row per epoch and the per-layer table, and the sweep report
    (tables, figures) whose summary table is the last thing printed."""
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", "noise.p=0,0.5", "trainer.max_epochs=2", "stop_at_train_acc=null",
                   "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                   "metrics.every_n_epochs=1", "metrics.probe_size=300", "metrics.csr.n=20",
                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_ids = []
    for job, p, override in (("0", 0.0, "noise.p=0"), ("1", 0.5, "noise.p=0.5")):
        d = sweep / job
        cfg = yaml.safe_load((d / ".hydra" / "config.yaml").read_text())
        assert cfg["noise"]["p"] == p
        assert (d / "corruption.npz").is_file() and (d / "history.csv").is_file()
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["corruption"]["p"] == p and metrics["epochs"] == 2
        runs = list((d / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs
        run_ids.append(runs[0].name.rsplit("-", 1)[-1])
        run = read_offline_run(d)
        # named after the swept value only (not data=..., trainer...), grouped by the sweep
        assert run["name"] == override and run["group"] == str(sweep)
        assert [row["epoch"] for row in run["history"]] == [1, 2]
        cols, rows = read_table(run, run["history"][-1]["layers/table"])
        assert cols == ["layer", "depth", "metric", "split", "value"]
        cosine = {r[0]: r[4] for r in rows if r[2] == "cosine" and r[3] == "train"}
        assert cosine == pytest.approx(
            {k.split("/")[-1]: v for k, v in metrics["final"].items()
             if k.startswith("cosine/train/")})
        assert run["summary"]["epochs"] == 2
        # the resolved config is logged once, not again under the module's hyperparameters
        assert "optim" in run["config"] and "net" not in run["config"]
    assert run_ids[0] != run_ids[1]
    m0 = json.loads((sweep / "0" / "metrics.json").read_text())
    m1 = json.loads((sweep / "1" / "metrics.json").read_text())
    assert m0["corruption"]["n_corrupted"] == 0 < m1["corruption"]["n_corrupted"]
    report = sweep / "report"
    for name in ("summary.md", "history.csv", "final.csv", "memorization_curve.png",
                 "masc_per_layer.png", "test_acc_vs_noise.png"):
        assert (report / name).stat().st_size > 0, name
    rep = read_offline_run(report)  # the report's own W&B run, in the sweep's group
    assert rep["name"] == "report" and rep["group"] == str(sweep)
    cols, rows = read_table(rep, rep["history"][0]["report/summary"])
    assert cols[:2] == ["job", "noise.p"] and [r[0] for r in rows] == ["0", "1"]
    assert rep["history"][0]["report/masc_per_layer"]["_type"] == "image-file"
    out = res.stdout.rstrip().splitlines()
    assert out[-1].startswith("| 1 | 0.5 |") and out[-2].startswith("| 0 | 0 |")
    assert "| job | noise.p | samples corrupted |" in res.stdout
    # the terminal shows what a researcher reads; Lightning's set-up lines go to run.log
    assert "GPU available" not in res.stdout and "Tip:" not in res.stdout
    log = (sweep / "0" / "run.log").read_text()
    assert "GPU available" in log and "=== memorization: run summary ===" in log


@pytest.mark.parametrize("masc", ["auto", pytest.param("gram", marks=pytest.mark.slow)])
# auto picks the sample route here; the gram route runs with the slow tests
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


def test_help_lists_every_group_and_the_top_level_keys(tmp_path):
    res = run_cli(["experiment=theunissen_digits", "--help"], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    for group in ("data", "noise", "model", "optim", "trainer", "logger", "callbacks",
                  "metrics", "experiment", "hydra/launcher"):
        assert f"\n  {group} " in out, group
    assert "theunissen_digits*" in out and "mlp_10x512*" in out  # the preset's choices
    assert "basic*" in out and "parallel" in out and "slurm" in out
    lines = out.splitlines()
    top = {ln.split()[0]: ln.split()[-1] for ln in lines[lines.index(
        "top-level keys (current values):") + 1:] if ln.startswith("  ")}
    assert top["seed"] == "0" and top["stop_at_train_acc"] == "null"  # the preset's null
    assert top["module.loss"] == "mse" and top["ckpt_path"] == "null"
    assert not (tmp_path / "outputs").exists()  # help runs nothing
