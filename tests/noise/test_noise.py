"""The corruptions in memorization.noise: selection, what each type does, errors, the record,
and that the DataModule corrupts the training split only.

Statistical checks use fixed seeds and bounds of about 4.5 to 6 standard deviations, so they are
deterministic and fail only when the behaviour is wrong, never by chance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.data import DataModule, load_source
from memorization.noise import CORRUPTIONS, CorruptionRecord, corrupt_dataset

ALL_TYPES = sorted(CORRUPTIONS)
# Types that accept any p (random_labels is defined with p = 1 only).
FREE_P_TYPES = [t for t in ALL_TYPES if CORRUPTIONS[t].fixed_p is None]
LABEL_TYPES = [t for t in ALL_TYPES if CORRUPTIONS[t].kind == "label"]
INPUT_TYPES = [t for t in ALL_TYPES if CORRUPTIONS[t].kind == "input"]


def _data(n: int, shape: tuple[int, ...] = (1, 4, 4), num_classes: int = 10, seed: int = 123):
    """Random raw inputs in [0, 1] and uniformly drawn labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, num_classes, (n,), generator=g)


def _increasing_images(n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Images whose flattened values strictly increase, and differ from image to image."""
    d = math.prod(shape)
    base = torch.arange(d, dtype=torch.float64)
    x = (base[None, :] + torch.arange(n, dtype=torch.float64)[:, None] / n) / (d + 1)
    return x.to(torch.float32).reshape(n, *shape)


def _recover_perm(original: torch.Tensor, shuffled: torch.Tensor) -> torch.Tensor:
    """The permutation ``perm`` with ``shuffled.flatten() == original.flatten()[perm]``, for an
    ``original`` whose flattened values strictly increase."""
    perm = torch.searchsorted(original.flatten().contiguous(), shuffled.flatten().contiguous())
    assert torch.equal(original.flatten()[perm], shuffled.flatten())
    return perm


def _within_binomial(count: int, n: int, p: float, sds: float = 4.5) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= sds * sd


def _labels_in_range(y: torch.Tensor, k: int) -> bool:
    return bool(((y >= 0) & (y < k)).all())


def _p_for(name: str) -> float:
    """A valid p that corrupts some but (when allowed) not all samples."""
    return CORRUPTIONS[name].fixed_p if CORRUPTIONS[name].fixed_p is not None else 0.5


# -- every type ------------------------------------------------------------------------------------
def test_registry_lists_the_known_types():
    assert set(ALL_TYPES) == {"none", "label_uniform", "label_flip", "random_labels",
                              "shuffled_pixels", "random_pixels", "gaussian", "gaussian_sample",
                              "structured"}


@pytest.mark.parametrize("name", FREE_P_TYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selection_count_is_binomial(name, seed):
    # N=4000, p=0.3: mean 1200, sd = sqrt(4000 * 0.3 * 0.7) = 28.98, so 4.5 sd is +-130.
    x, y = _data(4000)
    rec = corrupt_dataset(x, y, 10, name, 0.3, seed).record
    assert rec.selected.dtype == torch.bool and rec.selected.shape == (4000,)
    n_sel = int(rec.selected.sum())
    assert 1200 - 130 <= n_sel <= 1200 + 130
    assert _within_binomial(n_sel, 4000, 0.3)
    # nothing outside the selection is corrupted
    assert not bool((rec.corrupted & ~rec.selected).any())


@pytest.mark.parametrize("name", FREE_P_TYPES)
def test_p_zero_selects_nothing_and_changes_nothing(name):
    x, y = _data(500)
    res = corrupt_dataset(x, y, 10, name, 0.0, seed=0)
    assert not bool(res.record.selected.any())
    assert not bool(res.record.corrupted.any())
    assert torch.equal(res.x, x) and torch.equal(res.y, y)
    assert torch.equal(res.record.true_labels, y) and torch.equal(res.record.train_labels, y)
    assert res.test_transform is None


@pytest.mark.parametrize("name", ALL_TYPES)
def test_inputs_are_not_modified_in_place(name):
    x, y = _data(300)
    x0, y0 = x.clone(), y.clone()
    res = corrupt_dataset(x, y, 10, name, _p_for(name), seed=0)
    assert bool(res.record.selected.any())
    assert torch.equal(x, x0) and torch.equal(y, y0)
    # the result does not alias the inputs either
    assert res.x.data_ptr() != x.data_ptr() and res.y.data_ptr() != y.data_ptr()


@pytest.mark.parametrize("name", ALL_TYPES)
def test_result_shapes_dtypes_and_untouched_unselected(name):
    x, y = _data(300, shape=(3, 4, 4))
    res = corrupt_dataset(x, y, 10, name, _p_for(name), seed=3)
    rec = res.record
    assert res.x.shape == x.shape and res.x.dtype == x.dtype
    assert res.y.shape == y.shape and res.y.dtype == y.dtype
    keep = ~rec.selected
    assert torch.equal(res.x[keep], x[keep]) and torch.equal(res.y[keep], y[keep])
    assert torch.equal(rec.true_labels, y) and torch.equal(rec.train_labels, res.y)
    assert rec.name == name and rec.p == _p_for(name) and rec.seed == 3
    assert _labels_in_range(res.y, 10)


@pytest.mark.parametrize("name", LABEL_TYPES)
def test_label_types_leave_inputs_alone(name):
    x, y = _data(300)
    res = corrupt_dataset(x, y, 10, name, _p_for(name), seed=0)
    assert torch.equal(res.x, x)
    assert torch.equal(res.record.corrupted, res.y != y)


@pytest.mark.parametrize("name", INPUT_TYPES)
def test_input_types_leave_labels_alone_and_corrupt_every_selected(name):
    x, y = _data(300)
    res = corrupt_dataset(x, y, 10, name, 0.5, seed=0)
    assert torch.equal(res.y, y)
    assert torch.equal(res.record.corrupted, res.record.selected)
    # every selected input actually changed (random data: no permutation or noise is a no-op)
    sel = res.record.selected
    changed = (res.x[sel] != x[sel]).flatten(1).any(dim=1)
    assert bool(changed.all())


def test_none_selects_but_corrupts_nothing():
    x, y = _data(1000)
    res = corrupt_dataset(x, y, 10, "none", 0.4, seed=0)
    assert _within_binomial(int(res.record.selected.sum()), 1000, 0.4)
    assert not bool(res.record.corrupted.any())
    assert torch.equal(res.x, x) and torch.equal(res.y, y)


# -- label noise -----------------------------------------------------------------------------------
def test_label_flip_never_keeps_the_label():
    x, y = _data(4000, num_classes=5)
    res = corrupt_dataset(x, y, 5, "label_flip", 0.3, seed=0)
    rec = res.record
    sel = rec.selected
    assert torch.equal(rec.corrupted, sel)  # every selected sample is corrupted
    assert bool((rec.train_labels[sel] != rec.true_labels[sel]).all())
    assert torch.equal(rec.train_labels[~sel], rec.true_labels[~sel])


def test_label_flip_is_uniform_over_the_other_classes():
    # K=5, p=1, N=8000 with uniform true labels: about 1600 per true class, and each of the
    # 4 other classes should get Binomial(n_c, 1/4): mean 400, sd sqrt(1600 * 3/16) = 17.3.
    k = 5
    x, y = _data(8000, num_classes=k, seed=7)
    rec = corrupt_dataset(x, y, k, "label_flip", 1.0, seed=1).record
    assert bool(rec.selected.all())
    for c in range(k):
        new = rec.train_labels[rec.true_labels == c]
        counts = torch.bincount(new, minlength=k)
        assert counts[c] == 0
        for other in range(k):
            if other != c:
                assert _within_binomial(int(counts[other]), len(new), 1 / (k - 1)), (c, counts)
    # and overall, a chi-square over the 20 (true, new) cells with 15 degrees of freedom:
    # mean 15, sd sqrt(30) = 5.5, so 50 is more than 6 sd out.
    table = torch.zeros(k, k)
    table.index_put_((rec.true_labels, rec.train_labels), torch.ones(8000), accumulate=True)
    expected = table.sum(dim=1, keepdim=True) / (k - 1)
    off = ~torch.eye(k, dtype=torch.bool)
    chi2 = float((((table - expected) ** 2) / expected)[off].sum())
    assert chi2 < 50


def test_label_flip_with_two_classes_swaps():
    x, y = _data(200, num_classes=2)
    res = corrupt_dataset(x, y, 2, "label_flip", 1.0, seed=0)
    assert torch.equal(res.y, 1 - y)


def test_label_uniform_keeps_the_label_at_rate_one_over_k():
    # K=4, p=0.6, N=4000: about 2400 selected, of which Binomial(n_sel, 1/4) keep their label
    # (mean 600, sd sqrt(2400 * 3/16) = 21.2).
    k = 4
    x, y = _data(4000, num_classes=k)
    rec = corrupt_dataset(x, y, k, "label_uniform", 0.6, seed=0).record
    sel, corr = rec.selected, rec.corrupted
    n_sel = int(sel.sum())
    kept = sel & (rec.train_labels == rec.true_labels)
    assert _within_binomial(int(kept.sum()), n_sel, 1 / k)
    # corrupted means "the training label differs", nothing else
    assert torch.equal(corr, rec.train_labels != rec.true_labels)
    # selected but unchanged: selected, not corrupted, label equal
    unchanged = sel & ~corr
    assert int(unchanged.sum()) > 0
    assert torch.equal(unchanged, kept)
    assert torch.equal(rec.train_labels[~sel], rec.true_labels[~sel])
    # the new labels are uniform over all K classes (mean n_sel / 4 = 600 each)
    counts = torch.bincount(rec.train_labels[sel], minlength=k)
    for c in range(k):
        assert _within_binomial(int(counts[c]), n_sel, 1 / k)
    assert rec.summary()["n_selected"] == n_sel
    assert rec.summary()["n_corrupted"] == int(corr.sum()) < n_sel


@pytest.mark.parametrize("p", [0.5, 0.0, 0.99])
def test_random_labels_requires_p_one(p):
    x, y = _data(50)
    with pytest.raises(ConfigError, match="random_labels") as err:
        corrupt_dataset(x, y, 10, "random_labels", p, seed=0)
    assert "\n" not in str(err.value)


def test_random_labels_selects_everything():
    k = 10
    x, y = _data(4000, num_classes=k)
    rec = corrupt_dataset(x, y, k, "random_labels", 1.0, seed=0).record
    assert bool(rec.selected.all())
    # kept at rate 1/K: mean 400, sd sqrt(4000 * 0.09) = 19
    kept = int((rec.train_labels == rec.true_labels).sum())
    assert _within_binomial(kept, 4000, 1 / k)
    assert rec.n_corrupted == 4000 - kept
    counts = torch.bincount(rec.train_labels, minlength=k)
    assert all(_within_binomial(int(c), 4000, 1 / k) for c in counts)


# -- pixel permutations ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 4, 4), (20,)])
def test_shuffled_pixels_uses_one_permutation(shape):
    n = 200
    x = _increasing_images(n, shape)
    y = torch.zeros(n, dtype=torch.long)
    res = corrupt_dataset(x, y, 2, "shuffled_pixels", 0.5, seed=4)
    sel = res.record.selected
    assert 0 < int(sel.sum()) < n
    assert torch.equal(res.x[~sel], x[~sel])  # unselected untouched
    c = shape[0] if len(shape) == 3 else 1
    pixels = x.reshape(n, c, -1)
    out = res.x.reshape(n, c, -1)
    perms = []
    for i in torch.nonzero(sel).flatten().tolist():
        perm = _recover_perm(pixels[i, 0], out[i, 0])
        # all channels of a pixel move together
        for ch in range(c):
            assert torch.equal(out[i, ch], pixels[i, ch][perm])
        perms.append(perm)
    first = perms[0]
    assert not torch.equal(first, torch.arange(len(first)))  # an actual shuffle
    assert all(torch.equal(p, first) for p in perms)
    assert res.test_transform is None  # not applied to the test set unless asked


def test_shuffled_pixels_test_transform_applies_the_same_permutation():
    n, shape = 100, (3, 4, 4)
    x = _increasing_images(n, shape)
    y = torch.zeros(n, dtype=torch.long)
    res = corrupt_dataset(x, y, 2, "shuffled_pixels", 0.5, seed=4, apply_to_test=True)
    i = int(torch.nonzero(res.record.selected)[0])
    perm = _recover_perm(x[i, 0], res.x[i, 0])
    x_test = torch.rand(7, *shape, generator=torch.Generator().manual_seed(9))
    x_test0 = x_test.clone()
    out = res.test_transform(x_test)
    assert out.shape == x_test.shape
    assert torch.equal(x_test, x_test0)  # the transform does not work in place
    assert torch.equal(out, x_test.reshape(7, 3, -1)[..., perm].reshape(x_test.shape))
    # the train images map through the transform to exactly what training saw
    sel = res.record.selected
    assert torch.equal(res.test_transform(x[sel]), res.x[sel])


def test_shuffled_pixels_permutation_depends_on_seed_and_image_size_only():
    """The shared permutation exists with p = 0 and does not change with N or p."""
    x_small, y_small = _data(20)
    x_big, y_big = _data(300)
    perms = []
    for x, y, p in ((x_small, y_small, 0.0), (x_big, y_big, 0.7)):
        res = corrupt_dataset(x, y, 10, "shuffled_pixels", p, seed=3, apply_to_test=True)
        assert torch.equal(res.x[~res.record.selected], x[~res.record.selected])
        probe = torch.arange(x[0].numel(), dtype=torch.float32).reshape(1, *x.shape[1:])
        perms.append(res.test_transform(probe))
    assert torch.equal(perms[0], perms[1])
    assert not torch.equal(perms[0], probe)


@pytest.mark.parametrize("shape", [(1, 6, 6), (3, 4, 4)])
def test_random_pixels_permutes_each_image_independently(shape):
    n = 100
    x = _increasing_images(n, shape)
    y = torch.zeros(n, dtype=torch.long)
    res = corrupt_dataset(x, y, 2, "random_pixels", 0.5, seed=0)
    sel = res.record.selected
    assert torch.equal(res.x[~sel], x[~sel])
    idx = torch.nonzero(sel).flatten().tolist()
    assert len(idx) > 20
    c = shape[0]
    pixels, out = x.reshape(n, c, -1), res.x.reshape(n, c, -1)
    perms = set()
    for i in idx:
        # a permutation of its own pixels: same values, sorted
        assert torch.equal(torch.sort(res.x[i].flatten()).values, torch.sort(x[i].flatten()).values)
        perm = _recover_perm(pixels[i, 0], out[i, 0])
        for ch in range(c):  # channels of a pixel move together
            assert torch.equal(out[i, ch], pixels[i, ch][perm])
        perms.add(tuple(perm.tolist()))
    # 16! or 36! permutations: independent draws essentially never repeat
    assert len(perms) == len(idx)
    assert res.test_transform is None


# -- Gaussian noise --------------------------------------------------------------------------------
def test_gaussian_matches_the_dataset_scalar_moments():
    # Clean pixels with very different means per pixel (a ramp times uniform noise), so a
    # per-pixel reading of "the dataset's mean" would show; the replacement must use one scalar.
    n, shape = 2000, (1, 8, 8)
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.0, 1.0, 64).reshape(shape)
    x = torch.rand(n, *shape, generator=g) * ramp
    y = torch.zeros(n, dtype=torch.long)
    mu, sigma = float(x.mean()), float(x.std(unbiased=False))
    res = corrupt_dataset(x, y, 2, "gaussian", 0.5, seed=0)
    sel = res.record.selected
    noise = res.x[sel]
    m = noise.numel()  # about 1000 * 64 = 64000 values
    # mean of m normals: sd sigma / sqrt(m) (~0.0011); std estimate: sd ~ sigma / sqrt(2m)
    assert abs(float(noise.mean()) - mu) < 5 * sigma / math.sqrt(m)
    assert abs(float(noise.std()) - sigma) < 5 * sigma / math.sqrt(2 * m)
    # per pixel (about 1000 values each, sd sigma / sqrt(1000) ~ 0.009) the mean is the scalar mu
    per_pixel = noise.mean(dim=0).flatten()
    n_sel = int(sel.sum())
    assert float((per_pixel - mu).abs().max()) < 5 * sigma / math.sqrt(n_sel)
    assert float(noise.min()) < 0.0  # unbounded noise, not pixels in [0, 1]
    assert torch.equal(res.x[~sel], x[~sel])


def test_gaussian_sample_matches_each_sample_own_moments():
    # 1x32x32 images, D = 1024, each with its own offset and scale. For D i.i.d. normals the
    # sample mean has sd sigma / 32 and the (population) std has sd about sigma / sqrt(2 D) =
    # sigma / 45.3; 6 sd keeps 200 samples x 2 checks far from a chance failure (~1e-9 each).
    n, d = 200, 1024
    g = torch.Generator().manual_seed(1)
    offset = 0.5 * torch.rand(n, 1, 1, 1, generator=g)
    scale = 0.05 + 0.45 * torch.rand(n, 1, 1, 1, generator=g)
    x = offset + scale * torch.rand(n, 1, 32, 32, generator=g)
    y = torch.zeros(n, dtype=torch.long)
    res = corrupt_dataset(x, y, 2, "gaussian_sample", 1.0, seed=0)
    assert bool(res.record.selected.all())
    flat_x, flat_out = x.reshape(n, -1), res.x.reshape(n, -1)
    mu, sigma = flat_x.mean(dim=1), flat_x.std(dim=1, unbiased=False)
    out_mu, out_sigma = flat_out.mean(dim=1), flat_out.std(dim=1, unbiased=False)
    assert bool(((out_mu - mu).abs() < 6 * sigma / math.sqrt(d)).all())
    assert bool(((out_sigma - sigma).abs() < 6 * sigma / math.sqrt(2 * d)).all())
    # the per-sample moments vary a lot (sigma from ~0.015 to ~0.14), so matching the dataset's
    # pooled moments instead would fail the checks above; and the values are fresh noise
    assert float(sigma.max() / sigma.min()) > 4
    assert not bool((res.x == x).any())


def test_gaussian_sample_uses_all_channels_together():
    # channel 0 all zeros, channel 1 all ones: the sample's mean is 0.5 and std 0.5 over both
    # channels, so each channel of the noise has mean ~0.5 (not 0 and 1 per channel).
    n = 50
    x = torch.cat([torch.zeros(n, 1, 16, 16), torch.ones(n, 1, 16, 16)], dim=1)
    y = torch.zeros(n, dtype=torch.long)
    out = corrupt_dataset(x, y, 2, "gaussian_sample", 1.0, seed=0).x
    # per channel, 50 * 256 = 12800 normals with sd 0.5: the mean has sd 0.0044
    assert abs(float(out[:, 0].mean()) - 0.5) < 0.03
    assert abs(float(out[:, 1].mean()) - 0.5) < 0.03
    assert abs(float(out.std()) - 0.5) < 0.02


# -- structured ------------------------------------------------------------------------------------
def test_structured_rotates_counter_clockwise_then_inverts():
    # x (as displayed, row 0 on top)      rotated 90 deg counter-clockwise
    #   0.1 0.2 0.3                          0.3 0.6 0.9
    #   0.4 0.5 0.6                          0.2 0.5 0.8
    #   0.7 0.8 0.9                          0.1 0.4 0.7
    # (the top-right 0.3 is now top-left), then inverted: 0.9 (the sample's max) minus each value.
    x = torch.tensor([[[[0.1, 0.2, 0.3],
                        [0.4, 0.5, 0.6],
                        [0.7, 0.8, 0.9]]]])
    expected = torch.tensor([[[[0.6, 0.3, 0.0],
                               [0.7, 0.4, 0.1],
                               [0.8, 0.5, 0.2]]]])
    res = corrupt_dataset(x, torch.tensor([0]), 2, "structured", 1.0, seed=0)
    torch.testing.assert_close(res.x, expected, atol=1e-6, rtol=0)


def test_structured_inverts_against_each_sample_max_over_all_channels():
    # Two samples, two channels, 2x2 pixels. Sample 0 has max 0.8 (in channel 1), sample 1 has
    # max 0.4 (in channel 0). Rotation CCW of [[a, b], [c, d]] is [[b, d], [a, c]].
    x = torch.tensor([
        [[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]],
        [[[0.4, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.2]]],
    ])
    # sample 0: rot ch0 [[.2,.4],[.1,.3]] -> 0.8 - = [[.6,.4],[.7,.5]]
    #           rot ch1 [[.6,.8],[.5,.7]] -> 0.8 - = [[.2,.0],[.3,.1]]
    # sample 1: rot ch0 [[.0,.0],[.4,.0]] -> 0.4 - = [[.4,.4],[.0,.4]]
    #           rot ch1 [[.0,.2],[.0,.0]] -> 0.4 - = [[.4,.2],[.4,.4]]
    expected = torch.tensor([
        [[[0.6, 0.4], [0.7, 0.5]], [[0.2, 0.0], [0.3, 0.1]]],
        [[[0.4, 0.4], [0.0, 0.4]], [[0.4, 0.2], [0.4, 0.4]]],
    ])
    res = corrupt_dataset(x, torch.tensor([0, 1]), 2, "structured", 1.0, seed=0)
    torch.testing.assert_close(res.x, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(1, 3, 4), (3, 8, 6), (16,), (2, 4, 4, 4)])
def test_structured_needs_square_images(shape):
    x = torch.rand(5, *shape)
    with pytest.raises(ConfigError, match="square images") as err:
        corrupt_dataset(x, torch.zeros(5, dtype=torch.long), 2, "structured", 0.5, seed=0)
    assert "\n" not in str(err.value)


# -- errors ----------------------------------------------------------------------------------------
def test_unknown_name_is_a_config_error():
    x, y = _data(10)
    with pytest.raises(ConfigError, match="unknown noise type 'label_flipp'") as err:
        corrupt_dataset(x, y, 10, "label_flipp", 0.1, seed=0)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["label_flip", "gaussian", "none"])
def test_p_outside_unit_interval_is_a_config_error(name, p):
    x, y = _data(10)
    with pytest.raises(ConfigError, match=r"outside \[0, 1\]") as err:
        corrupt_dataset(x, y, 10, name, p, seed=0)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", [t for t in ALL_TYPES if t != "shuffled_pixels"])
def test_apply_to_test_only_for_shuffled_pixels(name):
    x, y = _data(10)
    with pytest.raises(ConfigError, match="apply_to_test") as err:
        corrupt_dataset(x, y, 10, name, _p_for(name), seed=0, apply_to_test=True)
    assert "\n" not in str(err.value)


# -- determinism -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_TYPES)
def test_same_seed_same_record(name):
    x, y = _data(400)
    a = corrupt_dataset(x, y, 10, name, _p_for(name), seed=5)
    b = corrupt_dataset(x, y, 10, name, _p_for(name), seed=5)
    assert a.record.hash == b.record.hash
    assert a.record.inputs_hash == b.record.inputs_hash
    for field in ("selected", "corrupted", "true_labels", "train_labels"):
        assert torch.equal(getattr(a.record, field), getattr(b.record, field))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


@pytest.mark.parametrize("name", FREE_P_TYPES)
def test_different_seed_different_selection(name):
    x, y = _data(400)
    a = corrupt_dataset(x, y, 10, name, 0.5, seed=5).record
    b = corrupt_dataset(x, y, 10, name, 0.5, seed=6).record
    assert not torch.equal(a.selected, b.selected)
    assert a.hash != b.hash


@pytest.mark.parametrize("seed", [0, 11])
def test_selection_is_the_same_for_every_type(seed):
    x, y = _data(400)
    ref = corrupt_dataset(x, y, 10, "label_flip", 0.3, seed).record.selected
    for name in FREE_P_TYPES:
        sel = corrupt_dataset(x, y, 10, name, 0.3, seed).record.selected
        assert torch.equal(sel, ref), name
    # and it is the very first draw of a generator seeded with noise.seed alone
    expected = torch.rand(400, generator=torch.Generator().manual_seed(seed)) < 0.3
    assert torch.equal(ref, expected)


def test_hash_depends_on_the_inputs_after_corruption():
    x, y = _data(400)
    a = corrupt_dataset(x, y, 10, "gaussian", 0.5, seed=0).record
    b = corrupt_dataset(x + 0.01, y, 10, "gaussian", 0.5, seed=0).record
    assert torch.equal(a.selected, b.selected)
    assert a.inputs_hash != b.inputs_hash and a.hash != b.hash


# -- the record ------------------------------------------------------------------------------------
def _record(name: str = "label_uniform", p: float = 0.4) -> CorruptionRecord:
    x, y = _data(300, num_classes=4)
    return corrupt_dataset(x, y, 4, name, p, seed=2).record


def _assert_same_record(a: CorruptionRecord, b: CorruptionRecord) -> None:
    assert (a.name, a.p, a.seed, a.inputs_hash, a.hash) == (b.name, b.p, b.seed, b.inputs_hash,
                                                            b.hash)
    for field in ("selected", "corrupted", "true_labels", "train_labels"):
        ta, tb = getattr(a, field), getattr(b, field)
        assert ta.dtype == tb.dtype, field
        assert torch.equal(ta, tb), field
    assert a.summary() == b.summary()


@pytest.mark.parametrize("name", ["label_uniform", "shuffled_pixels", "random_labels"])
def test_record_round_trips(tmp_path, name):
    rec = _record(name, _p_for(name) if name == "random_labels" else 0.4)
    path = rec.save(tmp_path / "sub" / "corruption.npz")
    assert path == tmp_path / "sub" / "corruption.npz" and path.exists()
    loaded = CorruptionRecord.load(path)
    _assert_same_record(rec, loaded)
    assert type(loaded.name) is str and type(loaded.p) is float and type(loaded.seed) is int
    assert loaded.hash == loaded._content_hash()
    # save leaves exactly the record behind, no .tmp file
    assert sorted(p.name for p in path.parent.iterdir()) == ["corruption.npz"]
    # saving again over an existing record works the same
    rec.save(path)
    _assert_same_record(rec, CorruptionRecord.load(path))
    assert sorted(p.name for p in path.parent.iterdir()) == ["corruption.npz"]


def test_record_summary():
    rec = _record("label_uniform", 0.4)
    s = rec.summary()
    assert s == {
        "noise": "label_uniform",
        "p": 0.4,
        "seed": 2,
        "n_train": 300,
        "n_selected": int(rec.selected.sum()),
        "n_corrupted": int(rec.corrupted.sum()),
        "fraction_corrupted": int(rec.corrupted.sum()) / 300,
        "hash": rec.hash,
    }
    assert rec.n == 300 and rec.n_corrupted == s["n_corrupted"]


@pytest.mark.parametrize("field", ["train_labels", "true_labels", "selected", "corrupted"])
def test_tampered_record_fails_to_load(tmp_path, field):
    rec = _record()
    path = rec.save(tmp_path / "corruption.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k].copy() for k in z.files}
    if arrays[field].dtype == np.bool_:
        arrays[field][0] = ~arrays[field][0]
    else:
        arrays[field][0] = (arrays[field][0] + 1) % 4
    assert str(arrays["hash"]) == rec.hash  # the old hash stays
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ConfigError, match="does not match its hash") as err:
        CorruptionRecord.load(path)
    assert "\n" not in str(err.value)


def test_record_with_mismatched_lengths_is_rejected():
    n = 5
    with pytest.raises(ConfigError, match="selected"):
        CorruptionRecord(name="none", p=0.0, seed=0, selected=torch.zeros(n - 1, dtype=torch.bool),
                         corrupted=torch.zeros(n, dtype=torch.bool),
                         true_labels=torch.zeros(n, dtype=torch.long),
                         train_labels=torch.zeros(n, dtype=torch.long), inputs_hash="x")


# -- the DataModule corrupts the training split only ----------------------------------------------
SOURCE_OPTIONS = {"n_train": 300, "n_test": 60, "num_classes": 3, "shape": (1, 4, 4)}


def _datamodule(noise: dict, **extra) -> DataModule:
    dm = DataModule(source="synthetic", shape=(1, 4, 4), num_classes=3,
                    source_options=dict(SOURCE_OPTIONS), batch_size=32, normalize=False,
                    noise=noise, **extra)
    dm.setup("fit")
    return dm


def _is_raw_row(rows: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """For each row of ``rows``, whether it equals some row of ``raw`` exactly."""
    a, b = rows.reshape(len(rows), -1), raw.reshape(len(raw), -1)
    return (a[:, None, :] == b[None, :, :]).all(dim=2).any(dim=1)


def test_datamodule_leaves_the_test_split_clean():
    raw = load_source("synthetic", **SOURCE_OPTIONS)
    dm = _datamodule({"name": "gaussian", "p": 1.0, "seed": 0})
    assert torch.equal(dm.splits["test"].tensors["x"], raw.x_test)
    assert torch.equal(dm.splits["test"].tensors["y"], raw.y_test)
    # while every training input was replaced by noise
    train = dm.splits["train"].tensors
    assert bool(dm.record.selected.all()) and dm.record.n == 300
    assert not bool(_is_raw_row(train["x"], raw.x_train).any())
    assert torch.equal(train["y"], raw.y_train)
    assert torch.equal(train["corrupted"], dm.record.corrupted)


def test_datamodule_leaves_the_validation_split_clean():
    raw = load_source("synthetic", **SOURCE_OPTIONS)
    dm = _datamodule({"name": "gaussian", "p": 1.0, "seed": 0}, val_size=50)
    val, train = dm.splits["val"].tensors, dm.splits["train"].tensors
    assert len(val["x"]) == 50 and len(train["x"]) == 250 and dm.record.n == 250
    assert torch.equal(dm.splits["test"].tensors["x"], raw.x_test)
    # every validation row is one of the raw training rows, with its own label
    flat_raw = raw.x_train.reshape(300, -1)
    for xv, yv in zip(val["x"].reshape(50, -1), val["y"], strict=True):
        match = (flat_raw == xv).all(dim=1)
        assert bool(match.any())
        assert bool((raw.y_train[match] == yv).all())
    assert not bool(_is_raw_row(train["x"], raw.x_train).any())


def test_datamodule_shuffled_pixels_apply_to_test_permutes_test_and_val():
    raw = load_source("synthetic", **SOURCE_OPTIONS)
    noise = {"name": "shuffled_pixels", "p": 1.0, "seed": 0, "apply_to_test": True}
    dm = _datamodule(noise, val_size=50)
    # The permutation depends only on the seed and the image size, not on the values: recover it
    # from the same corruption of a batch of the same size.
    probe = corrupt_dataset(torch.zeros(250, 1, 4, 4), torch.zeros(250, dtype=torch.long), 3,
                            "shuffled_pixels", 1.0, seed=0, apply_to_test=True).test_transform
    ramp = _increasing_images(1, (1, 4, 4))
    perm = _recover_perm(ramp[0], probe(ramp)[0])

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), 1, -1)[..., perm].reshape(x.shape)

    assert torch.equal(dm.splits["test"].tensors["x"], shuffle(raw.x_test))
    assert torch.equal(dm.splits["test"].tensors["y"], raw.y_test)
    val_x = dm.splits["val"].tensors["x"]
    assert not bool(_is_raw_row(val_x, raw.x_train).any())
    unshuffled = torch.empty_like(val_x.reshape(50, -1))
    unshuffled[:, perm] = val_x.reshape(50, -1)
    assert bool(_is_raw_row(unshuffled, raw.x_train).all())
    # the training images went through the same permutation
    assert bool(_is_raw_row(dm.splits["train"].tensors["x"], shuffle(raw.x_train)).all())


def test_random_pixels_in_chunks_still_permutes_every_image(monkeypatch):
    from memorization.noise.pixels import RandomPixels

    monkeypatch.setattr(RandomPixels, "chunk", 7)  # 30 selected images span 5 chunks
    n, shape = 30, (1, 4, 4)
    x = torch.arange(n * 16, dtype=torch.float32).reshape(n, *shape)
    y = torch.zeros(n, dtype=torch.long)
    res = corrupt_dataset(x, y, 2, "random_pixels", 1.0, seed=0)
    got = res.x.reshape(n, -1)
    assert torch.equal(got.sort(dim=1).values, x.reshape(n, -1))
    perms = {tuple((row - row.min()).long().tolist()) for row in got}
    assert len(perms) == n
