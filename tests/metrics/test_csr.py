"""Critical sample ratio by LASS (metrics/csr.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from memorization.base.errors import ConfigError
from memorization.metrics.csr import (
    PAPER_PIXEL_SCALE,
    PAPER_R,
    CriticalSampleRatio,
    lass_critical,
    lass_search,
    to_input_units,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# -- a linear 2-class model, where the answer is known in closed form -----------------------------
# f(x) = W x + b with logits z0 = 0 and z1 = w.x + c, w = (2, -1), c = 0.3: class 1 where
# w.x + c > 0. Over the box ||x~ - x||_inf <= r, w.x~ changes by at most r * ||w||_1 (the L1 norm
# is the dual of L-infinity), reached at the corner x + r * sign(+-w); so the L-infinity distance
# from x to the boundary w.x + c = 0 is |w.x + c| / ||w||_1 = |2 x1 - x2 + 0.3| / 3, and one
# signed step of size alpha = r lands on that corner. With r = 0.1 (r * ||w||_1 = 0.3):
#   point         w.x + c   class  distance        critical
#   ( 0.0,   0.15)   0.15      1     0.05 = 0.5 r    yes: (-0.1, 0.25)  -> -0.15, class 0
#   ( 0.15,  0.0 )   0.6       1     0.2  = 2 r      no:  best corner       0.3, class 1
#   (-0.225, 0.0 )  -0.15      0     0.05 = 0.5 r    yes: (-0.125, -0.1) -> 0.15, class 1
#   ( 0.0,   0.9 )  -0.6       0     0.2  = 2 r      no:  best corner      -0.3, class 0
R = 0.1
NEAR = [[0.0, 0.15], [-0.225, 0.0]]
FAR = [[0.15, 0.0], [0.0, 0.9]]


def linear_model(device="cpu") -> nn.Module:
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [2.0, -1.0]]))
        model.bias.copy_(torch.tensor([0.0, 0.3]))
    return model.to(device).eval()


def points(rows, device="cpu") -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, device=device)


class Recorder(nn.Module):
    """Wraps a model and keeps a copy of every input it is called with."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_distances_by_hand():
    x = points(NEAR + FAR)
    d = (x @ torch.tensor([2.0, -1.0], dtype=torch.float64) + 0.3).abs() / 3
    assert d.tolist() == pytest.approx([0.5 * R, 0.5 * R, 2 * R, 2 * R])


@pytest.mark.parametrize("device", DEVICES)
def test_linear_near_critical_far_not(device):
    model = linear_model(device)
    near = lass_critical(model, points(NEAR, device), alpha=R, beta=0.0, r=R, max_iter=1)
    far = lass_critical(model, points(FAR, device), alpha=R, beta=0.0, r=R, max_iter=20)
    assert near.dtype == torch.bool and near.device.type == device
    assert near.tolist() == [True, True]  # one step to the box corner flips both
    assert far.tolist() == [False, False]  # no point of the box is on the other side


def test_mixed_batch_and_masking():
    # near, far, near, far: the near ones flip at step 1 and stop; the far ones go on alone.
    model = Recorder(linear_model())
    x = points([NEAR[0], FAR[0], NEAR[1], FAR[1]])
    out = lass_critical(model, x, alpha=R, beta=0.0, r=R, max_iter=3)
    assert out.tolist() == [True, False, True, False]
    # calls: the prediction on x (4), step 1 (4), steps 2 and 3 (only the 2 far ones)
    assert [len(s) for s in model.seen] == [4, 4, 2, 2]
    corners = points([[0.05, 0.1], [0.1, 0.8]])  # the far ones stay at their best corner
    assert torch.allclose(model.seen[1][[1, 3]], corners) and torch.allclose(model.seen[2], corners)


def test_stops_early_when_all_critical():
    model = Recorder(linear_model())
    assert lass_critical(model, points(NEAR), alpha=R, beta=0.0, r=R, max_iter=50).all()
    assert len(model.seen) == 2  # the prediction, then one step


