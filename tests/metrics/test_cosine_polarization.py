"""Theunissen et al.'s per-layer metrics on hand-worked cases, plus their invariances."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memorization.base.errors import ConfigError
from memorization.metrics.cosine import (
    ConvGeometry,
    MeanCosine,
    cosine_sums,
    layer_cosine_sums,
    mean_cosine,
)
from memorization.metrics.polarization import (
    Polarization,
    PolarizationConfig,
    PolarizationMetric,
    polarization,
)
from memorization.metrics.protocol import Context, Probe
from memorization.models.probes import ProbeLayer


def _layer():
    # 3 nodes on 2-D inputs, no bias: w0 = (1, 0), w1 = (1, 1), w2 = (0, -1)
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # a_{l-1} of 3 samples
    return w, a, torch.relu(a @ w.t())


def test_cosine_hand_worked():
    w, a, out = _layer()
    # node 0: w0.a = 1, 0, -1 -> active on sample 0 only; cos(w0, a0) = 1
    # node 1: w1.a = 1, 1, -1 -> active on samples 0, 1; cos = 1/sqrt2 each -> mean 1/sqrt2
    # node 2: w2.a = 0, -1, 0 -> never > 0: dead, omitted
    # mu = (1 + 1/sqrt2) / 2 over the 2 live nodes; dead fraction 1/3
    s, n = cosine_sums(w, a, out)
    assert n.tolist() == [1, 2, 0]
    assert torch.allclose(s, torch.tensor([1.0, 2 / math.sqrt(2), 0.0]))
    res = mean_cosine(w, a, out)
    assert math.isclose(res["cosine"].item(), (1 + 1 / math.sqrt(2)) / 2, rel_tol=1e-6)
    assert math.isclose(res["dead"].item(), 1 / 3, rel_tol=1e-9)


def test_cosine_invariant_to_scaling_weight_rows_and_inputs():
    g = torch.Generator().manual_seed(0)
    w, a = torch.randn(8, 5, generator=g), torch.randn(50, 5, generator=g)
    out = torch.relu(a @ w.t())
    base = mean_cosine(w, a, out)["cosine"]
    scale_w = torch.rand(8, 1, generator=g) * 10 + 0.1
    scale_a = torch.rand(50, 1, generator=g) * 10 + 0.1
    # positive scaling changes neither the angles nor which samples are active
    moved = mean_cosine(w * scale_w, a * scale_a, torch.relu((a * scale_a) @ (w * scale_w).t()))
    assert torch.allclose(base, moved["cosine"], atol=1e-6)


def test_cosine_limits_and_zero_vectors():
    w = torch.tensor([[2.0, 0.0]])
    a = torch.tensor([[3.0, 0.0], [0.0, 0.0]])  # a sample along w, and a zero vector
    out = torch.tensor([[6.0], [0.5]])  # pretend a bias made the zero input active
    # sample 0: cos = 1; sample 1: no angle -> 0; mean over the 2 active samples = 0.5
    assert math.isclose(mean_cosine(w, a, out)["cosine"].item(), 0.5)
    all_dead = mean_cosine(w, a, torch.zeros(2, 1))
    assert math.isnan(all_dead["cosine"].item()) and all_dead["dead"].item() == 1.0


def test_cosine_streaming_equals_one_shot():
    g = torch.Generator().manual_seed(1)
    w, a = torch.randn(16, 7, generator=g), torch.randn(90, 7, generator=g)
    out = torch.relu(a @ w.t())
    m = MeanCosine(16)
    for idx in torch.arange(90).split(25):
        m.update(w, a[idx], out[idx])
    one = mean_cosine(w, a, out)
    got = m.compute()
    assert torch.allclose(got["cosine"], one["cosine"].double(), atol=1e-6)
    assert got["dead"] == one["dead"]


def test_conv_cosine_hand_worked():
    # one 1x3 image x = (3, 4, 0); 1x2 filters w0 = (1, 0), w1 = (0, -1); stride 1, no padding
    x = torch.tensor([[[[3.0, 4.0, 0.0]]]])
    w = torch.tensor([[[[1.0, 0.0]]], [[[0.0, -1.0]]]])
    out = torch.relu(F.conv2d(x, w))  # [1, 2, 1, 2]
    # w0: patches (3, 4), (4, 0): dots 3, 4, both active; cos 3/5 and 4/4 -> mean 0.8
    # w1: dots -4, 0: never active -> dead
    s, n = cosine_sums(w, x, out)
    assert n.tolist() == [2, 0]
    assert torch.allclose(s, torch.tensor([1.6, 0.0]))
    res = mean_cosine(w, x, out)
    assert math.isclose(res["cosine"].item(), 0.8, rel_tol=1e-6) and res["dead"].item() == 0.5


def test_conv_cosine_equals_the_unfolded_patches():
    g = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x = torch.randn(4, 3, 9, 9, generator=g)
    with torch.no_grad():
        pre = conv(x)
        out = torch.relu(pre)
        s, n = layer_cosine_sums(conv, x, out, pre)
    # reference: every patch as a row (unfold), a plain linear layer over (image, position)
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 27)
    rows = out.permute(0, 2, 3, 1).reshape(-1, 5)
    ref_s, ref_n = cosine_sums(conv.weight.detach().flatten(1), patches, rows)
    assert torch.equal(n, ref_n)
    assert torch.allclose(s, ref_s, atol=1e-4)
    # without the pre-activation the products are recomputed, with the same result
    s2, _ = cosine_sums(conv.weight.detach(), x, out, conv=ConvGeometry.of(conv))
    assert torch.allclose(s2, ref_s, atol=1e-4)
    with pytest.raises(ValueError, match="groups=1"):
        ConvGeometry.of(nn.Conv2d(4, 4, 3, groups=2))


def test_conv_cosine_counts_near_zero_patches_as_zero():
    # 1x1 filter w = 1 with bias 1: every position active. Patches 5, 1e-4 and 0: the second is
    # below 1e-3 of the image's largest patch norm, so it has no angle (cos 0) like the zero one
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(1.0)
        x = torch.tensor([[[[5.0, 1e-4, 0.0]]]])
        pre = conv(x)
        s, n = layer_cosine_sums(conv, x, torch.relu(pre), pre)
    assert n.tolist() == [3] and torch.allclose(s, torch.tensor([1.0]))


def test_polarization_hand_worked():
    # 4 samples, 2 nodes, 2 classes
    labels = torch.tensor([0, 0, 0, 1])
    corrupted = torch.tensor([True, False, False, True])
    out = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    # node 0, class 0: active on samples 0, 1; 1 of 2 corrupted -> 2|1/2 - 1/2| = 0
    # node 0, class 1: active on sample 3, corrupted -> 2|1/2 - 1| = 1
    # node 1, class 0: active on sample 2, clean -> 2|1/2 - 0| = 1
    # node 1, class 1: no active sample -> omitted;   mean = (0 + 1 + 1) / 3
    assert math.isclose(polarization(out, labels, corrupted, 2).item(), 2 / 3, rel_tol=1e-9)


def test_polarization_limits():
    g = torch.Generator().manual_seed(2)
    out = torch.relu(torch.randn(60, 9, generator=g))
    labels = torch.randint(0, 3, (60,), generator=g)
    clean = torch.zeros(60, dtype=torch.bool)
    assert polarization(out, labels, clean, 3).item() == 1.0  # no corruption: 1 by the formula
    assert polarization(out, labels, ~clean, 3).item() == 1.0  # all corrupted: 1 as well
    # every sample duplicated, once clean and once corrupted: every sample set is half/half
    dup = torch.cat([out, out])
    half = torch.cat([clean, ~clean])
    assert polarization(dup, torch.cat([labels, labels]), half, 3).item() == 0.0
    assert math.isnan(polarization(torch.zeros(5, 2), labels[:5], clean[:5], 3).item())


def test_polarization_streaming_equals_one_shot():
    g = torch.Generator().manual_seed(3)
    out = torch.relu(torch.randn(77, 12, generator=g))
    labels = torch.randint(0, 4, (77,), generator=g)
    corrupted = torch.rand(77, generator=g) < 0.3
    m = Polarization(4, 12)
    for idx in torch.arange(77).split(20):
        m.update(out[idx], labels[idx], corrupted[idx])
    assert torch.allclose(m.compute(), polarization(out, labels, corrupted, 4))


# -- the two readings of the class c: true class (the paper's, the default) and training label --
#
# 8 samples, 2 classes. True classes: samples 0-3 are class 0, samples 4-7 class 1. Label noise
# flips sample 3 (true 0 -> trained as 1) and sample 7 (true 1 -> trained as 0):
#   y_true = 0 0 0 0 1 1 1 1,  y = 0 0 0 1 1 1 1 0,  corrupted = 3 and 7.
Y_TRUE = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
Y_TRAIN = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
CORRUPTED = torch.tensor([False, False, False, True, False, False, False, True])
# "early" layer, activity follows the TRUE class (a flipped image looks like its true class):
#   e0 active on true class 0 (samples 0-3), e1 on true class 1 (4-7), e2 on every sample,
#   e3 dead (never active)
EARLY = torch.tensor([[1.0, 0, 2, 0], [2, 0, 1, 0], [1, 0, 1, 0], [3, 0, 2, 0],
                      [0, 1, 1, 0], [0, 2, 3, 0], [0, 1, 1, 0], [0, 4, 2, 0]])
# "late" layer, activity follows the TRAINING label (trained to fit the flipped labels):
#   l0 active on training label 0 (samples 0, 1, 2, 7), l1 on training label 1 (3, 4, 5, 6),
#   l2 on every sample, l3 dead
LATE = torch.tensor([[1.0, 0, 1, 0], [1, 0, 2, 0], [2, 0, 1, 0], [0, 1, 1, 0],
                     [0, 2, 1, 0], [0, 1, 2, 0], [0, 3, 1, 0], [2, 0, 1, 0]])
# Hand-worked, pol = 2|1/2 - corrupted/active| per (class, node) with an active sample; the
# dead nodes and the (class, node) pairs with no active sample are left out:
#
# early, c = true class (the paper's reading):
#   e0: class 0 -> {0,1,2,3}, 1 of 4 corrupted -> 2|1/2 - 1/4| = 1/2;  class 1 -> {}: left out
#   e1: class 1 -> {4,5,6,7}, 1 of 4 -> 1/2;                           class 0 -> {}: left out
#   e2: class 0 -> {0,1,2,3}, 1/4 -> 1/2;  class 1 -> {4,5,6,7}, 1/4 -> 1/2
#   mean over 4 pairs = (1/2 + 1/2 + 1/2 + 1/2) / 4 = 1/2             -> low early
# early, c = training label:
#   e0: label 0 -> {0,1,2} (7 is silent), 0 corrupted -> 1;  label 1 -> {3}, corrupted -> 1
#   e1: label 0 -> {7}, corrupted -> 1;  label 1 -> {4,5,6}, clean -> 1
#   e2: label 0 -> {0,1,2,7}, 1/4 -> 1/2;  label 1 -> {3,4,5,6}, 1/4 -> 1/2
#   mean over 6 pairs = (4 * 1 + 2 * 1/2) / 6 = 5/6                    -> high already early
# late, c = true class:
#   l0: class 0 -> {0,1,2}, clean -> 1;  class 1 -> {7}, corrupted -> 1
#   l1: class 0 -> {3}, corrupted -> 1;  class 1 -> {4,5,6}, clean -> 1
#   l2: class 0 -> {0,1,2,3}, 1/4 -> 1/2;  class 1 -> {4,5,6,7}, 1/4 -> 1/2
#   mean over 6 pairs = (4 * 1 + 2 * 1/2) / 6 = 5/6                    -> the rise 1/2 -> 5/6
# late, c = training label:
#   l0: label 0 -> {0,1,2,7}, 1/4 -> 1/2;  label 1 -> {}: left out
#   l1: label 1 -> {3,4,5,6}, 1/4 -> 1/2;  label 0 -> {}: left out
#   l2: label 0 -> {0,1,2,7}, 1/4 -> 1/2;  label 1 -> {3,4,5,6}, 1/4 -> 1/2
#   mean over 4 pairs = 1/2                                            -> a fall 5/6 -> 1/2
HAND = {("early", "true"): 1 / 2, ("early", "train"): 5 / 6,
        ("late", "true"): 5 / 6, ("late", "train"): 1 / 2}
LAYERS = {"early": EARLY, "late": LATE}


def test_polarization_two_readings_hand_worked():
    for (layer, reading), want in HAND.items():
        labels = Y_TRUE if reading == "true" else Y_TRAIN
        got = polarization(LAYERS[layer], labels, CORRUPTED, 2)
        assert got.item() == pytest.approx(want, abs=1e-12), (layer, reading)
    # both readings at once, [R, N] labels -> [R] values, from one activity matrix
    for layer, out in LAYERS.items():
        both = polarization(out, torch.stack([Y_TRUE, Y_TRAIN]), CORRUPTED, 2)
        assert both.tolist() == pytest.approx([HAND[layer, "true"], HAND[layer, "train"]],
                                              abs=1e-12)


def _run_metric(labels: str | None, batch_size: int = 3) -> dict[str, float]:
    """PolarizationMetric on the hand-built layers, fed in batches as the driver feeds it."""
    metric = PolarizationMetric(PolarizationConfig() if labels is None
                                else PolarizationConfig(labels=labels))
    layers = {name: ProbeLayer(name, None, nn.Identity()) for name in LAYERS}
    metric.begin(Context(layers=list(layers.values()), num_classes=2, probe_sizes={"train": 8},
                         world=1, device=torch.device("cpu"), batches=None))
    for idx in torch.arange(8).split(batch_size):
        batch = {"x": torch.zeros(len(idx), 1), "y": Y_TRAIN[idx], "y_true": Y_TRUE[idx],
                 "corrupted": CORRUPTED[idx]}
        for name, out in LAYERS.items():
            metric.update("train", Probe(layers[name], out[idx], None, None, batch))
    return {k: float(v) for k, v in metric.compute().items()}


def test_polarization_metric_logs_both_readings():
    # default labels=true: the paper's reading under polarization/, the training-label reading
    # under polarization_trainlabel/
    assert PolarizationConfig().labels == "true"
    logs = _run_metric(None)
    want = {}
    for layer in LAYERS:
        want[f"polarization/train/{layer}"] = HAND[layer, "true"]
        want[f"polarization_trainlabel/train/{layer}"] = HAND[layer, "train"]
    assert logs == pytest.approx(want, abs=1e-12) and logs.keys() == want.keys()
    # labels=train swaps them: the training-label reading under polarization/, the true-class
    # reading under polarization_truelabel/
    swapped = _run_metric("train")
    want = {}
    for layer in LAYERS:
        want[f"polarization/train/{layer}"] = HAND[layer, "train"]
        want[f"polarization_truelabel/train/{layer}"] = HAND[layer, "true"]
    assert swapped == pytest.approx(want, abs=1e-12) and swapped.keys() == want.keys()


def test_polarization_streaming_equals_one_shot_both_readings():
    g = torch.Generator().manual_seed(4)
    out = torch.relu(torch.randn(91, 10, generator=g))
    y_true = torch.randint(0, 3, (91,), generator=g)
    corrupted = torch.rand(91, generator=g) < 0.4
    y = torch.where(corrupted, (y_true + 1 + torch.randint(0, 2, (91,), generator=g)) % 3, y_true)
    labels = torch.stack([y_true, y])
    m = Polarization(3, 10, readings=2)
    for idx in torch.arange(91).split(17):
        m.update(out[idx], labels[:, idx], corrupted[idx])
    got = m.compute()
    assert got.shape == (2,)
    assert torch.allclose(got[0], polarization(out, y_true, corrupted, 3))
    assert torch.allclose(got[1], polarization(out, y, corrupted, 3))
    assert torch.allclose(got, polarization(out, labels, corrupted, 3))
    assert got[0] != got[1]  # the readings differ under label noise


def test_polarization_callback_logs_both_readings():
    """Through the epoch-end driver on a small noisy run: every probe layer has both keys, each
    equal to the one-shot function of its labelling."""
    from memorization.data import DataModule
    from memorization.metrics.callback import LayerMetrics
    from memorization.models import MLP, capture

    dm = DataModule(source="synthetic", shape=(1, 4, 4), num_classes=3, batch_size=16,
                    source_options={"n_train": 90, "n_test": 30, "num_classes": 3,
                                    "shape": (1, 4, 4)},
                    noise={"name": "label_flip", "p": 0.3, "seed": 1})
    dm.setup("fit")
    torch.manual_seed(0)
    net = MLP(in_shape=(1, 4, 4), num_classes=3, depth=2, width=8)
    cb = LayerMetrics({"probe_size": 70, "batch_size": 32, "test": False,
                       **{m: {"enabled": False} for m in ("cosine", "masc", "csr")}})
    cb.setup(type("T", (), {"datamodule": dm})(), type("M", (), {"net": net})(), "fit")
    logs = cb.compute(dm, net)
    tr = {k: v[cb.probe["train"]] for k, v in dm.splits["train"].tensors.items()}
    net.eval()
    with torch.no_grad(), capture(net) as store:
        net(tr["x"])
        outs = dict(store["out"])
    names = [layer.name for layer in net.probe_layers()]
    assert sorted(logs) == sorted(f"{m}/train/{n}" for n in names
                                  for m in ("polarization", "polarization_trainlabel"))
    for n in names:
        out = outs[n].flatten(1)
        want_true = polarization(out, tr["y_true"], tr["corrupted"], 3).item()
        want_train = polarization(out, tr["y"], tr["corrupted"], 3).item()
        assert logs[f"polarization/train/{n}"].item() == pytest.approx(want_true)
        assert logs[f"polarization_trainlabel/train/{n}"].item() == pytest.approx(want_train)


@pytest.mark.parametrize(("given", "read"), [("true", "true"), (True, "true"), ("True", "true"),
                                             ("train", "train")])
def test_polarization_labels_config(given, read):
    # an unquoted true (YAML, the command line) arrives as a bool, or through the str schema as
    # "True": the same reading
    assert PolarizationConfig(labels=given).labels == read


def test_polarization_labels_config_refuses_others():
    with pytest.raises(ConfigError, match="metrics.polarization.labels='x'"):
        PolarizationConfig(labels="x")


def test_cosine_polarization_figure_draws_the_other_reading():
    """The vs-depth figure: the configured reading solid, the other dashed in the same colour,
    named by their class labelling; the heatmap gains a block for the other reading."""
    from matplotlib.colors import to_rgba

    from memorization.cli.report.figures import (
        _Sweep,
        fig_cosine_polarization_heatmap,
        fig_cosine_polarization_vs_depth,
    )
    from memorization.cli.report.series import numeric_columns
    from tests.cli.test_report_figures import make_sweep

    jobs, history, swept = make_sweep(ps=(0.0, 0.4), seeds=(0,), epochs=5)
    pol = history[history["metric"] == "polarization"]
    other = pol.assign(metric="polarization_trainlabel", value=pol["value"] * 0.5)
    history = pd.concat([history, other], ignore_index=True)
    sw = _Sweep(numeric_columns(jobs), history, swept, "t")
    fig = fig_cosine_polarization_vs_depth(sw)
    ax = fig.axes[1]  # cosine, then polarization
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-"]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(solid) == len(dashed) == 2  # one per noise level
    assert {to_rgba(ln.get_color()) for ln in solid} == {to_rgba(ln.get_color()) for ln in dashed}
    assert all(ln.get_linestyle() == "-" for ln in fig.axes[0].lines)  # cosine: one reading
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "solid: polarization, c = true class" in texts
    assert "dashed: polarization, c = training label" in texts
    heat = fig_cosine_polarization_heatmap(sw)
    labels = {a.get_ylabel() for a in heat.axes if a.get_label() == "<colorbar>"}
    assert labels == {"mean cosine similarity", "polarization, c = true class",
                      "polarization, c = training label"}
    # a sweep configured labels=train: the names swap
    history["metric"] = history["metric"].replace({"polarization_trainlabel":
                                                   "polarization_truelabel"})
    fig = fig_cosine_polarization_vs_depth(_Sweep(numeric_columns(jobs), history, swept, "t"))
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "solid: polarization, c = training label" in texts
    assert "dashed: polarization, c = true class" in texts
