"""The MASC paper's CNN and AlexNet: sizes, parameter counts, probe layers, configs."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from memorization.base.errors import ConfigError
from memorization.models.alexnet import AlexNet
from memorization.models.cnn import CNN
from memorization.models.probes import ProbedModel, capture

CNN_NAMES = ["input", "conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "flatten", "fc1",
             "fc2", "fc3"]
ALEXNET_NAMES = ["input", "conv1", "conv2", "conv3", "conv4", "conv5", "flatten", "fc1", "fc2"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# conv: k*k*c_in*c_out + c_out; the flatten is 64 * side^2 after three halvings
CNN_CONVS_AFTER_1 = (3*3*16*16 + 16) + (3*3*16*32 + 32) + (3*3*32*32 + 32) \
    + (3*3*32*64 + 64) + (3*3*64*64 + 64)
CNN_FCS_AFTER_1 = (250*250 + 250) + (250*250 + 250) + 250*10  # fc2, fc3, out (no bias)


@pytest.mark.parametrize(("in_shape", "flat", "expected"), [
    # 28 -> 14 -> 7 -> 3: flatten 64*3*3 = 576
    ((1, 28, 28), 576,
     (3*3*1*16 + 16) + CNN_CONVS_AFTER_1 + (576*250 + 250) + CNN_FCS_AFTER_1),
    # 32 -> 16 -> 8 -> 4: flatten 64*4*4 = 1024
    ((3, 32, 32), 1024,
     (3*3*3*16 + 16) + CNN_CONVS_AFTER_1 + (1024*250 + 250) + CNN_FCS_AFTER_1),
])
def test_cnn_sizes_and_parameter_count(in_shape, flat, expected):
    net = CNN(in_shape=in_shape, num_classes=10).eval()
    assert n_params(net) == expected
    assert net.cfg.flat_size() == flat == 64 * (in_shape[1] // 8) ** 2
    assert net.out.bias is None  # the paper's last linear layer has no bias
    assert all(m.bias is not None for m in [*net.convs, *net.fcs])
    with capture(net) as store:
        logits = net(torch.rand(2, *in_shape))
    assert logits.shape == (2, 10)
    assert store["out"]["flatten"].shape == (2, flat)
    assert [tuple(store["out"][f"conv{i}"].shape[2:]) for i in range(1, 7)] == [
        (s, s) for s in (in_shape[1], in_shape[1], in_shape[1] // 2, in_shape[1] // 2,
                         in_shape[1] // 4, in_shape[1] // 4)]
    assert all(store["out"][f"fc{i}"].shape == (2, 250) for i in (1, 2, 3))


# conv3 ... conv5, fc2 and the output layer are the same in both stems; flatten 256*1*1
ALEXNET_TAIL = (3*3*192*384 + 384) + (3*3*384*256 + 256) + (3*3*256*256 + 256) \
    + (256*4096 + 4096) + (4096*4096 + 4096)


@pytest.mark.parametrize(("in_shape", "classes", "stem", "expected"), [
    ((3, 32, 32), 100, "3x3",  # CIFAR-100: conv1 3x3 s2, conv2 3x3
     (3*3*3*64 + 64) + (3*3*64*192 + 192) + ALEXNET_TAIL + (4096*100 + 100)),
    ((3, 64, 64), 200, "11x11",  # Tiny ImageNet: conv1 11x11 s4, conv2 5x5
     (11*11*3*64 + 64) + (5*5*64*192 + 192) + ALEXNET_TAIL + (4096*200 + 200)),
])
def test_alexnet_sizes_and_parameter_count(in_shape, classes, stem, expected):
    net = AlexNet(in_shape=in_shape, num_classes=classes).eval()
    assert net.cfg.variant() == stem
    assert n_params(net) == expected
    assert net.cfg.flat_size() == 256
    with capture(net) as store:
        logits = net(torch.rand(2, *in_shape))
    assert logits.shape == (2, classes)
    assert store["out"]["flatten"].shape == (2, 256)
    assert store["out"]["conv5"].shape == (2, 256, 3, 3)  # the last pool makes it 1x1
    assert store["out"]["fc1"].shape == store["out"]["fc2"].shape == (2, 4096)


@pytest.mark.parametrize(("cls", "kw", "names"), [
    (CNN, dict(in_shape=(1, 28, 28), num_classes=10, width=32), CNN_NAMES),
    (CNN, dict(in_shape=(3, 32, 32), num_classes=10, width=32, batchnorm=True), CNN_NAMES),
    (AlexNet, dict(in_shape=(3, 32, 32), num_classes=5, fc=(64, 48)), ALEXNET_NAMES),
    (AlexNet, dict(in_shape=(3, 64, 64), num_classes=5, fc=(64, 48)), ALEXNET_NAMES),
])
def test_probe_layers(cls, kw, names):
    torch.manual_seed(0)
    net = cls(**kw).eval()
    assert isinstance(net, ProbedModel)
    layers = net.probe_layers()
    assert [pl.name for pl in layers] == names and len(set(names)) == len(names)
    assert layers[0].weight is None and layers[0].output is net.inp
    flat = layers[names.index("flatten")]
    assert flat.weight is None and flat.output is net.flatten
    outputs = [pl.output for pl in layers]
    assert len({id(m) for m in outputs}) == len(outputs)  # one module per layer: unambiguous hooks
    assert all(isinstance(pl.output, nn.ReLU) for pl in layers if pl.weight is not None)
    assert all(pl.weight is not net.out for pl in layers)
    x = torch.rand(3, *kw["in_shape"])
    plain = net(x)
    with capture(net, inputs=True) as store:
        assert torch.equal(net(x), plain)  # the hooks only read
    assert list(store["out"]) == names
    assert torch.equal(store["out"]["input"], x)
    for pl in layers[1:]:
        if pl.weight is None:
            continue
        out, pre, inp = store["out"][pl.name], store["pre"][pl.name], store["in"][pl.name]
        assert (out >= 0).all()
        if isinstance(pl.weight, nn.Conv2d):
            assert out.shape[1] == pl.weight.out_channels
            # the weight module maps a_{l-1} to the pre-activation
            assert torch.allclose(pre, pl.weight(inp), atol=1e-6)
        else:
            assert out.shape[1] == pl.weight.out_features
            assert torch.allclose(out, torch.relu(inp @ pl.weight.weight.T + pl.weight.bias),
                                  atol=1e-5)
    assert torch.equal(store["in"]["fc1"], store["out"]["flatten"])


def test_cnn_batchnorm():
    plain = CNN(in_shape=(1, 28, 28), num_classes=10)
    bn = CNN(in_shape=(1, 28, 28), num_classes=10, batchnorm=True)
    assert all(isinstance(m, nn.BatchNorm2d) for m in bn.norms)
    assert all(c.bias is None for c in bn.convs)  # BN's shift replaces the conv bias
    channels = 16 + 16 + 32 + 32 + 64 + 64
    # each conv loses its bias (channels) and gains BN's scale and shift (2 * channels)
    assert n_params(bn) == n_params(plain) - channels + 2 * channels
    assert all(isinstance(m, nn.Identity) for m in plain.norms)


def test_alexnet_explicit_stem_and_dropout():
    # 48 with the 3x3 stem: 48 -> 24 -> pool 11 -> pool 5 -> pool 2, flatten 256*2*2
    net = AlexNet(in_shape=(3, 48, 48), num_classes=4, stem="3x3", fc=(16, 16))
    assert net.cfg.flat_size() == 256 * 2 * 2
    assert net(torch.rand(2, 3, 48, 48)).shape == (2, 4)
    torch.manual_seed(0)
    drop = AlexNet(in_shape=(3, 32, 32), num_classes=4, fc=(64, 64), dropout=0.5)
    assert isinstance(drop.drop, nn.Dropout) and drop.drop.p == 0.5
    assert isinstance(AlexNet(in_shape=(3, 32, 32), fc=(8, 8)).drop, nn.Identity)
    x = torch.rand(4, 3, 32, 32)
    drop.eval()
    assert torch.equal(drop(x), drop(x))
    drop.train()
    with capture(drop, inputs=True) as store:
        drop(x)
    # the flatten probe records the value before the dropout fc1 sees
    assert (store["out"]["flatten"] > 0).float().mean() > (store["in"]["fc1"] > 0).float().mean()


@pytest.mark.parametrize(("cls", "kw", "match"), [
    (CNN, dict(in_shape=(784,)), "model.in_shape"),
    (CNN, dict(in_shape=(1, 4, 4)), "at least 8x8"),
    (CNN, dict(width=0), "model.width"),
    (CNN, dict(num_classes=0), "model.num_classes"),
    (CNN, dict(batchnorm="yes"), "model.batchnorm"),
    (AlexNet, dict(in_shape=(3, 28, 28)), "stem=auto takes 32x32"),
    (AlexNet, dict(in_shape=(3, 32, 64)), "stem=auto takes 32x32"),
    (AlexNet, dict(in_shape=(3, 32, 32), stem="11x11"), "too small"),
    (AlexNet, dict(stem="5x5"), "model.stem"),
    (AlexNet, dict(fc=(4096,)), "model.fc"),
    (AlexNet, dict(dropout=1.0), "model.dropout"),
    (AlexNet, dict(num_classes=0), "model.num_classes"),
])
def test_invalid_config_raises_one_line(cls, kw, match):
    with pytest.raises(ConfigError, match=match) as err:
        cls(**kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "cls", "shape", "classes"), [
    ("cnn", CNN, [1, 28, 28], 10),
    ("alexnet", AlexNet, [3, 32, 32], 100),
])
def test_yaml_matches_config(name, cls, shape, classes):
    from tests.conftest import compose_config

    composed = compose_config([f"model={name}", "data=synthetic", f"data.shape={shape}",
                               f"data.num_classes={classes}"])
    cfg = OmegaConf.to_container(composed.model, resolve=True)  # conf/model/<name>.yaml
    assert cfg.pop("_target_") == f"{cls.__module__}.{cls.__name__}"
    assert cfg["in_shape"] == shape and cfg["num_classes"] == classes  # from the data
    net = cls(**cfg)
    assert net.cfg == type(net.cfg)(in_shape=tuple(shape), num_classes=classes)  # YAML = defaults
