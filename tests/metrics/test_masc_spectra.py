"""MASC's component counts on hard spectra, against a float64 SVD computed here.

Every route (the streaming float32 Gram, a float64 Gram, the sample-space fit) must keep, per
class, the count a float64 SVD of the class's samples with their negations gives: the smallest r
whose singular values' squares reach ``variance`` of their sum. The spectra are the ones that
float32 finds hard: one dominant direction over a long flat tail (ReLU layers with a large common
mean), geometric decay, near-duplicate eigenvalues, classes of lower rank than the layer is wide.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.metrics import masc
from memorization.metrics.masc import (
    _n_keep,
    class_grams,
    fit_subspaces,
    fit_subspaces_from_samples,
    masc_predict,
)
from memorization.metrics.masc_states import MASCSamples, MASCSubspaces


def svd_counts(x: torch.Tensor, y: torch.Tensor, k: int, variance: float) -> list[int]:
    """The reference: per class, a float64 SVD of its samples stacked with their negations."""
    out = []
    for c in range(k):
        xc = x[y == c].double()
        if xc.numel() == 0:
            out.append(0)
            continue
        lam = torch.linalg.svdvals(torch.cat([xc, -xc])).square()
        share = lam.cumsum(0) / lam.sum()
        out.append(int((share < variance * (1 - 1e-10)).sum()) + 1)
    return out


def every_route(x: torch.Tensor, y: torch.Tensor, k: int, variance: float) -> dict[str, list]:
    m = MASCSubspaces(k, x.shape[1], variance=variance)
    for xb, yb in zip(x.split(512), y.split(512), strict=True):  # streamed, as at an epoch end
        m.update(xb, yb)
    return {
        "float32 gram": m.fit()[1].tolist(),
        "float32 gram + outputs": m.fit(samples=(x, y))[1].tolist(),
        "float64 gram": fit_subspaces(class_grams(x, y, k, dtype=torch.float64),
                                      variance)[1].tolist(),
        "samples": fit_subspaces_from_samples(x, y, k, variance)[1].tolist(),
    }


def flat_tail(n: int, d: int, k: int, tail_dim: int, tail_scale: float, seed: int,
              draw_seed: int | None = None):
    """Each sample 10 (1 + 0.01 z) u (u a fixed unit vector with positive entries) plus
    ``tail_scale`` times a standard normal vector in its class's ``tail_dim``-dim subspace (the
    directions from ``seed``, the samples from ``draw_seed``, default ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    u /= u.norm()
    tails = [torch.linalg.qr(torch.randn(d, tail_dim, generator=g, dtype=torch.float64))[0]
             for _ in range(k)]
    g = g if draw_seed is None else torch.Generator().manual_seed(draw_seed)
    xs = []
    for q in tails:
        common = 10 * (1 + 0.01 * torch.randn(n, 1, generator=g, dtype=torch.float64)) * u
        xs.append(common + tail_scale * torch.randn(n, tail_dim, generator=g,
                                                    dtype=torch.float64) @ q.T)
    return torch.cat(xs).float(), torch.arange(k).repeat_interleave(n)


def spectrum(n: int, d: int, k: int, scales, seed: int):
    """Per class, Gaussian samples whose covariance has the given singular value ``scales``
    (a length-d tensor, or a function of the class index) along a random orthonormal basis."""
    g = torch.Generator().manual_seed(seed)
    xs = []
    for c in range(k):
        s = scales(c) if callable(scales) else scales
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        xs.append((torch.randn(n, d, generator=g, dtype=torch.float64) * s) @ q.T)
    return torch.cat(xs).float(), torch.arange(k).repeat_interleave(n)


def test_the_flat_tail_case_of_a_1024_wide_layer(caplog):
    """D = 1024, 2 classes of 1,500 samples: a dominant common direction and a 300-dim class
    tail holding about 1.5% of the variance. The old numerical-rank cap (l_1 D eps(float32))
    kept 1 component per class, and MASC classified half of fresh samples."""
    x, y = flat_tail(1500, 1024, 2, 300, 0.07, seed=0)
    ref = svd_counts(x, y, 2, 0.99)
    assert min(ref) > 40  # the tail is needed to reach 99%
    with caplog.at_level(logging.INFO, logger="memorization.metrics.masc"):
        routes = every_route(x, y, 2, 0.99)
    assert all(counts == ref for counts in routes.values()), (ref, routes)
    assert "refitted in float64" in caplog.text  # float32 could not settle it alone, and said so
    # fresh samples of the same classes: the tails tell them apart
    fresh, fresh_y = flat_tail(200, 1024, 2, 300, 0.07, seed=0, draw_seed=1)
    m = MASCSubspaces(2, 1024)
    m.update(x, y)
    assert torch.equal(masc_predict(fresh, m.fit()[0]), fresh_y)


