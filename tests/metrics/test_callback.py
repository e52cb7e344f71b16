"""The epoch-end driver: values equal the pure functions, hooks and modes restored, keys logged."""

from __future__ import annotations

import math

import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.cli.run import train
from memorization.data import DataModule
from memorization.metrics import mean_cosine, polarization
from memorization.metrics.callback import LayerMetrics, format_layer_table
from memorization.metrics.config import read_metrics_config
from memorization.metrics.masc import (
    class_grams,
    fit_subspaces,
    fit_subspaces_from_samples,
    masc_predict,
)
from memorization.metrics.subset_accuracy import subset_accuracy
from memorization.models import MLP, capture
from tests.conftest import compose_config

SYN = dict(source="synthetic", shape=(1, 4, 4), num_classes=3, batch_size=16,
           source_options={"n_train": 120, "n_test": 45, "num_classes": 3, "shape": (1, 4, 4)})


def _setup(**metrics):
    dm = DataModule(**SYN, noise={"name": "label_flip", "p": 0.3, "seed": 1})
    dm.setup("fit")
    torch.manual_seed(0)
    net = MLP(in_shape=(1, 4, 4), num_classes=3, depth=2, width=8)
    cb = LayerMetrics(metrics)
    trainer = type("T", (), {"datamodule": dm})()
    cb.setup(trainer, type("M", (), {"net": net})(), "fit")
    return dm, net, cb


@pytest.mark.parametrize("method,cache_gb", [("gram", 1.0), ("gram", 0.0), ("samples", 1.0)])
def test_callback_values_equal_the_pure_functions(method, cache_gb):
    # cache_gb 0: no layer's outputs are kept, MASC scores the training set in a second pass
    dm, net, cb = _setup(probe_size=70, batch_size=32,
                         masc={"method": method, "max_cache_gb": cache_gb},
                         csr={"enabled": False})
    logs = cb.compute(dm, net)
    tr = {k: v[cb.probe["train"]] for k, v in dm.splits["train"].tensors.items()}
    te = dm.splits["test"].tensors
    net.eval()
    with torch.no_grad(), capture(net, inputs=True) as store:
        net(tr["x"])
        train_out, train_in = dict(store["out"]), dict(store["in"])
        net(te["x"])
        test_out, test_in = dict(store["out"]), dict(store["in"])
    for layer in net.probe_layers():
        name = layer.name
        out = train_out[name].flatten(1)
        if layer.weight is not None:
            want = mean_cosine(layer.weight.weight, train_in[name], out)
            assert logs[f"cosine/train/{name}"].item() == pytest.approx(want["cosine"].item())
            assert logs[f"dead/train/{name}"].item() == pytest.approx(want["dead"].item())
            want_test = mean_cosine(layer.weight.weight, test_in[name], test_out[name])
            assert logs[f"cosine/test/{name}"].item() == pytest.approx(
                want_test["cosine"].item())
        else:
            assert f"cosine/train/{name}" not in logs  # the input layer has no weights
        # c = the true class under polarization/ (the default, the paper's reading), the
        # training label under polarization_trainlabel/
        for key, labels in (("polarization", tr["y_true"]),
                            ("polarization_trainlabel", tr["y"])):
            want_pol = polarization(out, labels, tr["corrupted"], 3)
            assert logs[f"{key}/train/{name}"].item() == pytest.approx(want_pol.item())
        for key, labels in (("masc", tr["y"]), ("masc_true", tr["y_true"])):
            bases, n_comp = (fit_subspaces(class_grams(out, labels, 3), 0.99) if method == "gram"
                             else fit_subspaces_from_samples(out, labels, 3, 0.99))
            pred = masc_predict(out, bases)
            acc = subset_accuracy(pred, tr["y"], tr["y_true"], tr["corrupted"])
            assert logs[f"{key}/train/{name}"].item() == pytest.approx(acc["acc"].item())
            assert logs[f"{key}/train_true/{name}"].item() == pytest.approx(
                acc["acc_true"].item())
            test_acc = (masc_predict(test_out[name].flatten(1), bases) == te["y"]).double().mean()
            assert logs[f"{key}/test/{name}"].item() == pytest.approx(test_acc.item())
            assert logs[f"{key}/components/{name}"].item() == pytest.approx(
                n_comp.double().mean().item())