def test_noise_never_leaves_the_box():
    # beta = 5r: every noisy step overshoots and is clipped back; the far points stay non-critical
    # over 200 steps, and every point the model saw is within r of its start (on the boundary for
    # some coordinates, which shows that the noise did move them).
    model = Recorder(linear_model())
    x = points(FAR * 4)
    g = torch.Generator().manual_seed(0)
    out = lass_critical(model, x, alpha=R, beta=5 * R, r=R, max_iter=200, generator=g)
    assert not out.any()
    assert len(model.seen) == 201
    dev = torch.stack([(s - x).abs().max() for s in model.seen])
    assert float(dev.max()) <= R + 1e-12
    assert float(dev.max()) == pytest.approx(R)


def test_zero_box_never_critical():
    model = linear_model()
    x = points(NEAR)
    assert not lass_critical(model, x, alpha=1.0, beta=1.0, r=0.0, max_iter=5).any()


@pytest.mark.parametrize("context", ["plain", "no_grad", "inference_mode"])
def test_parameters_untouched(context):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = {"plain": torch.enable_grad, "no_grad": torch.no_grad,
           "inference_mode": torch.inference_mode}[context]
    with ctx():
        x = torch.randn(16, 2, dtype=torch.float64)
        out = lass_critical(model, x, alpha=0.05, beta=0.05, r=0.2, max_iter=5,
                            generator=torch.Generator().manual_seed(1))
    assert out.shape == (16,)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_inference_mode_gives_the_same_answer():
    model = linear_model()
    x = points(NEAR + FAR)
    expected = lass_critical(model, x, alpha=R, beta=0.0, r=R, max_iter=3)
    with torch.inference_mode():
        got = lass_critical(model, points(NEAR + FAR), alpha=R, beta=0.0, r=R, max_iter=3)
    assert torch.equal(got, expected)


def test_same_seed_same_result():
    # alpha = 0: only the noise moves the points, so the outcome depends on the draw. Points at
    # 0.5r .. r from the boundary, 8 noisy steps of scale r/2.
    model = linear_model()
    t = torch.linspace(0.15, 0.3, 64, dtype=torch.float64)
    x = torch.stack([torch.zeros_like(t), 0.3 - t], dim=1)  # w.x + c = t, distance t / 3

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return lass_critical(model, x, alpha=0.0, beta=R / 2, r=R, max_iter=8, generator=g)

    results = [run(s) for s in range(5)]
    assert torch.equal(run(0), results[0]) and torch.equal(run(3), results[3])
    assert any(not torch.equal(results[0], o) for o in results[1:])  # the seed does matter
    assert 0 < int(results[0].sum()) < len(x)


def test_per_channel_parameters():
    # The same linear model on 2-channel 1x1 images. Points A (w.x + c = 0.15) and B (0.25).
    # Moving channel 0 alone by r changes w.x by 2r = 0.2, channel 1 alone by r = 0.1, both 0.3:
    #   movable       A (0.15)   B (0.25)
    #   both          yes        yes
    #   channel 0     yes        no
    #   channel 1     no         no
    model = nn.Sequential(nn.Flatten(), linear_model())
    x = points([[0.0, 0.15], [0.0, 0.05]]).reshape(2, 2, 1, 1)
    only0 = torch.tensor([R, 0.0], dtype=torch.float64).reshape(2, 1, 1)
    only1 = torch.tensor([0.0, R], dtype=torch.float64).reshape(2, 1, 1)

    def crit(alpha, r):
        return lass_critical(model, x, alpha=alpha, beta=0.0, r=r, max_iter=3).tolist()

    assert crit(R, R) == [True, True]
    assert crit(R, only0) == [True, False]  # per-channel box
    assert crit(only0, R) == [True, False]  # per-channel step: channel 1 never moves
    assert crit(R, only1) == [False, False]
    # a per-channel box with noise: channel 1 is pinned to its start (B can never flip, so once
    # A has, the calls see B alone, the last row)
    rec = Recorder(model)
    g = torch.Generator().manual_seed(0)
    assert lass_critical(rec, x, alpha=R, beta=R, r=only0, max_iter=3, generator=g).tolist() == [
        True, False]
    assert all(torch.equal(s[:, 1], x[-len(s):, 1]) for s in rec.seen)
    assert any(not torch.equal(s[:, 0], x[-len(s):, 0]) for s in rec.seen[1:])  # channel 0 moved