HARD = {
    "flat tail, 256 units": lambda: flat_tail(400, 256, 3, 120, 0.2, seed=1),
    # tail eigenvalues ~4e-5 of the first, under the old cap of 512 eps(float32) = 6e-5
    "flat tail, 512 units": lambda: flat_tail(600, 512, 3, 400, 0.065, seed=9),
    "dominant over near-duplicates": lambda: spectrum(
        500, 384, 3, torch.cat([torch.tensor([200.0]), 1 + 1e-3 * torch.randn(
            383, generator=torch.Generator().manual_seed(11))]), seed=10),
    "geometric decay 0.9": lambda: spectrum(300, 128, 3, 0.9 ** torch.arange(128.0), seed=2),
    "geometric decay 0.97": lambda: spectrum(300, 128, 3, 0.97 ** torch.arange(128.0), seed=3),
    "near-duplicate eigenvalues": lambda: spectrum(
        300, 128, 3, torch.cat([torch.tensor([30.0]), 1 + 1e-4 * torch.arange(127.0)]), seed=4),
    "rank-deficient classes": lambda: spectrum(
        200, 128, 3, lambda c: (torch.arange(128) < 10 + 20 * c) * (0.95 ** torch.arange(128.0)),
        seed=5),
    "fewer samples than units": lambda: spectrum(60, 128, 3, 0.98 ** torch.arange(128.0),
                                                 seed=6),
}


@pytest.mark.parametrize("variance", [0.9, 0.99, 0.999])
@pytest.mark.parametrize("case", list(HARD))
def test_every_route_keeps_the_float64_svd_count(case, variance):
    x, y = HARD[case]()
    ref = svd_counts(x, y, 3, variance)
    routes = every_route(x, y, 3, variance)
    assert all(counts == ref for counts in routes.values()), (ref, routes)


def test_a_relu_layer_of_a_trained_like_network_settles_in_float32(caplog):
    """Ordinary layers must not pay for the refit: ReLU outputs of a random layer (a mean and a
    spread-out spectrum) are settled by float32 alone."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(64, 256, generator=g) / 8
    x = (torch.randn(3000, 64, generator=g) @ w + 0.1).relu()
    y = torch.randint(0, 10, (3000,), generator=g)
    with caplog.at_level(logging.INFO, logger="memorization.metrics.masc"):
        _, n_comp = fit_subspaces(class_grams(x, y, 10), 0.99)
    assert "refitted" not in caplog.text
    assert n_comp.tolist() == svd_counts(x, y, 10, 0.99)


def test_the_settled_rule_by_hand():
    """Eigenvalues [3, 1] (trace 4): 75% is reached exactly at r = 1, so at variance 0.75 any
    rounding decides between 1 and 2: unsettled; at 0.7 (r = 1, margins 0.2 and 2.8 above a
    tolerance of 3e-3) settled; below the numerical rank's floor (rank 1 at tolerance 0.5),
    r = 2 is unsettled; an all-zero class is settled with 0 components."""
    lam = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    r, ok = _n_keep(lam, 0.75, 1e-3)
    assert r.tolist() == [1] and ok.tolist() == [False]
    r, ok = _n_keep(lam, 0.7, 1e-3)
    assert r.tolist() == [1] and ok.tolist() == [True]
    r, ok = _n_keep(lam, 0.9, 1e-3)  # r = 2: 3 < 3.6 - tol < 4
    assert r.tolist() == [2] and ok.tolist() == [True]
    r, ok = _n_keep(lam, 0.9, 0.5)  # 1 is not above 3 * 0.5: rank 1, but 2 components needed
    assert r.tolist() == [1] and ok.tolist() == [False]
    r, ok = _n_keep(torch.zeros(1, 3, dtype=torch.float64), 0.99, 1e-3)
    assert r.tolist() == [0] and ok.tolist() == [True]


def test_a_tie_within_float32_rounding_is_refitted_from_the_outputs(caplog):
    """Orthogonal class directions with squared norms chosen so that 90% is reached within
    float32's rounding of the threshold: the float32 count alone cannot be trusted, the refit
    from the outputs in float64 gives the SVD's count."""
    d = 64
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(8),
                                       dtype=torch.float64))
    # 10 directions: shares 0.5, then 9 of 0.5/9; 90% needs 1 + 7.2 -> 9 at the exact values,
    # but we make the 8th partial sum land 1e-9 below 0.9
    s2 = torch.full((10,), 0.5 / 9, dtype=torch.float64)
    s2[0] = 0.5
    target = 0.9 - 1e-9
    s2[8] = s2[9] = (1 - target - 0) / 2  # last two share what is left
    s2[1:8] = (target - 0.5) / 7
    x = (torch.diag(s2.sqrt()) @ q[:10]).float()  # 10 samples, one per direction
    x = torch.cat([x, x * 1.0])
    y = torch.zeros(len(x), dtype=torch.long)
    ref = svd_counts(x, y, 1, 0.9)
    grams = class_grams(x, y, 1)
    with caplog.at_level(logging.INFO, logger="memorization.metrics.masc"):
        _, n_comp = fit_subspaces(grams, 0.9, samples=(x, y), name="fc1")
    assert "MASC fc1" in caplog.text and "from the layer's outputs" in caplog.text
    assert n_comp.tolist() == ref
    assert math.isclose(float(x.double().square().sum()), 2.0, rel_tol=1e-6)