def test_input_layer_values_are_computed_once_and_reused(monkeypatch):
    dm, net, cb = _setup(probe_size=70, batch_size=32, csr={"enabled": False})
    first = cb.compute(dm, net)
    with torch.no_grad():  # training moves the weights, never the input
        for p in net.parameters():
            p.mul_(1.5).add_(0.1)
    widths = []
    masc = cb.metrics["masc"]
    fitter = masc._new_fit
    monkeypatch.setattr(masc, "_new_fit", lambda d: widths.append(d) or fitter(d))
    second = cb.compute(dm, net)
    assert 16 not in widths and widths  # the 4x4 input was not fitted again, the hidden layers were
    fresh = _setup(probe_size=70, batch_size=32, csr={"enabled": False})[2].compute(dm, net)
    assert second.keys() == fresh.keys() == first.keys()
    for key in fresh:
        assert torch.equal(second[key], fresh[key]), key
        if key.endswith("/input"):
            assert torch.equal(second[key], first[key]), key


def test_masc_on_chosen_layers_only():
    dm, net, cb = _setup(probe_size=40, masc={"layers": ["input", "fc*"]}, csr={"enabled": False})
    logs = cb.compute(dm, net)
    assert {k.split("/")[-1] for k in logs if k.startswith("masc/test/")} == {"input", "fc1", "fc2"}
    _, _, cb = _setup(masc={"layers": ["fc2"]}, csr={"enabled": False})
    logs = cb.compute(dm, net)
    assert {k.split("/")[-1] for k in logs if k.startswith("masc/")} == {"fc2"}
    assert "polarization/train/fc1" in logs  # the other metrics keep every layer
    with pytest.raises(ConfigError, match="'conv\\*' matches no probe layer.*input, fc1, fc2"):
        _setup(masc={"layers": ["conv*"]})


def test_a_rank_without_probe_samples_still_runs_every_metric(monkeypatch):
    # under DDP a probe set smaller than the world leaves some ranks an empty share: they must
    # still create and sync every metric (else the other ranks wait forever), so every metric
    # takes an empty batch; simulated here as rank 3 of 4 with 2 probe samples
    import memorization.metrics.callback as callback

    for method in ("gram", "samples"):
        dm, net, cb = _setup(probe_size=2, masc={"method": method}, csr={"n": 2})
        monkeypatch.setattr(callback, "rank_world", lambda: (3, 4))
        logs = cb.compute(dm, net)
        monkeypatch.undo()
        assert math.isnan(float(logs["masc/train/fc1"])) and logs["masc/components/fc1"] == 0
        assert math.isnan(float(logs["cosine/train/fc1"])) and logs["dead/train/fc1"] == 1
        assert math.isnan(float(logs["polarization/train/fc1"]))
        assert math.isnan(float(logs["csr/test"]))
        assert 0 <= float(logs["masc/test/fc1"]) <= 1  # its share of the 45 test samples


def test_hooks_removed_and_mode_restored_even_on_error(monkeypatch):
    dm, net, cb = _setup(csr={"enabled": False})
    net.train()
    cb.compute(dm, net)
    assert net.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    net.eval()
    cb.compute(dm, net)
    assert not net.training

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(cb.metrics["masc"], "fit", boom)
    net.train()
    with pytest.raises(RuntimeError, match="boom"):
        cb.compute(dm, net)
    assert net.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_csr_runs_on_a_fixed_subset_and_leaves_weights_alone():
    dm, net, cb = _setup(cosine={"enabled": False}, polarization={"enabled": False},
                         masc={"enabled": False}, csr={"n": 20, "r": 30.0, "alpha": 10.0})
    before = [p.detach().clone() for p in net.parameters()]
    a = cb.compute(dm, net)["csr/test"]
    b = cb.compute(dm, net)["csr/test"]
    assert a == b and 0.0 <= a.item() <= 1.0
    assert len(cb.metrics["csr"].idx) == 20
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))
    assert all(p.grad is None for p in net.parameters())


