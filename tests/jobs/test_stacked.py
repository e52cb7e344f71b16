"""Stacked seeds (``trainer.replicas=S``): replica k of a stacked job equals the single run with
replica k's seeds (corruption record, epochs, final weights, metrics, history), with the MLP and
a CNN, in both modes; a replica that fits stops while the others go on; a killed stacked job
resumes; the refusals; DDP; a sweep of stacked jobs with its report and W&B runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from memorization.base.errors import ConfigError
from memorization.cli.run import train
from memorization.jobs.validate import validate
from memorization.loggers import read_history
from tests.conftest import compose_config, run_cli
from tests.wandb_offline import read_offline_run

QUIET = ["logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "trainer.accelerator=cpu"]
# replicas that fit at different epochs (6, 6, 7 here), so a stopped one must stay put
MLP = ["data=digits", "data.train_size=300", "data.batch_size=32", "model.width=64",
       "noise.p=0.3", "stop_at_train_acc=0.5", "trainer.max_epochs=8",
       "metrics.every_n_epochs=3", "metrics.probe_size=100"]
CNN = ["data=digits", "model=cnn", "model.width=32", "data.batch_size=32", "noise.p=0.3",
       "optim.lr=0.003", "trainer.max_epochs=2", "metrics.probe_size=100"]
VARY = "replicas.vary=[seed,noise.seed]"


def _train(out, *overrides):
    return train(compose_config([*QUIET, *overrides], output_dir=out))


def _weights(folder):
    """A single run's final network weights (its checkpoint), a replica's (model.pt)."""
    if (folder / "model.pt").is_file():
        return torch.load(folder / "model.pt", weights_only=True)
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k[4:]: v for k, v in state.items() if k.startswith("net.")}


def _history(folder):
    h = read_history(folder / "history.csv")
    return h.sort_values(["epoch", "split", "layer", "metric"]).reset_index(drop=True)


def summary_keys(job):
    return json.loads((job / "replicas" / "0" / "metrics.json").read_text())["final"]


def _assert_same_run(rep, single, exact: bool):
    a, b = (json.loads((f / "metrics.json").read_text()) for f in (rep, single))
    assert a.pop("replica")["of"] == 3
    for key in ("epochs", "epochs_to_fit", "corruption", "torch_seed", "stop_at_train_acc"):
        assert a[key] == b[key], key
    assert set(a["final"]) == set(b["final"]) and len(b["final"]) > 8
    for key, value in b["final"].items():
        assert a["final"][key] == (value if exact else pytest.approx(value, abs=2e-4)), key
    ra, rb = (np.load(f / "corruption.npz") for f in (rep, single))
    assert ra.files == rb.files and all(np.array_equal(ra[k], rb[k]) for k in rb.files)
    wa, wb = _weights(rep), _weights(single)
    assert wa.keys() == wb.keys()
    for key in wb:
        if exact:
            assert torch.equal(wa[key], wb[key]), key
        else:
            torch.testing.assert_close(wa[key], wb[key], atol=1e-4, rtol=1e-4)
    ha, hb = _history(rep), _history(single)
    assert ha[["epoch", "split", "layer", "metric"]].equals(hb[["epoch", "split", "layer",
                                                                 "metric"]])
    np.testing.assert_allclose(ha["value"], hb["value"], rtol=0 if exact else 1e-3,
                               atol=0 if exact else 2e-4, equal_nan=True)
    ca, cb = (OmegaConf.load(f / "config_resolved.yaml") for f in (rep, single))
    for key in ("seed", "noise", "data", "model", "optim", "module", "stop_at_train_acc"):
        assert ca[key] == cb[key], key
    assert ca.trainer.replicas == 1


@pytest.mark.parametrize("net, mode, replicas", [("mlp", "loop", [0, 1, 2]),
                                                 ("cnn", "loop", [0, 2]),
                                                 ("mlp", "vmap", [2]),
                                                 ("mlp_steps", "loop", [1, 2])])
def test_replica_equals_its_single_run(tmp_path, net, mode, replicas):
    base = CNN if net == "cnn" else MLP
    if net == "mlp_steps":  # training accuracies from the training steps, no layer metrics
        base = [*base, "data.eval_train=false", "metrics=none"]
    if mode == "vmap":  # equal within float rounding: fewer epochs, no stop rule to tip over
        base = [*base, "trainer.max_epochs=3", "stop_at_train_acc=null"]
    job = tmp_path / "stacked"
    summary = _train(job, *base, "trainer.replicas=3", VARY, f"replicas.mode={mode}")
    assert summary["replicas"] == 3 and [r["folder"] for r in summary["runs"]] == [
        "replicas/0", "replicas/1", "replicas/2"]
    epochs = [r["epochs"] for r in summary["runs"]]
    if mode == "loop" and net != "cnn":  # the replicas stopped at different epochs
        assert all(r["epochs_to_fit"] == r["epochs"] for r in summary["runs"])
        # replica 0 first: the others' accuracies must not depend on its (mlp_steps: they
        # come from the training steps, which feed only the replicas still training)
        assert epochs[0] < max(epochs), epochs
    if net != "mlp_steps":  # the layer metrics too
        assert any(key.startswith("masc/") for key in summary_keys(job))
    for k in replicas:
        single = tmp_path / f"single{k}"
        _train(single, *base, f"seed={k}", f"noise.seed={k}")
        _assert_same_run(job / "replicas" / str(k), single, exact=mode == "loop")


def test_killed_stacked_job_resumes_as_if_uninterrupted(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _train(whole, *MLP, "trainer.replicas=3", VARY)
    # (cut at an epoch where the layer metrics are due anyway, as a cut run evaluates its last)
    _train(cut, *MLP, "trainer.replicas=3", VARY, "trainer.max_epochs=3")
    # as if killed after epoch 3: the checkpoint stays, the results are not written yet
    for f in [cut / "metrics.json", *(cut / "replicas").glob("*/metrics.json")]:
        f.unlink()
    summary = _train(cut, *MLP, "trainer.replicas=3", VARY)
    assert summary["epochs"] == json.loads((whole / "metrics.json").read_text())["epochs"]
    for k in range(3):
        a, b = (json.loads((d / "replicas" / str(k) / "metrics.json").read_text())
                for d in (cut, whole))
        a["replica"].pop("job"), b["replica"].pop("job")
        assert a == b
        assert _history(cut / "replicas" / str(k)).equals(_history(whole / "replicas" / str(k)))
    # and a finished stacked job is skipped
    again = _train(cut, *MLP, "trainer.replicas=3", VARY)
    assert again == json.loads((cut / "metrics.json").read_text())
    # killed after its last checkpoint (every replica stopped), before its results: the
    # rerun trains no further epoch and writes what the first run would have
    before = {f: f.read_text() for f in cut.rglob("*") if f.name in ("metrics.json",
                                                                      "history.csv")}
    for f in [cut / "metrics.json", *(cut / "replicas").glob("*/metrics.json")]:
        f.unlink()
    _train(cut, *MLP, "trainer.replicas=3", VARY)
    after = {f: f.read_text() for f in before}
    for f in before:
        if f.name == "metrics.json":
            assert json.loads(after[f]) == json.loads(before[f]), f
        else:
            assert after[f] == before[f], f


@pytest.mark.parametrize("overrides, says", [
    (["model=cnn", "model.batchnorm=true"], "batch norm"),
    (["model.dropout=0.5"], "model.dropout=0.5"),
    (["model.input_noise=0.1"], "model.input_noise"),
    (["relabel.enabled=true"], "relabel"),
    (["optim._target_=torch.optim.LBFGS", "optim.weight_decay=null", "optim.momentum=null"],
     "elementwise"),
    (["+trainer.gradient_clip_val=1.0"], "gradient clipping"),
    (["data.augment.hflip=true", "data=cifar10"], "data.augment"),
    (["replicas.vary=[data.batch_size]"], "cannot vary"),
    (["replicas.mode=fast"], "replicas.mode"),
    (["replicas.vary=[]"], "the same run S times"),
    (["replicas.vary=[seed,data.train_seed]"], "data.train_size=null keeps every sample"),
    (["noise=none", "replicas.vary=[noise.seed]"], "noise=none draws nothing"),
    (["trainer.check_val_every_n_epoch=2"], "check_val_every_n_epoch"),
])
def test_what_cannot_be_stacked_is_refused(tmp_path, overrides, says):
    with pytest.raises(ConfigError, match=says) as err:
        validate(compose_config([*QUIET, "trainer.replicas=2", *overrides], tmp_path))
    assert "\n" not in str(err.value)


def test_bad_replica_count_is_one_line(tmp_path):
    res = run_cli(["trainer.replicas=0", *QUIET, f"hydra.run.dir={tmp_path / 'x'}"], tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: trainer.replicas=0 must be an integer >= 1 (how many seeds one job trains at "
        "once)"]


@pytest.mark.slow
def test_ddp_stacked_job_reports_each_replicas_exact_accuracy(tmp_path):
    """2 CPU processes, 2 replicas: each replica's logged accuracies are those of its final
    weights evaluated in one process (sums over ranks, per replica)."""
    out = tmp_path / "ddp"
    res = run_cli(["trainer=ddp_cpu", *QUIET, *MLP, "trainer.max_epochs=2", "trainer.replicas=2",
                   VARY, "data.eval_batch_size=50", "metrics=none", f"hydra.run.dir={out}"],
                  tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    from memorization.data import DataModule
    from memorization.metrics.subset_accuracy import subset_accuracy
    from memorization.models import MLP as Net

    for k in range(2):
        rep = out / "replicas" / str(k)
        cfg = OmegaConf.load(rep / "config_resolved.yaml")
        final = json.loads((rep / "metrics.json").read_text())["final"]
        data, model = (OmegaConf.to_container(cfg[key], resolve=True) for key in ("data", "model"))
        dm = DataModule(**{key: v for key, v in data.items() if key != "_target_"},
                        noise=dict(cfg.noise))
        dm.setup("fit")
        net = Net(**{key: v for key, v in model.items() if key != "_target_"})
        net.load_state_dict(torch.load(rep / "model.pt", weights_only=True))
        net.eval()
        with torch.no_grad():
            tr, te = dm.splits["train"].tensors, dm.splits["test"].tensors
            train_acc = subset_accuracy(net(tr["x"]).argmax(1), tr["y"], tr["y_true"],
                                        tr["corrupted"])
            test_acc = subset_accuracy(net(te["x"]).argmax(1), te["y"])
        assert final["train/acc"] == pytest.approx(float(train_acc["acc"]), abs=1e-7)
        assert final["train/acc_corrupted"] == pytest.approx(
            float(train_acc["acc_corrupted"]), abs=1e-7)
        assert final["test/acc"] == pytest.approx(float(test_acc["acc"]), abs=1e-7)


@pytest.mark.slow
def test_sweep_of_stacked_jobs_reports_every_replica(tmp_path):
    """Two stacked jobs under the parallel launcher: four runs in the report, four W&B runs
    in the sweep's group, each named by its values."""
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", *QUIET,
                   "logger=wandb", *MLP, "trainer.max_epochs=2", "metrics=none",
                   "trainer.replicas=2", "noise.p=0,0.3", "hydra.callbacks.report.figures=false",
                   f"hydra.sweep.dir={sweep}"], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    final = pd.read_csv(sweep / "report" / "final.csv", dtype={"job": str})
    assert list(final["job"]) == ["0/replicas/0", "0/replicas/1", "1/replicas/0", "1/replicas/1"]
    assert list(final["noise.p"]) == [0, 0, 0.3, 0.3] and list(final["seed"]) == [0, 1, 0, 1]
    for job, p in (("0", 0), ("1", 0.3)):
        for k in range(2):
            run = read_offline_run(sweep / job / "replicas" / str(k))
            assert run["group"] == str(sweep)
            assert run["name"] == f"noise.p={p},seed={k}"
            assert [r["epoch"] for r in run["history"]] == [1, 2]
    shutil.rmtree(sweep)