def test_the_epoch_end_metric_refits_from_its_kept_outputs(caplog):
    """Through the metrics protocol, as at an epoch end: the MASC metric streams the layer's
    outputs (kept for scoring), finds the classes float32 cannot settle, refits them from the
    kept outputs, logs which (naming the labelling and the layer), and reports the SVD's counts
    under both labellings (training labels = true labels here)."""
    from torch import nn

    from memorization.metrics.masc_probe import MASCConfig, MASCMetric
    from memorization.metrics.protocol import Context, Probe
    from memorization.models.probes import ProbeLayer

    x, y = flat_tail(700, 512, 3, 400, 0.065, seed=9)
    ref = svd_counts(x, y, 3, 0.99)
    layer = ProbeLayer("fc1", nn.Linear(1, 1), nn.Identity())
    metric = MASCMetric(MASCConfig(method="gram"))
    metric.begin(Context(layers=[layer], num_classes=3, probe_sizes={"train": len(y)}, world=1,
                         device=torch.device("cpu"), batches=None))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO, logger="memorization.metrics.masc"):
        for idx in perm.split(256):
            batch = {"y": y[idx], "y_true": y[idx], "corrupted": torch.zeros(len(idx), dtype=bool)}
            metric.update("train", Probe(layer, x[idx], None, None, batch))
        logs = metric.fit()
    assert "MASC masc/fc1" in caplog.text and "from the layer's outputs" in caplog.text
    assert "MASC masc_true/fc1" in caplog.text
    assert metric.extras["masc_components"]["masc/fc1"] == ref
    assert metric.extras["masc_components"]["masc_true/fc1"] == ref
    assert math.isclose(float(logs["masc/components/fc1"]), sum(ref) / 3)