def test_probe_subset_is_fixed_by_its_seed():
    _, _, a = _setup(probe_size=50, probe_seed=3)
    _, _, b = _setup(probe_size=50, probe_seed=3)
    _, _, c = _setup(probe_size=50, probe_seed=4)
    assert torch.equal(a.probe["train"], b.probe["train"]) and len(a.probe["train"]) == 50
    assert not torch.equal(a.probe["train"], c.probe["train"])


@pytest.mark.parametrize(("cfg", "message"), [
    ({"every_n_epochs": 0}, "metrics.every_n_epochs=0"),
    ({"masc": {"variance": 1.5}}, "metrics.masc.variance=1.5"),
    ({"masc": {"method": "svd"}}, "metrics.masc.method='svd'"),
    ({"polarization": {"labels": "x"}}, "metrics.polarization.labels='x'"),
    ({"csr": {"split": "val"}}, "metrics.csr.split='val'"),
    ({"csr": {"r": -1}}, "must be >= 0"),
])
def test_bad_metric_settings_fail_in_one_line(cfg, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        read_metrics_config(cfg)


def test_table_lists_layers_in_order():
    text = format_layer_table({"cosine/train/fc1": 0.5, "polarization/train/input": 1.0,
                               "polarization/train/fc1": 0.25, "csr/test": 0.1},
                              ["input", "fc1"])
    header = next(line for line in text.splitlines() if "input" in line)
    assert header.index("input") < header.index("fc1")
    assert "csr/test: 0.100" in text


def test_fit_logs_every_metric_key(tmp_path):
    cfg = compose_config(["data=synthetic", "logger=none", "trainer.enable_progress_bar=false",
                          "trainer.enable_model_summary=false", "trainer.accelerator=cpu",
                          "trainer.max_epochs=3", "stop_at_train_acc=null",
                          "metrics.every_n_epochs=2", "model.depth=2", "model.width=16",
                          "metrics.csr.n=10"], output_dir=tmp_path)
    summary = train(cfg)
    final = summary["final"]
    layers = ["input", "fc1", "fc2"]
    expected = [f"{m}/{s}/{lay}" for lay in layers
                for m in ("masc", "masc_true") for s in ("train", "train_true", "test",
                                                         "components")]
    expected += [f"polarization/train/{lay}" for lay in layers]
    expected += [f"{m}/{s}/{lay}" for lay in layers[1:] for m in ("cosine", "dead")
                 for s in ("train", "test")]
    expected += ["csr/test"]
    missing = [k for k in expected if k not in final]
    assert not missing, missing
    comps = summary["masc_components"]
    assert sorted(comps) == sorted(f"{m}/{lay}" for m in ("masc", "masc_true") for lay in layers)
    for key, per_class in comps.items():
        name, layer = key.split("/")
        assert len(per_class) == 3
        assert sum(per_class) / 3 == pytest.approx(final[f"{name}/components/{layer}"], abs=1e-5)
    assert all(final[k] is None or not math.isnan(final[k]) for k in expected)


def test_metrics_on_a_convolutional_network(tmp_path):
    """Cosine per filter over patches for conv layers; polarization and MASC treat a conv output
    as a vector; a layer too wide for MASC's memory limit is skipped, not fatal."""
    cfg = compose_config(["data=synthetic", "data.shape=[3,8,8]", "model=small_alexnet",
                          "logger=none", "trainer.enable_progress_bar=false",
                          "trainer.accelerator=cpu", "trainer.max_epochs=1",
                          "stop_at_train_acc=null", "metrics.csr.n=8",
                          "metrics.masc.max_gram_gb=0.0005"], output_dir=tmp_path)
    final = train(cfg)["final"]
    assert "cosine/train/fc1" in final and "cosine/train/conv1" in final
    assert -1 <= final["cosine/test/conv2"] <= 1
    assert "polarization/train/conv1" in final and "polarization/train/conv2" in final
    # conv1's output is 64*8*8 = 4096 wide: 96 samples x 4096 x 4 bytes = 1.5 MiB > 0.5 MB
    assert "masc/test/conv1" not in final and "masc/test/fc2" in final