def test_streaming_metric_equals_one_call():
    # the hand-worked points in two batches: 2 of 4 critical
    model = linear_model()
    m = CriticalSampleRatio()
    m.update(model, points([NEAR[0], FAR[0]]), R, 0.0, R, 3)
    m.update(model, points([FAR[1], NEAR[1]]), R, 0.0, R, 3)
    assert m.compute().dtype == torch.float64
    assert float(m.compute()) == 0.5

    # a small random network: batches of 7 vs the concatenated 30 (beta = 0: deterministic)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4)).double().eval()
    x = torch.randn(30, 5, dtype=torch.float64)
    whole = lass_critical(net, x, alpha=0.02, beta=0.0, r=0.1, max_iter=10)
    m = CriticalSampleRatio()
    for chunk in x.split(7):
        m.update(net, chunk, 0.02, 0.0, 0.1, 10)
    assert int(m.critical) == int(whole.sum()) and int(m.total) == 30
    assert float(m.compute()) == pytest.approx(float(whole.double().mean()), abs=0)
    assert 0 < float(m.compute()) < 1  # a non-trivial mix


@pytest.mark.filterwarnings("ignore:.*compute.*called before.*update")
def test_empty():
    assert math.isnan(float(CriticalSampleRatio().compute()))
    out = lass_critical(linear_model(), torch.zeros(0, 2, dtype=torch.float64), R, 0.0, R, 3)
    assert out.shape == (0,) and out.dtype == torch.bool


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(r=-0.1), "metrics.csr.r"),
    (dict(r=float("nan")), "metrics.csr.r"),
    (dict(alpha=-1.0), "metrics.csr.alpha"),
    (dict(beta=torch.tensor([0.1, -0.1], dtype=torch.float64)), "metrics.csr.beta"),
    (dict(r=torch.ones(3, dtype=torch.float64)), "metrics.csr.r"),  # does not broadcast to [2]
    (dict(max_iter=0), "metrics.csr.max_iter"),
    (dict(max_iter=2.5), "metrics.csr.max_iter"),
])
def test_bad_parameters(kwargs, name):
    args = dict(alpha=R, beta=0.0, r=R, max_iter=3) | kwargs
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")) as info:
        lass_critical(linear_model(), points(NEAR), **args)
    assert "\n" not in str(info.value)


def test_to_input_units():
    v = to_input_units(0.1, torch.tensor([0.5, 0.25]))
    assert v.shape == (2, 1, 1)
    assert v.flatten().tolist() == pytest.approx([0.2, 0.4])  # 0.1 * 2, 0.1 * 4
    assert (torch.ones(2, 3, 3) * v).shape == (2, 3, 3)
    flat = to_input_units(PAPER_R / PAPER_PIXEL_SCALE, torch.tensor([0.5]))
    assert flat.shape == () and float(flat) == pytest.approx(0.3 / 255 / 0.5)
    assert (torch.ones(64) * flat).shape == (64,)


def test_lass_search_returns_the_adversarial_points():
    model = linear_model()
    x = points(NEAR + FAR)
    critical, found = lass_search(model, x, alpha=R, beta=0.0, r=R, max_iter=5)
    assert critical.tolist() == [True, True, False, False]
    # one signed step of size r lands on the box corner that crosses the boundary (see above)
    assert torch.allclose(found[0], points([-0.1, 0.25])) and torch.allclose(
        found[1], points([-0.125, -0.1]))
    pred_x, pred_found = model(x).argmax(1), model(found).argmax(1)
    assert (pred_found != pred_x).tolist() == critical.tolist()
    assert ((found - x).abs() <= R + 1e-12).all()  # every point stays in its box
    assert torch.equal(lass_critical(model, x, alpha=R, beta=0.0, r=R, max_iter=5), critical)