# -- classes on which float32 eigh fails --------------------------------------------------------
def near_rank_one_gram(d: int = 512, seed: int = 27) -> torch.Tensor:
    """A class's Gram matrix on a late layer of a memorizing 10 x 512 MLP, in float32: 1414.6 v v^T
    (v a unit vector with ReLU's zeros: the class's dead units, live in other classes) plus a
    tail 0.27, 0.026, 3e-3, ..., 3e-8 on v's support, then float32 rounding. float32
    ``torch.linalg.eigh`` (MKL 2024.2 in torch 2.13, AVX2, one thread or two) raises "failed to
    converge" on it, alone or in a batch; float64 decomposes it. Seeds 27, 48 and 59 of 60 fail
    with both thread counts (one thread alone: 14 of 60)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g, dtype=torch.float64).relu()
    v /= v.norm()
    tail = torch.randn(d, 8, generator=g, dtype=torch.float64) * (v > 0)[:, None]
    tail = torch.linalg.qr(tail)[0] * torch.tensor(
        [0.27, 0.026, 3e-3, 3e-4, 3e-5, 3e-6, 3e-7, 3e-8], dtype=torch.float64).sqrt()
    return (1414.6 * v[:, None] * v[None, :] + tail @ tail.T).float()


def low_rank_samples(n: int, d: int, rank: int, seed: int) -> torch.Tensor:
    """n samples in a random ``rank``-dim subspace of R^d (every unit live), singular values
    decaying as 0.9^i: a class float32 settles alone."""
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))[0]
    z = torch.randn(n, rank, generator=g, dtype=torch.float64) * 0.9 ** torch.arange(rank)
    return (z @ q.T).float()


@pytest.fixture
def one_thread():
    """torch on one thread, as where the failure was seen (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def denormals_kept():
    """float32 denormals computed, not flushed to 0, as where the failure was seen (restored
    afterwards). Importing memorization.engine.trainer (e.g. via memorization.run) turns flushing on
    for the whole process, and with it MKL's float32 eigh decomposes ``near_rank_one_gram`` instead
    of raising: the test would depend on which tests ran before it."""
    flushing = float(torch.tensor(1e-38) * 0.01) == 0  # torch has no getter for the mode
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(flushing)


def eigh_failing_on(monkeypatch, trace: float, dtypes=(torch.float32,)) -> list:
    """Make masc's eigh raise, as LAPACK does, on any batch holding the matrix of this trace in
    one of ``dtypes``; returns the calls' (dtype, batch size) as they come."""
    real = masc._eigh
    calls = []

    def eigh(a):
        calls.append((a.dtype, a.shape[0] if a.dim() == 3 else None))
        tr = torch.diagonal(a, dim1=-2, dim2=-1).sum(-1).double()
        if a.dtype in dtypes and torch.isclose(tr, torch.tensor(trace, dtype=tr.dtype),
                                               rtol=1e-4).any():
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real(a)

    monkeypatch.setattr(masc, "_eigh", eigh)
    return calls


@pytest.mark.parametrize("variance", [0.99, 0.9999])
def test_a_near_rank_one_class_that_float32_eigh_fails_on_is_refitted_in_float64(
        variance, one_thread, denormals_kept, caplog):
    """The near rank-1 class between two ordinary ones, as fitted today: the fit goes through,
    class 1's subspace and count are those of a float64 fit of its Gram matrix, and the points
    along its direction are predicted as class 1, the others' samples as theirs. Where float32
    eigh decomposes the class (another LAPACK), its subspace is float32's: it agrees with the
    float64 one within float32's eigenvector accuracy, eps * l_1 / (l_r - l_{r+1})."""
    d = 512
    g1 = near_rank_one_gram(d)
    x0, x2 = low_rank_samples(300, d, 40, seed=1), low_rank_samples(300, d, 40, seed=2)
    grams = torch.stack([x0.T @ x0, g1, x2.T @ x2])
    try:  # the reason for this test; where another LAPACK decomposes it, the fit must still agree
        torch.linalg.eigh(grams)
        raw_fails = False
    except torch.linalg.LinAlgError:
        raw_fails = True
    with caplog.at_level(logging.INFO, logger="memorization.metrics.masc"):
        bases, n_comp = fit_subspaces(grams, variance, name="fc9")
    assert ("float32 eigh fails on class 1 " in caplog.text) == raw_fails
    assert "MASC fc9" in caplog.text or not raw_fails
    ref, ref_n = fit_subspaces(g1[None].double(), variance)
    assert n_comp[1] == ref_n[0] == (1 if variance == 0.99 else 2)
    r = int(n_comp[1])
    p1 = bases[1, :, :r] @ bases[1, :, :r].T
    lam = torch.linalg.eigvalsh(g1.double()).flip(0)
    atol = 1e-6 if raw_fails else max(1e-6, torch.finfo(torch.float32).eps * float(
        lam[0] / (lam[r - 1] - lam[r])))  # 6.9e-4 at r = 2; measured 2.2e-5 there
    assert torch.allclose(p1.double(), ref[0, :, :r] @ ref[0, :, :r].T, atol=atol)
    if variance == 0.99:  # classes 0 and 2 are settled in float32: only class 1 was refitted
        assert "settle" not in caplog.text
    # the other classes, as a fit of each alone gives them
    for c, xc in ((0, x0), (2, x2)):
        b, n = fit_subspaces((xc.T @ xc)[None], variance)
        assert n_comp[c] == n[0]
        r = int(n[0])
        assert torch.allclose(bases[c, :, :r] @ bases[c, :, :r].T, b[0] @ b[0].T, atol=1e-5)
    v = torch.linalg.eigh(g1.double())[1][:, -1].float()
    along = torch.tensor([-3, -2, -1, 0.5, 1, 2, 3])[:, None] * v \
        + 1e-4 * low_rank_samples(7, d, 5, seed=3)
    x = torch.cat([along, x0[:50], x2[:50]])
    want = torch.cat([torch.ones(7), torch.zeros(50), torch.full((50,), 2)]).long()
    assert torch.equal(masc_predict(x, bases), want)


def test_float32_eigh_failing_on_one_class_refits_only_that_class(monkeypatch, caplog):
    """Wherever LAPACK stands: eigh made to fail in float32 on class 1 alone (it fails on the
    batch, then on class 1 alone). Class 1 is refitted in float64 from the layer's outputs and
    gets the count of a float64 SVD; classes 0 and 2 keep their float32 results, the same as
    an ordinary fit's, and float64 sees class 1 only."""
    d = 128
    g = torch.Generator().manual_seed(4)
    v = torch.randn(d, generator=g).relu()
    x1 = (1 + torch.rand(200, 1, generator=g)) * v + 1e-4 * (v > 0) * torch.randn(200, d,
                                                                                   generator=g)
    x = torch.cat([low_rank_samples(200, d, 30, seed=5), x1, low_rank_samples(200, d, 30, seed=6)])
    y = torch.arange(3).repeat_interleave(200)
    m = MASCSubspaces(3, d)
    m.update(x, y)
    plain, plain_n = m.fit()  # no failure: the reference for classes 0 and 2
    calls = eigh_failing_on(monkeypatch, float(m.gram[0, 1].trace()))
    with caplog.at_level(logging.INFO, logger="memorization.metrics.masc"):
        bases, n_comp = m.fit(samples=(x, y), name="fc9")
    assert calls == [(torch.float32, 3), (torch.float32, None), (torch.float32, None),
                     (torch.float32, None), (torch.float64, 1)]
    assert "MASC fc9: float32 eigh fails on class 1 " in caplog.text
    assert "from the layer's outputs" in caplog.text and "settle" not in caplog.text
    assert n_comp.tolist() == svd_counts(x, y, 3, 0.99)
    for c in (0, 2):
        r = int(plain_n[c])
        assert n_comp[c] == r
        assert torch.equal(bases[c, :, :r], plain[c, :, :r])
    r = int(n_comp[1])
    assert torch.allclose(bases[1, :, :r] @ bases[1, :, :r].T,
                          plain[1, :, :r] @ plain[1, :, :r].T, atol=1e-5)
    assert torch.equal(masc_predict(x, bases), y)


def test_a_class_float64_cannot_decompose_either_is_one_line():
    """eigh failing in float64 too (here: a Gram matrix holding inf, on which eigh returns NaN)
    stops the fit with one line naming the layer and the class, by either route."""
    grams = torch.stack([torch.eye(4), torch.eye(4), torch.eye(4)])
    grams[2, 1, 1] = math.inf
    for g in (grams, grams.double()):
        with pytest.raises(ConfigError, match=r"^MASC fc9: eigh cannot decompose class 2's Gram "
                                              r"matrix in float64, which holds inf or NaN") as e:
            fit_subspaces(g, name="fc9")
        assert "\n" not in str(e.value) and "metrics.masc.method=samples" in str(e.value)
    x = torch.eye(4).repeat(2, 1)
    x[5, 1] = math.nan
    with pytest.raises(ConfigError, match=r"^MASC fc9: eigh cannot decompose class 1's samples"):
        fit_subspaces_from_samples(x, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), 2, name="fc9")


def test_eigh_failing_in_float64_too_is_one_line(monkeypatch):
    """A finite class that eigh cannot decompose in float32 nor float64 (made to fail), by the
    Gram route (the refit of a float32 fit, and a float64 fit) and the sample route."""
    x = low_rank_samples(40, 16, 8, seed=7)
    y = torch.arange(2).repeat_interleave(20)
    grams = class_grams(x, y, 2)
    eigh_failing_on(monkeypatch, float(grams[1].trace()), (torch.float32, torch.float64))
    for g, samples in ((grams, None), (grams, (x, y)), (grams.double(), None)):
        with pytest.raises(ConfigError, match=r"^MASC fc9: eigh cannot decompose class 1's Gram "
                                              r"matrix in float64; fit it by the sample route"):
            fit_subspaces(g, samples=samples, name="fc9")
    samples = MASCSamples(2)
    samples.update(x, y)
    with pytest.raises(ConfigError, match=r"^MASC fc9: eigh cannot decompose class 1's samples "
                                          r"in float64; fit it by its Gram matrices"):
        samples.fit(name="fc9")