def test_wandb_names_carry_the_replicas_values():
    from memorization.jobs.stacked import _run_name

    cfg = OmegaConf.create({"logger": {"wandb": {"name": "noise.p=0.2,seed=10"}}})
    rcfg = OmegaConf.create({"seed": 12, "noise": {"seed": 2}})
    assert _run_name(cfg, rcfg, ["seed"]) == "noise.p=0.2,seed=12"  # in place, not twice
    assert _run_name(cfg, rcfg, ["seed", "noise.seed"]) == "noise.p=0.2,seed=12,noise.seed=2"
    cfg.logger.wandb.name = "default"
    assert _run_name(cfg, rcfg, ["seed"]) == "seed=12"


def test_report_reads_the_replicas_of_the_run_in_the_folder(tmp_path):
    """A folder reused by a single run keeps the old replicas' folders: they are not its runs;
    a stacked job's are, up to its replica count."""
    from memorization.cli.report.data import find_jobs

    job = tmp_path / "0"
    for k in range(3):
        (job / "replicas" / str(k)).mkdir(parents=True)
        (job / "replicas" / str(k) / "config_resolved.yaml").write_text("seed: 0\n")
    (job / "config_resolved.yaml").write_text("trainer: {replicas: 1}\n")
    assert find_jobs(tmp_path) == [job]
    (job / "config_resolved.yaml").write_text("trainer: {replicas: 2}\n")
    assert find_jobs(tmp_path) == [job / "replicas" / "0", job / "replicas" / "1"]
