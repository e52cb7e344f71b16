"""Models: the MLP and the layer-probe contract (probe_layers, capture)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memorization.base.errors import ConfigError
from memorization.models import MLP, ProbedModel, capture


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP(in_shape=(1, 8, 8), num_classes=10, depth=3, width=16).eval()


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_forward_shape(mlp):
    x = torch.rand(5, 1, 8, 8)
    assert mlp(x).shape == (5, 10)
    assert mlp(torch.rand(1, 1, 8, 8)).shape == (1, 10)


# in_shape (1, 2, 3) -> fan-in 6; depth 2, width 5, 4 classes:
#   "all":   fc1 6*5 + 5 = 35,  fc2 5*5 + 5 = 30,  out 5*4 + 4 = 24  -> 89
#   "first": fc1 6*5 + 5 = 35,  fc2 5*5     = 25,  out 5*4     = 20  -> 80
#   "none":  fc1 6*5     = 30,  fc2 5*5     = 25,  out 5*4     = 20  -> 75
@pytest.mark.parametrize(("bias", "n_params", "has_bias"), [
    ("all", 89, [True, True, True]),
    ("first", 80, [True, False, False]),
    ("none", 75, [False, False, False]),
])
def test_parameter_count_and_bias_modes(bias, n_params, has_bias):
    m = MLP(in_shape=(1, 2, 3), num_classes=4, depth=2, width=5, bias=bias)
    assert sum(p.numel() for p in m.parameters()) == n_params
    layers = [*m.fcs, m.out]
    assert [lin.bias is not None for lin in layers] == has_bias
    assert [tuple(lin.weight.shape) for lin in layers] == [(5, 6), (5, 5), (4, 5)]


@pytest.mark.parametrize("depth", [1, 3, 5])
def test_probe_layers(depth):
    m = MLP(in_shape=(1, 4, 4), num_classes=3, depth=depth, width=8)
    assert isinstance(m, ProbedModel)
    layers = m.probe_layers()
    assert [pl.name for pl in layers] == ["input"] + [f"fc{i}" for i in range(1, depth + 1)]
    assert layers[0].weight is None
    assert layers[0].output is m.flatten
    for i, pl in enumerate(layers[1:]):
        assert pl.weight is m.fcs[i]
        assert pl.output is m.acts[i]
    assert all(pl.weight is not m.out for pl in layers)  # the output layer is not probed


def manual_forward(m: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """[flattened input, relu(fc1), relu(fc2), ..., logits] from the weights."""
    hs = [x.reshape(x.shape[0], -1)]
    for fc in m.fcs:
        hs.append(torch.relu(hs[-1] @ fc.weight.T + fc.bias))
    hs.append(hs[-1] @ m.out.weight.T + m.out.bias)
    return hs


def test_capture_matches_manual_recomputation(mlp):
    x = torch.rand(6, 1, 8, 8)
    hs = manual_forward(mlp, x)
    with capture(mlp, inputs=True) as store:
        assert all_hooks(mlp) > 0
        logits = mlp(x)
    assert torch.allclose(logits, hs[-1], atol=1e-6)
    names = ["input", "fc1", "fc2", "fc3"]
    assert list(store["out"]) == names
    assert sorted(store["in"]) == ["fc1", "fc2", "fc3"]  # the input layer has no weight
    for i, name in enumerate(names):
        assert torch.allclose(store["out"][name], hs[i], atol=1e-6)
    for i, name in enumerate(names[1:]):
        # a layer's input is the previous layer's output
        assert torch.equal(store["in"][name], store["out"][names[i]])
        # the pre-activation is the weight module's own output, a_{l-1} W^T + b
        fc = [*mlp.fcs][i]
        assert torch.allclose(store["pre"][name], store["in"][name] @ fc.weight.T + fc.bias,
                              atol=1e-6)
    assert store["out"]["input"].shape == (6, 64)


def test_capture_without_inputs_and_name_filter(mlp):
    x = torch.rand(3, 1, 8, 8)
    with capture(mlp) as store:
        mlp(x)
    assert store["in"] == {} and len(store["out"]) == 4
    with capture(mlp, inputs=True, names=["fc2"]) as store:
        mlp(x)
    assert list(store["out"]) == ["fc2"] and list(store["in"]) == ["fc2"]
    assert torch.allclose(store["out"]["fc2"], manual_forward(mlp, x)[2], atol=1e-6)


def test_capture_refreshes_on_each_forward_and_only_reads(mlp):
    a, b = torch.rand(2, 1, 8, 8), torch.rand(4, 1, 8, 8)
    plain = mlp(b)
    with capture(mlp, inputs=True) as store:
        mlp(a)
        hooked = mlp(b)
    assert torch.equal(hooked, plain)
    assert store["out"]["fc3"].shape[0] == 4
    assert torch.allclose(store["out"]["fc1"], manual_forward(mlp, b)[1], atol=1e-6)


def test_capture_removes_hooks(mlp):
    assert all_hooks(mlp) == 0
    with capture(mlp, inputs=True):
        # forward hooks on 4 outputs, pre-hooks (inputs) and forward hooks (pre-activations)
        # on 3 weight modules
        assert all_hooks(mlp) == 4 + 3 + 3
    assert all_hooks(mlp) == 0
    with pytest.raises(RuntimeError, match="boom"), capture(mlp, inputs=True):
        mlp(torch.rand(1, 1, 8, 8))
        raise RuntimeError("boom")
    assert all_hooks(mlp) == 0


def test_he_init():
    torch.manual_seed(0)
    m = MLP(in_shape=(1, 16, 16), num_classes=10, depth=2, width=1024, init="he")
    for lin in [*m.fcs, m.out]:
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    for lin in m.fcs:  # 256 -> 1024 and 1024 -> 1024: ~0.26M and ~1M weights
        fan_in = lin.weight.shape[1]
        std = lin.weight.std().item()
        assert std == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
        assert abs(lin.weight.mean().item()) < 0.01 * std
    assert m.out.weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.1)


def test_default_init_is_pytorchs():
    torch.manual_seed(0)
    m = MLP(in_shape=(1, 16, 16), num_classes=10, depth=1, width=1024)
    w = m.fcs[0].weight
    # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
    assert w.abs().max().item() <= 1 / math.sqrt(256)
    assert w.std().item() == pytest.approx(1 / math.sqrt(3 * 256), rel=0.02)
    assert m.fcs[0].bias.abs().sum().item() > 0


@pytest.mark.parametrize(("name", "cls"), [("relu", nn.ReLU), ("tanh", nn.Tanh),
                                           ("sigmoid", nn.Sigmoid), ("gelu", nn.GELU),
                                           ("leaky_relu", nn.LeakyReLU)])
def test_activations(name, cls):
    torch.manual_seed(0)
    m = MLP(in_shape=(1, 2, 2), num_classes=3, depth=2, width=4, activation=name).eval()
    assert all(isinstance(a, cls) for a in m.acts) and len(m.acts) == 2
    x = torch.randn(5, 1, 2, 2)
    h = x.reshape(5, -1)
    for fc in m.fcs:
        h = cls()(fc(h))
    assert torch.allclose(m(x), m.out(h), atol=1e-6)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = MLP(in_shape=(1, 4, 4), num_classes=3, depth=2, width=64, dropout=0.5)
    assert isinstance(m.drop, nn.Dropout) and m.drop.p == 0.5
    x = torch.rand(8, 1, 4, 4)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))
    assert isinstance(MLP(in_shape=(1, 4, 4), num_classes=3).drop, nn.Identity)


def test_in_shape_list_and_flat_inputs():
    m = MLP(in_shape=[10], num_classes=2, depth=1, width=3)
    assert m.cfg.in_shape == (10,)
    assert m(torch.rand(4, 10)).shape == (4, 2)
    hs = F.linear(torch.ones(1, 10), m.fcs[0].weight, m.fcs[0].bias)
    assert torch.allclose(m.out(torch.relu(hs)), m(torch.ones(1, 10)))


@pytest.mark.parametrize("kw", [
    dict(depth=0),
    dict(depth=-1),
    dict(width=0),
    dict(activation="swish"),
    dict(bias="some"),
    dict(bias=True),
    dict(init="xavier"),
    dict(dropout=1.0),
    dict(dropout=-0.1),
])
def test_invalid_config_raises(kw):
    with pytest.raises(ConfigError, match=f"model.{next(iter(kw))}"):
        MLP(in_shape=(1, 4, 4), num_classes=3, **kw)


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError):
        MLP(in_shape=(1, 4, 4), num_classes=3, widht=8)


def test_bias_per_layer_as_a_list():
    net = MLP(in_shape=(4,), num_classes=2, depth=2, width=3, bias=[False, True, True])
    assert [lin.bias is not None for lin in [*net.fcs, net.out]] == [False, True, True]
    with pytest.raises(ConfigError, match="3 booleans"):
        MLP(in_shape=(4,), num_classes=2, depth=2, width=3, bias=[True, True])


@pytest.mark.parametrize(("depth", "expected"), [(1, 1_209_866), (3, 1_735_178)])
def test_zhang_mlp_parameter_counts(depth, expected):
    # Zhang et al. Table 1, 28x28x3 inputs: 2352*512 + 512 + (depth-1)*(512*512 + 512)
    # + 512*10 + 10
    net = MLP(in_shape=(3, 28, 28), num_classes=10, depth=depth, width=512)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_input_regularizers_act_in_training_only():
    x = torch.rand(64, 1, 4, 4)
    net = MLP(in_shape=(1, 4, 4), num_classes=3, depth=1, width=8, input_noise=0.5)
    net.eval()
    assert torch.equal(net(x), net(x))  # eval: deterministic, no noise
    net.train()
    assert not torch.equal(net(x), net(x))  # training: fresh noise each pass
    drop = MLP(in_shape=(1, 4, 4), num_classes=3, depth=1, width=8, input_dropout=0.5)
    drop.train()
    with capture(drop, inputs=True) as store:
        drop(x)
    zeros = (store["in"]["fc1"] == 0).float().mean().item()
    assert 0.35 < zeros < 0.65  # about half the input values dropped
    with pytest.raises(ConfigError, match="model.input_dropout=1"):
        MLP(in_shape=(4,), num_classes=2, input_dropout=1.0)
    with pytest.raises(ConfigError, match="model.input_noise=-1"):
        MLP(in_shape=(4,), num_classes=2, input_noise=-1)


def test_small_alexnet_parameter_count_and_probes():
    from memorization.models import SmallAlexNet

    # conv1 3*25*64+64 = 4,864; conv2 64*25*64+64 = 102,464; 28 -> 14 -> 7 after the pools, so
    # fc1 7*7*64*384+384 = 1,204,608; fc2 384*192+192 = 73,920; out 192*10+10 = 1,930
    net = SmallAlexNet(in_shape=(3, 28, 28), num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 1_387_786
    x = torch.rand(2, 3, 28, 28)
    with capture(net, inputs=True) as store:
        logits = net(x)
    assert logits.shape == (2, 10)
    assert [layer.name for layer in net.probe_layers()] == ["input", "conv1", "conv2", "fc1",
                                                            "fc2"]
    assert store["out"]["conv1"].shape == (2, 64, 28, 28)
    assert store["out"]["conv2"].shape == (2, 64, 14, 14)
    assert store["in"]["fc1"].shape == (2, 7 * 7 * 64)
    assert all((store["out"][n] >= 0).all() for n in ("conv1", "conv2", "fc1", "fc2"))
    assert torch.equal(store["out"]["input"], x)
    with pytest.raises(ConfigError, match="image inputs"):
        SmallAlexNet(in_shape=(784,), num_classes=10)


def test_mlp_with_one_width_per_layer():
    # the MASC preset's widths on MNIST: 784 -> 1024 -> 512 -> 2048 -> 10, biases on
    m = MLP(in_shape=(1, 28, 28), num_classes=10, depth=3, width=[1024, 512, 2048])
    assert [fc.out_features for fc in m.fcs] == [1024, 512, 2048]
    want = (784 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 2048 + 2048) + (2048 * 10 + 10)
    assert sum(p.numel() for p in m.parameters()) == want
    with capture(m) as store:
        m(torch.rand(2, 1, 28, 28))
    assert store["out"]["fc2"].shape == (2, 512) and store["out"]["fc3"].shape == (2, 2048)
    with pytest.raises(ConfigError, match="one width per hidden layer"):
        MLP(in_shape=(1, 4, 4), num_classes=3, depth=2, width=[8, 8, 8])
    with pytest.raises(ConfigError, match=r"model.width\[1\]=0 must be an integer >= 1"):
        MLP(in_shape=(1, 4, 4), num_classes=3, depth=2, width=[8, 0])


@pytest.mark.parametrize("name,shape", [("SmallAlexNet", (3, 28, 28)), ("CNN", (1, 28, 28)),
                                        ("AlexNet", (3, 32, 32)), ("SmallInception", (3, 28, 28)),
                                        ("MLP", (1, 8, 8))])
def test_input_regularizers_act_in_training_only_and_after_the_input_probe(name, shape):
    import memorization.models as models

    torch.manual_seed(0)
    net = getattr(models, name)(in_shape=shape, num_classes=10, input_dropout=0.5,
                                input_noise=0.3)
    x = torch.rand(2, *shape)
    first = net.probe_layers()[1]  # the first weight layer sees the regularized input
    with capture(net, inputs=True, names=["input", first.name]) as store:
        net.train()
        net(x)
        seen_train = store["in"][first.name].clone()
        assert torch.equal(store["out"]["input"].reshape(2, -1), x.reshape(2, -1))
        net.eval()
        net(x)
        seen_eval = store["in"][first.name]
    assert torch.equal(seen_eval.reshape(2, -1), x.reshape(2, -1))  # eval: the clean input
    assert not torch.equal(seen_train.reshape(2, -1), x.reshape(2, -1))
    assert (seen_train == 0).float().mean() > 0.3  # about half dropped
    with pytest.raises(ConfigError, match="model.input_dropout=1.0"):
        getattr(models, name)(in_shape=shape, num_classes=10, input_dropout=1.0)
