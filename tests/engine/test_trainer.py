"""The engine's fit of a network on tensors (engine.fit_network): the weights a plain PyTorch
loop gives, bitwise; its stop hook, schedule and batch orders; evaluate and predict."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memorization.engine.optim import OptimConfig, SchedulerConfig
from memorization.engine.trainer import evaluate, fit_network, predict, seeded_orders


def _data(n=90, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def _net(d=6, k=3, dropout=0.0):
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, k))


def _plain(net, optim, x, y, epochs, batch_size, seed):
    """The reference: the textbook loop, written here independently of the engine."""
    opt, sched = optim.build(net.parameters())
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        if sched is not None:
            sched.step()
    return net


@pytest.mark.parametrize("optim", [
    OptimConfig(_target_="torch.optim.SGD", lr=0.1, momentum=0.9),
    OptimConfig(_target_="torch.optim.Adam", lr=1e-2),
    OptimConfig(_target_="torch.optim.SGD", lr=0.1,
                scheduler=SchedulerConfig(_target_="torch.optim.lr_scheduler.StepLR",
                                          step_size=1, gamma=0.5)),
], ids=["sgd_momentum", "adam", "sgd_steplr"])
def test_fit_network_gives_the_plain_loops_weights_bitwise(optim):
    x, y = _data()
    ref = _plain(_net(), optim, x, y, epochs=3, batch_size=16, seed=7)
    got = fit_network(_net(), optim, x, y, epochs=3, batch_size=16, seed=7)
    for a, b in zip(ref.state_dict().values(), got.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_dropout_draws_come_from_the_global_generator_only():
    """No data loader draws a seed of its own each epoch: with dropout, the same global seed
    gives the plain loop's weights."""
    x, y = _data()
    optim = OptimConfig(_target_="torch.optim.SGD", lr=0.1)
    ref = _net(dropout=0.5)
    torch.manual_seed(11)
    ref = _plain(ref, optim, x, y, epochs=2, batch_size=16, seed=2)
    net = _net(dropout=0.5)
    torch.manual_seed(11)
    got = fit_network(net, optim, x, y, epochs=2, batch_size=16, seed=2)
    for a, b in zip(ref.state_dict().values(), got.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_after_epoch_sees_the_loss_sum_and_stops_training():
    x, y = _data()
    seen = []

    def hook(epoch, total):
        seen.append((epoch, float(total)))
        return epoch == 2

    net = _net()
    with torch.no_grad():
        first = float(F.cross_entropy(net(x), y))  # before training: an upper bound, roughly
    fit_network(net, OptimConfig(lr=1e-2), x, y, epochs=10, batch_size=30, after_epoch=hook)
    assert [e for e, _ in seen] == [1, 2]  # stopped after the second epoch
    # the sum of the batches' mean losses weighted by their sizes: n times a mean loss
    assert 0 < seen[0][1] / len(y) < 2 * first


def test_a_custom_order_and_a_short_last_batch():
    x, y = _data(n=10)
    orders = []

    def order(epoch):
        orders.append(epoch)
        return torch.arange(10).flip(0) if epoch == 1 else torch.arange(10)

    steps = []
    net = _net()
    net.register_forward_pre_hook(lambda m, args: steps.append(args[0].shape[0]))
    fit_network(net, OptimConfig(lr=1e-2), x, y, epochs=2, batch_size=4, order=order)
    assert orders == [1, 2] and steps == [4, 4, 2, 4, 4, 2]


def test_seeded_orders_are_successive_permutations_of_one_generator():
    a, b = seeded_orders(20, 5), seeded_orders(20, 5)
    first, second = a(1), a(2)
    assert torch.equal(first, b(1)) and torch.equal(second, b(2))
    assert sorted(first.tolist()) == list(range(20)) and not torch.equal(first, second)


def test_evaluate_and_predict_by_hand():
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))  # logits = x: the class is the larger coordinate
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    y = torch.tensor([0, 0, 0, 1])
    net.train()
    acc, loss = evaluate(net, x, y, batch_size=3)
    assert acc.item() == pytest.approx(3 / 4) and net.training
    expected = F.cross_entropy(x, y, reduction="sum").double() / 4
    assert loss.item() == pytest.approx(expected.item())
    assert predict(net, x, batch_size=3).tolist() == [0, 1, 0, 1]


def test_the_network_stays_where_it_was():
    x, y = _data()
    net = copy.deepcopy(_net())
    fit_network(net, OptimConfig(lr=1e-2), x, y, epochs=1, batch_size=30)
    assert next(net.parameters()).device == x.device


def _subsets(n, m, s, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g)[:m].sort().values for _ in range(s)])


