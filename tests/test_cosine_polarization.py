"""Theunissen et al.'s per-layer metrics on hand-worked cases, plus their invariances."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memorization.metrics.cosine import (
    ConvGeometry,
    MeanCosine,
    cosine_sums,
    layer_cosine_sums,
    mean_cosine,
)
from memorization.metrics.polarization import Polarization, polarization


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
