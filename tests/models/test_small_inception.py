"""Zhang et al.'s small Inception: parameter count, shapes, probe layers, config errors."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from memorization.base.errors import ConfigError
from memorization.models.probes import ProbedModel, capture
from memorization.models.small_inception import SmallInception, SmallInceptionConfig

CONV_NAMES = ["conv1", "inc1_1x1", "inc1_3x3", "inc2_1x1", "inc2_3x3", "down1_3x3",
              "inc3_1x1", "inc3_3x3", "inc4_1x1", "inc4_3x3", "inc5_1x1", "inc5_3x3",
              "inc6_1x1", "inc6_3x3", "down2_3x3", "inc7_1x1", "inc7_3x3", "inc8_1x1", "inc8_3x3"]
# (out channels, side on 28x28 inputs) per conv unit; a stride-2 conv halves 28 -> 14 -> 7
CONV_SHAPES = [(96, 28), (32, 28), (32, 28), (32, 28), (48, 28), (80, 14),
               (112, 14), (48, 14), (96, 14), (64, 14), (80, 14), (80, 14), (48, 14), (96, 14),
               (96, 7), (176, 7), (160, 7), (176, 7), (160, 7)]


def n_params(m: nn.Module, bn: bool = False) -> int:
    """Parameters of the BatchNorm layers (bn) or of everything else."""
    return sum(p.numel() for x in m.modules() if isinstance(x, nn.BatchNorm2d) == bn
               for p in x.parameters(recurse=False))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SmallInception(in_shape=(3, 28, 28), num_classes=10).eval()


# Conv (cin * k*k * cout + cout) per unit, channels in -> out:
#   conv1 3->96 3x3: 2,688
#   inc1 96->32+32: 3,104 + 27,680      inc2 64->32+48: 2,080 + 27,696
#   down1 80->80 (+80 pooled = 160): 57,680
#   inc3 160->112+48: 18,032 + 69,168   inc4 160->96+64: 15,456 + 92,224
#   inc5 160->80+80: 12,880 + 115,280   inc6 160->48+96: 7,728 + 138,336
#   down2 144->96 (+144 pooled = 240): 124,512
#   inc7 240->176+160: 42,416 + 345,760 inc8 336->176+160: 59,312 + 484,000
#   out 336*10 + 10 = 3,370                                        total 1,649,402
# BatchNorm adds a scale and a shift per conv output channel: 2 * 1,712 = 3,424 -> 1,652,826.
def test_parameter_count_matches_zhang(net):
    assert n_params(net) == 1_649_402
    conv_channels = sum(m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d))
    assert conv_channels == 1712
    assert n_params(net, bn=True) == 2 * conv_channels == 3424
    assert sum(p.numel() for p in net.parameters()) == 1_649_402 + 3424 == 1_652_826
    plain = SmallInception(in_shape=(3, 28, 28), num_classes=10, batchnorm=False)
    assert sum(p.numel() for p in plain.parameters()) == 1_649_402  # the convs keep their bias


@pytest.mark.parametrize("batchnorm", [True, False])
def test_batchnorm_flag(batchnorm):
    m = SmallInception(batchnorm=batchnorm)
    n_bn = sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert n_bn == (19 if batchnorm else 0)
    assert all(x.bias is not None for x in m.modules() if isinstance(x, nn.Conv2d))


@pytest.mark.parametrize("side", [28, 32])
def test_forward_shape(net, side):
    assert net(torch.rand(2, 3, side, side)).shape == (2, 10)


def test_probe_layers(net):
    layers = net.probe_layers()
    assert isinstance(net, ProbedModel)
    names = [pl.name for pl in layers]
    assert names == ["input", *CONV_NAMES, "pool"]
    assert len(set(names)) == len(names)
    assert layers[0].weight is None and layers[0].output is net.inp
    assert layers[-1].weight is None
    assert all(isinstance(pl.weight, nn.Conv2d) for pl in layers[1:-1])
    assert all(isinstance(pl.output, nn.ReLU) for pl in layers[1:-1])
    outputs = [id(pl.output) for pl in layers]
    assert len(set(outputs)) == len(outputs)  # one module per layer: every hook is unambiguous


@pytest.mark.parametrize("batchnorm", [True, False])
def test_capture(batchnorm):
    torch.manual_seed(0)
    m = SmallInception(batchnorm=batchnorm).eval()
    x = torch.randn(2, 3, 28, 28)
    plain = m(x)
    with capture(m, inputs=True) as store:
        logits = m(x)
    assert torch.equal(logits, plain)
    assert torch.equal(store["out"]["input"], x)
    assert store["out"]["pool"].shape == (2, 336)
    assert torch.allclose(m.out(store["out"]["pool"]), logits, atol=1e-5)
    probes = {pl.name: pl for pl in m.probe_layers()}
    for name, (ch, side) in zip(CONV_NAMES, CONV_SHAPES, strict=True):
        conv, out, pre = probes[name].weight, store["out"][name], store["pre"][name]
        assert conv.out_channels == ch
        assert out.shape == pre.shape == (2, ch, side, side)
        assert (out >= 0).all()
        # the weight module's output is w.x + b on a_{l-1}, before BatchNorm
        expected = F.conv2d(store["in"][name], conv.weight, conv.bias, conv.stride, conv.padding)
        assert torch.allclose(pre, expected, atol=1e-5)
        if not batchnorm:
            assert torch.equal(out, torch.relu(pre))
    assert torch.equal(store["in"]["conv1"], x)


@pytest.mark.parametrize(("kw", "match"), [
    (dict(in_shape=(784,)), "model.in_shape"),
    (dict(in_shape=(3, 28)), "model.in_shape"),
    (dict(in_shape=(3, 0, 28)), "model.in_shape"),
    (dict(num_classes=0), "model.num_classes"),
    (dict(stem=0), "model.stem"),
])
def test_invalid_config_raises(kw, match):
    with pytest.raises(ConfigError, match=match) as err:
        SmallInception(**kw)
    assert "\n" not in str(err.value)


def test_yaml_matches_config():
    from tests.conftest import compose_config

    composed = compose_config(["model=small_inception", "data=synthetic",
                               "data.shape=[3,28,28]", "data.num_classes=10"])
    cfg = OmegaConf.to_container(composed.model, resolve=True)  # its YAML, on its schema
    assert cfg.pop("_target_") == "memorization.models.small_inception.SmallInception"
    assert set(cfg) == {f.name for f in fields(SmallInceptionConfig)}
    assert cfg["batchnorm"] is True and cfg["stem"] == SmallInceptionConfig.stem
    m = SmallInception(**cfg)
    assert m.cfg.in_shape == (3, 28, 28)
