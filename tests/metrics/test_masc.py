"""MASC (metrics/masc.py): the subspace fit, the variance rule, the angle scores, streaming, the
sample-space fallback and the errors. The right answers of the small cases are worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.metrics import masc
from memorization.metrics.masc import (
    MAX_GRAM_BYTES,
    class_grams,
    fit_subspaces,
    fit_subspaces_from_samples,
    flat_bases,
    gram_bytes,
    masc_accuracy,
    masc_predict,
    masc_scores,
)
from memorization.metrics.masc_states import MASCSubspaces
from memorization.metrics.subset_accuracy import subset_accuracy


def projectors(bases: torch.Tensor) -> torch.Tensor:
    """P_k = U_k U_k^T, [K, D, D]: the subspace itself, free of the basis' signs and rotation."""
    return bases @ bases.mT


# -- a hand-worked case in 2-D ---------------------------------------------------------------------
# class 0: (4, 1/4), (4, -1/4)           G_0 = [[16+16, 1-1], [1-1, 1/16+1/16]] = diag(32, 1/8)
#          eigenvalues 32, 1/8: the first explains 32 / 32.125 = 0.99611 >= 0.99 -> 1 component,
#          u = +-(1, 0)
# class 1: (1/4, 2), (-1/4, 2), (0, 3)    G_1 = [[1/16+1/16, 1/2-1/2], [0, 4+4+9]] = diag(1/8, 17)
#          eigenvalues 17, 1/8: the first explains 17 / 17.125 = 0.99270 >= 0.99 -> 1 component,
#          u = +-(0, 1)
# With variance 0.995 class 0 still keeps 1 (0.99611), class 1 needs 2 (0.99270 < 0.995).
# Scores cos^2 theta_k = ||U_k^T x||^2 / ||x||^2 = x_1^2 / |x|^2 and x_2^2 / |x|^2:
#   x = (1, 1):  1/2, 1/2  -> a tie, argmax takes the lowest index: 0
#   x = (2, 1):  4/5, 1/5  -> 0
#   x = (1, 3):  1/10, 9/10 -> 1
#   x = (-5, 0): 1, 0       -> 0 (a subspace contains -x with x)
#   x = (0, 0):  0, 0       -> -1 (no angle)
X_TINY = torch.tensor([[4, 0.25], [4, -0.25], [0.25, 2], [-0.25, 2], [0, 3]])
Y_TINY = torch.tensor([0, 0, 1, 1, 1])
X_TEST = torch.tensor([[1.0, 1], [2, 1], [1, 3], [-5, 0], [0, 0]])
SCORES = torch.tensor([[0.5, 0.5], [0.8, 0.2], [0.1, 0.9], [1, 0], [0, 0]])
PRED = torch.tensor([0, 0, 1, 0, -1])


def test_hand_worked_grams_and_subspaces():
    grams = class_grams(X_TINY, Y_TINY, 2)
    assert torch.equal(grams, torch.tensor([[[32, 0], [0, 0.125]], [[0.125, 0], [0, 17]]]))
    bases, n_comp = fit_subspaces(grams, 0.99)
    assert n_comp.tolist() == [1, 1]
    assert bases.shape == (2, 2, 1)
    assert torch.allclose(bases.abs(), torch.tensor([[[1.0], [0]], [[0], [1]]]), atol=1e-6)
    _, n_comp = fit_subspaces(grams, 0.995)
    assert n_comp.tolist() == [1, 2]


def test_hand_worked_scores_and_predictions():
    bases, _ = fit_subspaces(class_grams(X_TINY, Y_TINY, 2), 0.99)
    scores = masc_scores(X_TEST, bases)
    assert torch.allclose(scores, SCORES, atol=1e-6)
    assert not scores.isnan().any()
    assert torch.equal(masc_predict(X_TEST, bases), PRED)


