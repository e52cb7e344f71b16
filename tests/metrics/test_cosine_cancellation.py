"""Cosine from the pre-activation where w.x is far below the bias: no cancellation.

The epoch-end path takes w_i . a_{l-1} as the layer's own output minus its bias. Where |w.x| is
far below |b| that difference keeps only float32's rounding of b; the cosine must still be exact
(to 1e-6 of the float64 value computed here), and ordinary layers must keep the cheap route.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memorization.metrics.cosine import _cancels, _reduce, layer_cosine_sums


def reference_linear(layer: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> float:
    """Eq. (4) in float64 from the definition: per live node, the mean cosine over its active
    samples; then the mean over live nodes."""
    xd, wd = x.double(), layer.weight.detach().double()
    cos = (xd @ wd.T) / (xd.norm(dim=1, keepdim=True) * wd.norm(dim=1))
    active = out > 0
    live = active.sum(0) > 0
    return float(((cos * active).sum(0) / active.sum(0).clamp_min(1))[live].mean())


def reference_conv(conv: nn.Conv2d, x: torch.Tensor, out: torch.Tensor) -> float:
    patches = F.unfold(x.double(), conv.kernel_size, padding=conv.padding)  # [N, C*k*k, P]
    wd = conv.weight.detach().double().flatten(1)  # [H, C*k*k]
    cos = torch.einsum("hc,ncp->nhp", wd, patches) / (
        patches.norm(dim=1, keepdim=True) * wd.norm(dim=1)[None, :, None])
    active = out.flatten(2) > 0
    n_act = active.sum(dim=(0, 2))
    live = n_act > 0
    return float(((cos * active).sum(dim=(0, 2)) / n_act.clamp_min(1))[live].mean())


@pytest.mark.parametrize("scale", [1e-6, 1e-8])
def test_linear_layer_with_inputs_far_below_its_bias(scale):
    torch.manual_seed(0)
    layer = nn.Linear(50, 40)
    with torch.no_grad():
        layer.bias.fill_(1.0)  # every node active on every sample
        x = torch.randn(300, 50)
        x = x / x.norm(dim=1, keepdim=True) * scale
        pre = layer(x)
        out = pre.relu()
        ref = reference_linear(layer, x, out)
        got = float(_reduce(*layer_cosine_sums(layer, x, out, pre))["cosine"])
    assert abs(got - ref) < 1e-6, (got, ref)
    assert abs(ref) > 1e-4  # a real signal, not 0 against 0


def test_the_old_route_was_off(monkeypatch):
    """Without the check (pre minus bias taken as it is), the same case is off by far more than
    1e-6: the test above exercises the recomputation, not a lucky rounding."""
    torch.manual_seed(0)
    layer = nn.Linear(50, 40)
    with torch.no_grad():
        layer.bias.fill_(1.0)
        x = torch.randn(300, 50)
        x = x / x.norm(dim=1, keepdim=True) * 1e-6
        pre = layer(x)
        out = pre.relu()
        ref = reference_linear(layer, x, out)
        monkeypatch.setattr("memorization.metrics.cosine._cancels", lambda *a: False)
        got = float(_reduce(*layer_cosine_sums(layer, x, out, pre))["cosine"])
    assert abs(got - ref) > 1e-5


@pytest.mark.parametrize("scale", [1e-6, 1e-8])
def test_conv_layer_with_inputs_far_below_its_bias(scale):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        conv.bias.fill_(1.0)
        x = torch.randn(6, 3, 7, 7) * scale
        pre = conv(x)
        out = pre.relu()
        ref = reference_conv(conv, x, out)
        got = float(_reduce(*layer_cosine_sums(conv, x, out, pre))["cosine"])
    assert abs(got - ref) < 1e-6, (got, ref)


def test_ordinary_layers_keep_the_pre_activation_route():
    """Standardized inputs under default initialization: the bias is far below ||w|| ||x||, so
    no product is recomputed; the value still matches float64 to 1e-6."""
    torch.manual_seed(2)
    layer = nn.Linear(64, 32)
    x = torch.randn(500, 64)
    with torch.no_grad():
        pre = layer(x)
        out = pre.relu()
        w_norm = layer.weight.norm(dim=1)
        in_norm = x.norm(dim=1).reshape(-1, 1, 1)
        assert not _cancels(layer.bias, w_norm, in_norm)
        assert _cancels(layer.bias, w_norm, in_norm * 1e-4)
        got = float(_reduce(*layer_cosine_sums(layer, x, out, pre))["cosine"])
    assert abs(got - reference_linear(layer, x, out)) < 1e-6


def test_zero_inputs_and_zero_weights_do_not_force_the_recomputation():
    """A zero input has no angle (cosine 0) and a node with zero weights neither: neither can
    cancel, so neither triggers the recomputation."""
    bias = torch.tensor([1.0, 5.0])
    w_norm = torch.tensor([1.0, 0.0])  # node 1: zero weights, large bias
    assert not _cancels(bias, w_norm, torch.tensor([0.0, 3.0]).reshape(-1, 1, 1))
    assert _cancels(bias, w_norm, torch.tensor([0.0, 1.5]).reshape(-1, 1, 1))  # 1.5 < 2 * 1
