"""The MASC relabel-and-retrain stage (memorization/jobs/relabel/): end to end on the digits through
the composed config, and its parts against values computed here independently."""

from __future__ import annotations

import json
import shutil

import hydra
import numpy as np
import pytest
import torch
from torch import nn

from memorization.base.errors import ConfigError
from memorization.cli.report import write_report
from memorization.cli.run import train
from memorization.engine.optim import OptimConfig
from memorization.jobs.folder import FIT, LAST, job_state
from memorization.jobs.relabel import retrain as retrain_module
from memorization.jobs.relabel.masc_layers import LABELLINGS
from memorization.jobs.relabel.retrain import retrain
from memorization.jobs.relabel.stage import label_changes, scalars, split_test
from memorization.jobs.validate import validate
from memorization.loggers.history import parse_key, read_history
from memorization.metrics.masc import class_grams, fit_subspaces, masc_predict
from memorization.models.probes import capture
from tests.conftest import compose_config, run_cli

TINY = ["data=digits", "model=mlp", "model.depth=2", "model.width=64", "trainer.max_epochs=3",
        "relabel.enabled=true", "relabel.max_epochs=3", "metrics=none", "logger=none",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "trainer.accelerator=cpu"]
N_TEST = 359  # the digits' test set


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The tiny job run once: (its folder, its summary, its config)."""
    out = tmp_path_factory.mktemp("relabel")
    cfg = compose_config(TINY, output_dir=out)
    return out, train(cfg), cfg


def _trained(cfg, out):
    """The fitted network (from its checkpoint) and the job's data, rebuilt here."""
    net = hydra.utils.instantiate(cfg.model, _convert_="all")
    state = torch.load(out / LAST, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    dm = hydra.utils.instantiate(cfg.data, noise=cfg.noise, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    return net.eval(), dm


def _outputs(net, x, layer):
    with torch.no_grad(), capture(net, names=[layer]) as store:
        net(x)
        return store["out"][layer].flatten(1)


# ------------------------------------------------------------------------- the job


def test_the_job_writes_its_relabel_results(job):
    out, summary, _ = job
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(summary)) and "relabel" in on_disk
    assert job_state(out) == "finished" and not (out / FIT).exists()
    node = summary["relabel"]
    assert set(LABELLINGS) <= set(node) and node["layers"] == ["input", "fc1", "fc2"]
    # the split: 20% held out, the rest reported, from the test set alone
    s = node["split"]
    assert (s["n_val"], s["n_test"], s["n_train"]) == (72, N_TEST - 72, 1438)


def test_wrong_labels_fixed_minus_broken_is_the_change(job):
    _, summary, _ = job
    frac = summary["corruption"]["fraction_corrupted"]  # label_flip: a corrupted label is wrong
    for lab in LABELLINGS:
        n = summary["relabel"][lab]
        assert n["n_fixed"] - n["n_broken"] == n["n_wrong_before"] - n["n_wrong_after"]
        assert n["fixed"] - n["broken"] == pytest.approx(n["wrong_before"] - n["wrong_after"])
        assert n["wrong_before"] == pytest.approx(frac)
        for key in ("wrong_before", "wrong_after", "fixed", "broken", "changed",
                    "masc_val_acc", "masc_test_acc", "test_acc_after"):
            assert 0 <= n[key] <= 1, (lab, key)
    # relabeling with true-label subspaces repairs more than it breaks here
    assert summary["relabel"]["masc_true"]["wrong_after"] < frac


def test_best_layer_is_the_held_out_argmax_earliest_on_ties(job):
    _, summary, _ = job
    node = summary["relabel"]
    for lab in LABELLINGS:
        n = node[lab]
        assert 0 <= n["best_layer_index"] < len(node["layers"])
        assert node["layers"][n["best_layer_index"]] == n["best_layer"]
        val = [n["layer_val_acc"][la] for la in node["layers"]]
        assert n["best_layer_index"] == val.index(max(val))  # the first maximum
        assert n["masc_test_acc"] == n["layer_test_acc"][n["best_layer"]]


def test_accuracies_are_on_the_reported_80_percent(job):
    out, summary, cfg = job
    node = summary["relabel"]
    net, dm = _trained(cfg, out)
    test = dm.splits["test"].tensors
    held, rest = split_test(N_TEST, 0.2, 0)
    assert len(held) == node["split"]["n_val"] and len(rest) == node["split"]["n_test"]
    with torch.no_grad():
        pred = net(test["x"]).argmax(1)
    assert node["model"]["test_acc_before"] == pytest.approx(
        (pred[rest] == test["y"][rest]).double().mean().item())
    assert node["model"]["test_acc_before"] != pytest.approx(
        (pred == test["y"]).double().mean().item())  # not the whole test set's
    for lab in LABELLINGS:
        n = node[lab]
        hits = n["test_acc_after"] * len(rest)
        assert hits == pytest.approx(round(hits))  # a count over the 80% part
        best = n["curve"][n["best_epoch"] - 1]
        assert n["test_acc_after"] == pytest.approx(best["test_acc"])  # the restored epoch
        assert n["epochs"] == len(n["curve"]) <= 3


def test_relabeled_labels_are_the_best_layers_masc_predictions(job):
    out, summary, cfg = job
    net, dm = _trained(cfg, out)
    train_set = dm.splits["train"].tensors
    saved = np.load(out / "relabel.npz")
    assert (saved["train_labels"] == train_set["y"].numpy()).all()
    for lab, labels in (("masc", train_set["y"]), ("masc_true", train_set["y_true"])):
        layer = summary["relabel"][lab]["best_layer"]
        x = _outputs(net, train_set["x"], layer)
        bases, _ = fit_subspaces(class_grams(x, labels, 10), 0.99, samples=(x, labels))
        pred = masc_predict(x, bases)
        expected = torch.where(pred >= 0, pred, train_set["y"])  # a zero vector keeps its label
        assert (torch.from_numpy(saved[lab]) == expected).all(), lab
        n = summary["relabel"][lab]
        assert n["n_changed"] == int((expected != train_set["y"]).sum())


def test_random_init_control_per_layer(job):
    _, summary, _ = job
    node = summary["relabel"]
    for lab in LABELLINGS:
        for split in ("test", "train", "train_true"):
            per = node["init"][lab][split]
            assert set(per) == set(node["layers"]) and all(0 <= v <= 1 for v in per.values())
        # the input layer depends on the data only: the same as the trained network's
        assert node["init"][lab]["test"]["input"] == node[lab]["layer_test_acc"]["input"]
    # the untrained network is another one than the trained (its fc layers differ)
    assert node["init"]["masc"]["train"]["fc2"] != node["masc"]["layer_train_acc"]["fc2"]


def test_numbers_go_to_the_history_with_clear_keys(job):
    out, summary, _ = job
    flat = scalars(summary["relabel"])
    for key in ("relabel/masc/test_acc_after", "relabel/masc_true/best_layer_index",
                "relabel/model/test_acc_before", "relabel/masc/fixed",
                "relabel/init/masc/test/fc1"):
        assert key in flat, key
    assert parse_key("relabel/masc/test_acc_after") == ("masc/test_acc_after", "relabel", "")
    h = read_history(out / "history.csv")
    rows = h[h["split"] == "relabel"]
    assert len(rows) == len(flat) and set(rows["epoch"]) == {3}
    got = dict(zip("relabel/" + rows["metric"], rows["value"], strict=True))
    assert got == pytest.approx(flat)


def test_summary_table(job):
    from memorization.jobs.relabel.stage import format_relabel

    _, summary, _ = job
    n = summary["relabel"]
    text = format_relabel(n)
    for name in ("best layer (held-out MASC acc)", "model test acc after retrain",
                 "wrong training labels", "fixed / newly broken", "random init"):
        assert name in text, name
    assert f"{100 * n['masc']['test_acc_after']:.1f}%" in text
    assert f"{n['split']['n_val']} held out, {n['split']['n_test']} reported" in text


# -------------------------------------------------------------------- resume


def test_a_job_killed_in_its_stage_reruns_the_stage_not_the_fit(job, tmp_path, monkeypatch,
                                                                 capsys):
    from memorization.jobs.relabel import job as relabel_job

    def boom(*args, **kwargs):
        raise RuntimeError("killed in the stage")

    monkeypatch.setattr(relabel_job, "run_relabel", boom)
    with pytest.raises(RuntimeError, match="killed in the stage"):
        train(compose_config(TINY, output_dir=tmp_path))
    assert not (tmp_path / "metrics.json").exists() and (tmp_path / FIT).is_file()
    assert job_state(tmp_path) == "fitted"
    ckpt = (tmp_path / LAST).stat().st_mtime_ns
    monkeypatch.undo()
    capsys.readouterr()
    summary = train(compose_config(TINY, output_dir=tmp_path))
    assert "running its relabel stage again" in capsys.readouterr().out
    assert (tmp_path / LAST).stat().st_mtime_ns == ckpt  # no training: the fit's weights
    assert job_state(tmp_path) == "finished" and not (tmp_path / FIT).exists()
    # the same numbers as the job that ran straight through (same seeds, on a CPU)
    straight = job[1]
    assert json.loads(json.dumps(summary)) == json.loads(json.dumps(straight))
    h = read_history(tmp_path / "history.csv")
    assert h["epoch"].max() == 3 and (h["split"] == "relabel").sum() == len(
        scalars(straight["relabel"]))


# ------------------------------------------------------------ early stopping


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(seed)
    return nn.Linear(5, 3), x, y


@pytest.mark.parametrize("monitor", ["acc", "loss"])
def test_early_stopping_stops_and_restores_the_best_epoch(monkeypatch, monitor):
    """A held-out value that only gets worse: with patience 1, training stops after epoch 2 and
    the weights of epoch 1 come back."""
    calls = []

    def worsening(net, x, y, loss_fn, batch_size, device):
        calls.append(1)
        k = len(calls)  # two calls an epoch: held-out, then report
        return torch.tensor(1.0 - 0.1 * k, dtype=torch.float64), torch.tensor(0.1 * k)

    monkeypatch.setattr(retrain_module, "evaluate", worsening)
    net, x, y = _toy()
    snapshots = {}

    def keep(row):
        snapshots[row["epoch"]] = {k: v.clone() for k, v in net.state_dict().items()}

    res = retrain(net, x, y, (x, y), (x, y), OptimConfig(lr=0.1),
                  nn.functional.cross_entropy, max_epochs=10, patience=1, monitor=monitor,
                  batch_size=8, progress=keep)
    assert res.stopped_early and len(res.curve) == 2 and res.best_epoch == 1
    assert not torch.equal(snapshots[1]["weight"], snapshots[2]["weight"])
    assert all(torch.equal(v, snapshots[1][k]) for k, v in res.net.state_dict().items())


@pytest.mark.parametrize("held_out, best, epochs", [
    ([0.5, 0.5, 0.5, 0.5], 1, 4),  # ties are no improvement: 3 epochs of patience after the 1st
    ([0.5, 0.6, 0.6, 0.6, 0.6], 2, 5),  # an improvement resets the count
    ([0.5, 0.4, 0.4, 0.7, 0.6, 0.6, 0.6], 4, 7),
])
def test_ties_are_no_improvement_and_patience_counts_epochs(monkeypatch, held_out, best, epochs):
    values = iter([v for h in held_out + [0.99] * 30 for v in (h, 0.0)])  # held-out, report

    def scripted(net, x, y, loss_fn, batch_size, device):
        return torch.tensor(next(values), dtype=torch.float64), torch.tensor(1.0)

    monkeypatch.setattr(retrain_module, "evaluate", scripted)
    net, x, y = _toy()
    res = retrain(net, x, y, (x, y), (x, y), OptimConfig(lr=0.1),
                  nn.functional.cross_entropy, max_epochs=30, patience=3, batch_size=8)
    assert [r["val_acc"] for r in res.curve] == held_out
    assert res.best_epoch == best and len(res.curve) == epochs and res.stopped_early


def test_retraining_without_a_stop_runs_max_epochs():
    net, x, y = _toy()
    res = retrain(net, x, y, (x, y), (x, y), OptimConfig(lr=0.5),
                  nn.functional.cross_entropy, max_epochs=4, patience=10, batch_size=8)
    assert len(res.curve) == 4 and not res.stopped_early
    assert res.curve[-1]["train_loss"] < res.curve[0]["train_loss"]


# ------------------------------------------------------------------ parts


def test_split_is_seeded_disjoint_and_whole():
    a, b = split_test(359, 0.2, 0)
    assert len(a) == 72 and len(b) == 287
    assert sorted(torch.cat([a, b]).tolist()) == list(range(359))
    assert torch.equal(split_test(359, 0.2, 0)[0], a)
    assert not torch.equal(split_test(359, 0.2, 1)[0], a)


def test_label_changes_identity_on_random_labels():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y_true = torch.randint(0, 4, (200,), generator=g)
        y_old = torch.where(torch.rand(200, generator=g) < 0.4,
                            torch.randint(0, 4, (200,), generator=g), y_true)
        y_new = torch.where(torch.rand(200, generator=g) < 0.5, y_true,
                            torch.randint(0, 4, (200,), generator=g))
        c = label_changes(y_old, y_new, y_true)
        assert c["n_fixed"] - c["n_broken"] == c["n_wrong_before"] - c["n_wrong_after"]
        assert c["n_wrong_before"] == int((y_old != y_true).sum())


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("override, words", [
    ("relabel.patience=0", "relabel.patience=0 must be an integer >= 1"),
    ("relabel.max_epochs=0", "relabel.max_epochs=0"),
    ("relabel.monitor=f1", "relabel.monitor='f1' must be one of acc, loss"),
    ("relabel.val_fraction=1", "relabel.val_fraction=1 must be strictly between 0 and 1"),
    ("relabel.variance=0", "relabel.variance=0 keeps no component"),
    ("relabel.split_seed=-1", "relabel.split_seed=-1"),
])
def test_bad_values_fail_in_one_line(make_cfg, override, words):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(override))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_layer_pattern_matching_nothing_fails_before_training(tmp_path):
    cfg = compose_config([*TINY, "relabel.layers=[conv*]"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="relabel.layers: 'conv\\*' matches no probe layer"):
        train(cfg)
    assert not (tmp_path / LAST).exists()


def test_cli_error_is_one_line(tmp_path):
    res = run_cli(["relabel.patience=0", "--cfg", "job"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: relabel.patience=0 must be an integer >= 1 (the MASC paper: 3)"]


def test_a_disabled_stage_is_no_setting_of_a_finished_job(tmp_path):
    """Folders from before the stage existed (no relabel keys) are still skipped, not
    refused; switching the stage on is another run."""
    from memorization.jobs.folder import config_changes

    (tmp_path / "config_resolved.yaml").write_text("seed: 0\n")
    assert config_changes(tmp_path, {"seed": 0, "relabel": {"enabled": False, "patience": 3}}) \
        == []
    assert config_changes(tmp_path, {"seed": 0, "relabel": {"enabled": True}}) == [
        "relabel.enabled: None -> True"]


# ------------------------------------------------------------------ report


def test_the_sweep_report_has_the_relabel_table(job, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out, summary, _ = job
    sweep = tmp_path / "sweep"
    shutil.copytree(out, sweep / "0")
    from tests.cli.test_report import make_job

    make_job(sweep / "1", 0.4, 0, 3, [0.5, 0.6, 0.7])  # a job without the stage
    report = write_report([sweep], figures=False, wandb=False)
    text = (sweep / "report" / "relabel.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 0 ")]
    assert len(rows) == 1 and "| 1 " not in text
    n = summary["relabel"]
    for v in (n["model"]["test_acc_before"], n["masc"]["test_acc_after"],
              n["masc_true"]["masc_test_acc"], n["masc"]["fixed"], n["masc"]["broken"]):
        assert f"{100 * v:.1f}%" in rows[0]
    assert f"| {n['masc']['best_layer']} |" in rows[0]
    assert "MASC relabel and retrain" in report.table
    import pandas as pd

    csv = pd.read_csv(sweep / "report" / "relabel.csv")
    assert list(csv["job"].astype(str)) == ["0"]
    assert csv["relabel/masc/test_acc_after"][0] == pytest.approx(n["masc"]["test_acc_after"])


@pytest.mark.slow
def test_the_stage_runs_under_ddp_on_rank_zero(tmp_path):
    """A 2-process CPU DDP job: rank zero runs the stage alone after the fit, so its MASC
    refits and its retraining must not wait on the other rank (they once all-reduced with a
    rank that had left)."""
    out = tmp_path / "ddp"
    res = run_cli(["trainer=ddp_cpu", "relabel.enabled=true", "relabel.max_epochs=2",
                   "metrics=none", "logger=none", "trainer.max_epochs=2",
                   "stop_at_train_acc=null", f"hydra.run.dir={out}"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    node = json.loads((out / "metrics.json").read_text())["relabel"]
    for lab in LABELLINGS:
        assert 1 <= node[lab]["epochs"] <= 2
    saved = np.load(out / "relabel.npz")
    assert saved["masc"].shape == saved["train_labels"].shape