def _nets(s, seed):
    """S small MLPs, network k seeded with seed + k."""
    nets = []
    for k in range(s):
        torch.manual_seed(seed + k)
        nets.append(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)))
    return nets


@pytest.mark.parametrize("optim", [OptimConfig(_target_="torch.optim.SGD", lr=0.1, momentum=0.9),
                                   OptimConfig(_target_="torch.optim.Adam", lr=1e-2)],
                         ids=["sgd_momentum", "adam"])
def test_fit_stacked_in_loop_mode_is_each_networks_own_fit_bitwise(optim):
    """S networks on their own subsets in one fit: each gets the weights fit_network gives
    it alone on its subset with its order (one optimizer over all of them steps each as its
    own would), and the stacked predictions are each network's own."""
    from memorization.engine.trainer import fit_stacked, predict_stacked

    x, y = _data()
    subsets = _subsets(len(y), 50, 3)
    nets = _nets(3, 10)
    alone = [copy.deepcopy(n) for n in nets]
    fit_stacked(nets, optim, x, y, subsets, epochs=3, batch_size=16,
                orders=[seeded_orders(50, 20 + k) for k in range(3)], mode="loop")
    for k in range(3):
        sub = subsets[k]
        fit_network(alone[k], optim, x[sub], y[sub], epochs=3, batch_size=16,
                    order=seeded_orders(50, 20 + k))
        for a, b in zip(alone[k].state_dict().values(), nets[k].state_dict().values(),
                        strict=True):
            assert torch.equal(a, b)
    pred = predict_stacked(nets, x, mode="loop", batch_size=32)
    assert pred.shape == (3, len(y))
    for k in range(3):
        assert torch.equal(pred[k], predict(alone[k], x))


def test_fit_stacked_in_vmap_mode_matches_the_loop_within_rounding():
    from memorization.engine.trainer import fit_stacked, predict_stacked

    x, y = _data()
    subsets = _subsets(len(y), 40, 4)
    base = _nets(4, 30)
    optim = OptimConfig(_target_="torch.optim.SGD", lr=0.1, momentum=0.9)
    runs = {}
    for mode in ("loop", "vmap"):
        nets = [copy.deepcopy(n) for n in base]
        fit_stacked(nets, optim, x, y, subsets, epochs=2, batch_size=8,
                    orders=[seeded_orders(40, k) for k in range(4)], mode=mode)
        runs[mode] = nets
        assert predict_stacked(nets, x, mode=mode).shape == (4, len(y))
    for a, b in zip(runs["loop"], runs["vmap"], strict=True):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5)
        assert not torch.equal(a[0].weight, base[0][0].weight)  # it trained


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_fit_stacked_in_bf16_mixed_keeps_float32_weights_near_the_float32_fit(mode):
    """bf16-mixed: the products run in bfloat16 (so the weights differ from the float32
    fit's, which shows autocast was on), the weights stay float32, and after 2 epochs they
    are within bfloat16's rounding of the float32 fit's."""
    from memorization.engine.trainer import fit_stacked

    x, y = _data()
    subsets = _subsets(len(y), 40, 2)
    base = _nets(2, 40)
    optim = OptimConfig(_target_="torch.optim.SGD", lr=0.1)
    runs = {}
    for precision in ("32-true", "bf16-mixed"):
        nets = [copy.deepcopy(n) for n in base]
        fit_stacked(nets, optim, x, y, subsets, epochs=2, batch_size=8, mode=mode,
                    orders=[seeded_orders(40, k) for k in range(2)], precision=precision)
        runs[precision] = nets
    for a, b in zip(runs["32-true"], runs["bf16-mixed"], strict=True):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert q.dtype == torch.float32
            assert torch.allclose(p, q, atol=0.05) and not torch.equal(p, q)


def test_fit_stacked_calls_its_epoch_hook_after_each_epoch_and_stops_on_true():
    from memorization.engine.trainer import fit_stacked

    x, y = _data()
    seen = []
    fit_stacked([_net(), _net()], OptimConfig(), x, y, _subsets(len(y), 20, 2), epochs=5,
                batch_size=8, orders=[seeded_orders(20, k) for k in range(2)], mode="loop",
                after_epoch=lambda e, loss: seen.append((e, loss)) or e == 3)
    assert seen == [(1, None), (2, None), (3, None)]


def test_fit_stacked_refuses_subsets_that_do_not_match_the_networks():
    from memorization.engine.trainer import fit_stacked

    x, y = _data()
    with pytest.raises(ValueError, match=r"2 networks need \[2, m\] subsets"):
        fit_stacked([_net(), _net()], OptimConfig(), x, y, _subsets(len(y), 10, 3), epochs=1,
                    batch_size=4, orders=[seeded_orders(10, 0)] * 2)