def test_zero_vector_counts_as_wrong():
    bases, _ = fit_subspaces(class_grams(X_TINY, Y_TINY, 2), 0.99)
    labels = torch.tensor([0, 0, 1, 0, 0])  # right for the first four; the zero x claims 0
    # 4 of 5 right: the zero vector's -1 matches no label
    assert masc_accuracy(X_TEST, labels, bases).item() == pytest.approx(0.8)
    acc = subset_accuracy(masc_predict(X_TEST, bases), labels)["acc"]
    assert acc.item() == pytest.approx(0.8)


# -- Alg. 3 as written: negated copies, then ordinary centered PCA ---------------------------------
def _paper_pca(x: torch.Tensor, y: torch.Tensor, k: int, variance: float):
    """Alg. 3 literally: D_new = D u {-x}, per class PCA of the centered D_new,k by SVD, keeping the
    smallest r with cumsum(s^2) / sum(s^2) >= variance."""
    d_new, y_new = torch.cat([x, -x]), torch.cat([y, y])
    out = []
    for c in range(k):
        xc = d_new[y_new == c]
        xc = xc - xc.mean(0)  # the mean is 0 up to rounding: the negations cancel it
        _, s, vh = torch.linalg.svd(xc, full_matrices=False)
        share = (s**2).cumsum(0) / (s**2).sum()
        r = int((share >= variance).nonzero()[0]) + 1
        out.append((vh[:r].T @ vh[:r], r))
    return out


@pytest.mark.parametrize("variance", [0.8, 0.99])
def test_negated_copies_equal_uncentered_pca(variance):
    g = torch.Generator().manual_seed(0)
    d, k = 6, 3
    # a non-zero mean per class, so that centered PCA of D_k alone would differ
    scales = torch.tensor([5.0, 4, 3, 2, 1, 0.5], dtype=torch.float64)
    xs, ys = [], []
    for c in range(k):
        rot, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        mean = torch.randn(d, generator=g, dtype=torch.float64) * 3
        xs.append((torch.randn(40, d, generator=g, dtype=torch.float64) * scales) @ rot.T + mean)
        ys.append(torch.full((40,), c))
    x, y = torch.cat(xs), torch.cat(ys)
    bases, n_comp = fit_subspaces(class_grams(x, y, k), variance)
    for c, (proj, r) in enumerate(_paper_pca(x, y, k, variance)):
        assert n_comp[c] == r
        assert torch.allclose(projectors(bases)[c], proj, atol=1e-8)


# -- samples from known orthogonal subspaces -------------------------------------------------------
def _orthogonal_blocks(device="cpu"):
    """Three mutually orthogonal subspaces of R^30 of dims 2, 3, 4 (columns of one random Q)."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(30, 9, generator=g))
    blocks = [q[:, :2], q[:, 2:5], q[:, 5:9]]

    def sample(n):
        x = torch.cat([torch.randn(n, b.shape[1], generator=g) @ b.T for b in blocks])
        y = torch.arange(3).repeat_interleave(n)
        return x.to(device), y.to(device)

    return sample


@pytest.mark.parametrize("variance", [0.99, 1.0])
def test_orthogonal_subspaces_classified_perfectly(variance):
    sample = _orthogonal_blocks()
    x, y = sample(100)
    bases, n_comp = fit_subspaces(class_grams(x, y, 3), variance)
    assert n_comp.tolist() == [2, 3, 4]
    x_new, y_new = sample(200)  # fresh samples: each lies in its own subspace (angle 0) and is
    # orthogonal to the other two (angle 90 degrees), so its scores are 1 and 0, 0
    scores = masc_scores(x_new, bases)
    assert torch.allclose(scores, torch.nn.functional.one_hot(y_new, 3).float(), atol=1e-4)
    assert torch.equal(masc_predict(x_new, bases), y_new)
    assert masc_accuracy(x_new, y_new, bases).item() == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda():
    x, y = _orthogonal_blocks("cuda")(50)
    m = MASCSubspaces(3, 30).to("cuda")
    for xb, yb in zip(x.split(40), y.split(40), strict=True):
        m.update(xb, yb)
    bases, n_comp = m.compute()
    assert bases.device.type == "cuda" and n_comp.tolist() == [2, 3, 4]
    assert torch.equal(masc_predict(x, bases), y)
    bases_s, _ = fit_subspaces_from_samples(x, y, 3)
    assert torch.allclose(projectors(bases_s), projectors(bases), atol=1e-4)


# -- the variance rule -----------------------------------------------------------------------------
# Ten samples (3, 0, 0), one (0, 3, 0), one (0, 0, 1): G = diag(90, 9, 1), trace 100, cumulative
# shares 0.90, 0.99, 1.00 (exact in floating point), so the smallest r reaching the threshold is:
@pytest.mark.parametrize("variance, r", [(0.5, 1), (0.9, 1), (0.95, 2), (0.99, 2), (0.995, 3),
                                         (1.0, 3)])
def test_variance_threshold(variance, r):
    x = torch.tensor([[3.0, 0, 0]] * 10 + [[0, 3, 0], [0, 0, 1]])
    y = torch.zeros(12, dtype=torch.long)
    grams = class_grams(x, y, 1)
    assert torch.equal(grams[0], torch.diag(torch.tensor([90.0, 9, 1])))
    bases, n_comp = fit_subspaces(grams, variance)
    assert n_comp.tolist() == [r]
    assert torch.allclose(bases[0].abs(), torch.eye(3)[:, :r])  # axes in order of variance
    _, n_comp = fit_subspaces_from_samples(x, y, 1, variance)
    assert n_comp.tolist() == [r]


def test_padded_columns_are_zero():
    # variance 0.995 in the hand-worked case: R = 2, class 0 keeps 1, its second column is 0
    bases, n_comp = fit_subspaces(class_grams(X_TINY, Y_TINY, 2), 0.995)
    assert n_comp.tolist() == [1, 2] and bases.shape == (2, 2, 2)
    assert torch.equal(bases[0, :, 1], torch.zeros(2))
    # class 1 spans the plane: every nonzero x has score 1 there; class 0 scores as before
    assert torch.allclose(masc_scores(X_TEST[:4], bases),
                          torch.stack([SCORES[:4, 0], torch.ones(4)], 1), atol=1e-6)


# -- streaming, the fallback, empty classes --------------------------------------------------------
def _random_data(n=120, d=10, k=4, seed=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype) * torch.linspace(3, 0.2, d, dtype=dtype)
    return x, torch.randint(0, k, (n,), generator=g)


def test_streaming_equals_one_shot():
    x, y = _random_data()
    m = MASCSubspaces(4, 10, variance=0.9)
    for xb, yb in zip(x.split(25), y.split(25), strict=True):  # 5 batches of unequal class mixes
        m.update(xb, yb)
    grams = class_grams(x, y, 4)
    assert torch.allclose(m.gram[0], grams, rtol=1e-5, atol=1e-4)
    assert torch.equal(m.count[0], torch.bincount(y, minlength=4))
    bases, n_comp = m.compute()
    ref_bases, ref_n = fit_subspaces(grams, 0.9)
    assert torch.equal(n_comp, ref_n)
    assert torch.allclose(projectors(bases), projectors(ref_bases), atol=1e-4)


def test_dead_units_are_left_out_of_eigh_exactly(monkeypatch):
    x, y = _random_data(d=10)
    x[:, [1, 4, 5]] = 0  # three dead units: zero rows and columns in every Gram matrix
    grams = class_grams(x, y, 4)
    sizes = []
    real_eigh = masc._eigh
    monkeypatch.setattr(masc, "_eigh", lambda a: sizes.append(a.shape[-1]) or real_eigh(a))
    bases, n_comp = fit_subspaces(grams, 0.9)
    assert sizes == [7]  # the live block only
    lam, vec = torch.linalg.eigh(grams.double())  # reference: the full matrices
    lam, vec = lam.flip(-1), vec.flip(-1)
    frac = lam.cumsum(-1) / lam.sum(-1, keepdim=True)
    want = (frac < 0.9).sum(-1) + 1
    assert torch.equal(n_comp, want)
    ref = torch.stack([vec[k, :, : int(r)].float() @ vec[k, :, : int(r)].T.float()
                       for k, r in enumerate(want)])
    assert torch.allclose(projectors(bases), ref, atol=1e-4)
    assert not bases[:, [1, 4, 5]].any()
    empty, none = fit_subspaces(torch.zeros(3, 5, 5))  # every unit dead: no subspace at all
    assert empty.shape == (3, 5, 0) and not none.any()


def test_flat_bases_drop_the_padding():
    x, y = _random_data(d=10)
    bases, n_comp = fit_subspaces(class_grams(x, y, 4), 0.8)
    assert len(set(n_comp.tolist())) > 1  # unequal r_k: the narrower classes are padded
    flat, owner = flat_bases(bases)
    assert flat.shape == (10, int(n_comp.sum())) and owner.shape == (int(n_comp.sum()), 4)
    assert torch.equal(owner.sum(0).long(), n_comp)  # each class owns its r_k columns
    assert torch.equal(masc_predict(x, bases, (flat, owner)), masc_predict(x, bases))


def test_float32_grams_count_the_components_of_a_flat_spectrum():
    # ReLU features with a slowly decaying spectrum: many small but real eigenvalues. The share
    # is taken of the trace, so float32's inaccurate small eigenvalues cannot shrink the total
    # (measured against their own sum, the float32 route kept 60 components instead of 85)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6000, 256, generator=g) * torch.arange(1, 257, dtype=torch.float32) ** -1.0
    x = torch.relu(z @ (torch.randn(256, 512, generator=g) / 16) + 0.05)
    y = torch.randint(0, 3, (6000,), generator=g)
    _, r32 = fit_subspaces(class_grams(x, y, 3), 0.99)
    _, r64 = fit_subspaces(class_grams(x, y, 3, dtype=torch.float64), 0.99)
    assert torch.equal(r32, r64) and int(r64.min()) > 70


def test_two_labellings_share_the_rows_they_agree_on():
    x, y = _random_data()
    y_true = y.clone()
    y_true[::3] = (y[::3] + 1) % 4  # a third of the rows disagree
    m = MASCSubspaces(4, 10, variance=0.9, labellings=2)
    for xb, yb, tb in zip(x.split(25), y.split(25), y_true.split(25), strict=True):
        m.update(xb, torch.stack([yb, tb], dim=1))
    for j, labels in enumerate((y, y_true)):
        grams = class_grams(x, labels, 4)
        assert torch.allclose(m.gram[j], grams, rtol=1e-5, atol=1e-4)
        assert torch.equal(m.count[j], torch.bincount(labels, minlength=4))
        assert torch.equal(m.compute(j)[1], fit_subspaces(grams, 0.9)[1])
    with pytest.raises(ValueError, match="2 labelling"):
        m.update(x, y)


def test_streaming_flattens_and_resets():
    x, y = _random_data(d=12)
    m = MASCSubspaces(4, 12)
    m.update(x.view(-1, 3, 2, 2), y)  # conv-like outputs [N, C, H, W] are flattened
    assert torch.allclose(m.gram[0], class_grams(x, y, 4), rtol=1e-5, atol=1e-4)
    m.reset()
    assert not m.gram.any() and not m.count.any()


@pytest.mark.parametrize("variance", [0.9, 0.99, 1.0])
def test_sample_space_fallback_agrees(variance):
    # D = 20; class 0 has 8 samples (< D: the dual n x n kernel route), class 1 has 30 (>= D: its
    # Gram matrix), class 2 has none
    g = torch.Generator().manual_seed(3)
    scale = torch.linspace(2, 0.1, 20, dtype=torch.float64)
    x = torch.randn(38, 20, generator=g, dtype=torch.float64) * scale
    y = torch.tensor([0] * 8 + [1] * 30)[torch.randperm(38, generator=g)]
    ref_bases, ref_n = fit_subspaces(class_grams(x, y, 3), variance)
    bases, n_comp = fit_subspaces_from_samples(x, y, 3, variance)
    assert torch.equal(n_comp, ref_n)
    assert n_comp[2] == 0 and (variance < 1 or n_comp[:2].tolist() == [8, 20])
    assert torch.allclose(projectors(bases), projectors(ref_bases), atol=1e-8)
    eye = torch.eye(int(n_comp[0]), dtype=torch.float64)
    assert torch.allclose(bases[0, :, : n_comp[0]].T @ bases[0, :, : n_comp[0]], eye, atol=1e-8)


def test_sample_space_fallback_float32():
    x, y = _random_data(n=40, d=50)  # every class has fewer samples than D
    ref_bases, ref_n = fit_subspaces(class_grams(x, y, 4), 0.95)
    bases, n_comp = fit_subspaces_from_samples(x, y, 4, 0.95)
    assert bases.dtype == torch.float32
    assert torch.equal(n_comp, ref_n)
    assert torch.allclose(projectors(bases), projectors(ref_bases), atol=1e-3)


def test_empty_class_has_no_subspace():
    x, y = _random_data(k=3)  # labels 0..2 of K = 4: class 3 is empty
    m = MASCSubspaces(4, 10)
    m.update(x, y)
    bases, n_comp = m.compute()
    assert m.count[0, 3] == 0 and n_comp[3] == 0 and not bases[3].any()
    scores = masc_scores(x, bases)
    assert torch.equal(scores[:, 3], torch.zeros(len(x)))
    assert (masc_predict(x, bases) != 3).all()


def test_no_samples_at_all():
    bases, n_comp = fit_subspaces(torch.zeros(2, 3, 3), 0.99)
    assert bases.shape == (2, 3, 0) and n_comp.tolist() == [0, 0]
    x = torch.tensor([[1.0, 2, 3], [0, 0, 0]])
    assert torch.equal(masc_scores(x, bases), torch.zeros(2, 2))
    assert masc_predict(x, bases).tolist() == [0, -1]  # all scores 0: lowest index; zero: -1


# -- errors ----------------------------------------------------------------------------------------
def test_gram_bytes():
    assert gram_bytes(10, 512) == 10 * 512 * 512 * 4
    assert gram_bytes(10, 512, 8) == 2 * gram_bytes(10, 512)
    assert MAX_GRAM_BYTES == 2 * 1024**3


def test_memory_guard():
    # 200 classes x 100000^2 x 4 bytes = 8e12 bytes: refused before anything is allocated
    with pytest.raises(ConfigError, match=r"7450\.58 GiB.*metrics\.masc\.max_gram_gb"):
        MASCSubspaces(200, 100_000)
    with pytest.raises(ConfigError, match="metrics.probe_size"):
        MASCSubspaces(10, 512, max_bytes=gram_bytes(10, 512) - 1)
    MASCSubspaces(10, 512, max_bytes=gram_bytes(10, 512))  # exactly at the limit is fine


@pytest.mark.parametrize("variance", [0, -0.1, 1.5, math.nan, True, "0.9"])
def test_bad_variance(variance):
    x, y = _random_data()
    with pytest.raises(ConfigError, match="metrics.masc.variance"):
        fit_subspaces(class_grams(x, y, 4), variance)
    with pytest.raises(ConfigError, match="metrics.masc.variance"):
        fit_subspaces_from_samples(x, y, 4, variance)
    with pytest.raises(ConfigError, match="metrics.masc.variance"):
        MASCSubspaces(4, 10, variance=variance)


def test_bad_labels_and_shapes():
    x, y = _random_data()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        class_grams(x, y, 3)
    with pytest.raises(ValueError, match="width 11"):
        MASCSubspaces(4, 11).update(x, y)
    bases, _ = fit_subspaces(class_grams(x, y, 4))
    with pytest.raises(ValueError, match="bases must be"):
        masc_scores(x[:, :5], bases)
