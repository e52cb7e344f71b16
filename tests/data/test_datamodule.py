"""Data: the digits source, the DataModule pipeline and the self-sharding EpochBatchSampler."""

from __future__ import annotations

import math

import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.data import DataModule, EpochBatchSampler, load_source

SYN = dict(source="synthetic", shape=(1, 4, 4), num_classes=3)  # 96 train / 48 test by default


def make_dm(noise: dict | None = None, **kw) -> DataModule:
    dm = DataModule(noise=noise, **{**SYN, **kw})
    dm.setup("fit")
    return dm


def rows(x: torch.Tensor) -> list[bytes]:
    """Each sample as bytes, to compare sets of samples exactly."""
    return [r.numpy().tobytes() for r in x.reshape(x.shape[0], -1)]


# -- digits source ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_source("digits")


def test_digits_sizes_shape_dtype_range(digits):
    assert digits.x_train.shape == (1438, 1, 8, 8)
    assert digits.x_test.shape == (359, 1, 8, 8)
    assert digits.shape == (1, 8, 8)
    assert digits.num_classes == 10
    for x in (digits.x_train, digits.x_test):
        assert x.dtype == torch.float32
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # pixels 0..16 scaled by 1/16
    for y in (digits.y_train, digits.y_test):
        assert y.dtype == torch.int64
        assert sorted(y.unique().tolist()) == list(range(10))


def test_digits_split_is_a_partition_of_sklearn_digits(digits):
    from sklearn.datasets import load_digits

    all_x = torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    train, test = rows(digits.x_train), rows(digits.x_test)
    assert sorted(train + test) == sorted(rows(all_x))  # nothing lost, nothing added
    # label counts add up to sklearn's
    counts = torch.bincount(torch.cat([digits.y_train, digits.y_test]), minlength=10)
    assert counts.tolist() == torch.bincount(torch.as_tensor(load_digits().target)).tolist()


def test_digits_split_fixed_and_independent_of_global_seed(digits):
    torch.manual_seed(123)
    a = load_source("digits")
    torch.manual_seed(456)
    _ = torch.rand(100)
    b = load_source("digits")
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, k), getattr(b, k))
        assert torch.equal(getattr(a, k), getattr(digits, k))


def test_digits_options():
    other = load_source("digits", split_seed=1)
    base = load_source("digits")
    assert other.x_test.shape == base.x_test.shape
    assert not torch.equal(other.y_test, base.y_test)
    half = load_source("digits", test_fraction=0.5)
    assert len(half.y_test) == round(0.5 * 1797)
    assert len(half.y_train) + len(half.y_test) == 1797
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError):
            load_source("digits", test_fraction=bad)


def test_unknown_source_raises():
    with pytest.raises(ConfigError, match="unknown data source"):
        load_source("no_such_source")


# -- DataModule: splits ----------------------------------------------------------------------------
def test_splits_and_keys():
    dm = make_dm(noise={"name": "label_flip", "p": 0.5, "seed": 0}, val_size=16)
    assert set(dm.splits) == {"train", "val", "test"}
    train = dm.splits["train"].tensors
    assert set(train) == {"x", "y", "y_true", "corrupted", "index"}
    assert set(dm.splits["val"].tensors) == {"x", "y"}
    assert set(dm.splits["test"].tensors) == {"x", "y"}
    assert len(dm.splits["train"]) == 80 and len(dm.splits["val"]) == 16
    assert len(dm.splits["test"]) == 48
    assert train["x"].shape == (80, 1, 4, 4)
    assert torch.equal(train["index"], torch.arange(80))
    assert train["corrupted"].dtype == torch.bool
    # label_flip: corrupted exactly where the training label differs from the true one
    assert torch.equal(train["corrupted"], train["y"] != train["y_true"])
    assert 0 < int(train["corrupted"].sum()) < 80
    assert torch.equal(train["y_true"], dm.record.true_labels)
    assert torch.equal(train["y"], dm.record.train_labels)


def test_label_noise_leaves_inputs_and_eval_splits_alone():
    clean = make_dm(noise=None)
    noisy = make_dm(noise={"name": "label_flip", "p": 0.5, "seed": 0})
    assert torch.equal(clean.splits["train"].tensors["x"], noisy.splits["train"].tensors["x"])
    assert torch.equal(clean.splits["train"].tensors["y"], noisy.splits["train"].tensors["y_true"])
    assert not torch.equal(clean.splits["train"].tensors["y"], noisy.splits["train"].tensors["y"])
    for k in ("x", "y"):
        assert torch.equal(clean.splits["test"].tensors[k], noisy.splits["test"].tensors[k])


@pytest.mark.parametrize(("eval_train", "val_size", "expected"), [
    (True, 0, ["train", "test"]),
    (True, 10, ["train", "val", "test"]),
    (False, 10, ["val", "test"]),
    (False, 0, ["test"]),
])
def test_eval_splits_order_matches_val_dataloaders(eval_train, val_size, expected):
    dm = make_dm(eval_train=eval_train, val_size=val_size, eval_batch_size=1000)
    assert dm.eval_splits == expected
    loaders = dm.val_dataloader()
    assert len(loaders) == len(expected)
    for name, loader in zip(expected, loaders, strict=True):
        (batch,) = list(loader)  # one batch: eval_batch_size exceeds every split
        assert torch.equal(batch["x"], dm.splits[name].tensors["x"])


# -- DataModule: normalization ---------------------------------------------------------------------
MULTI = dict(shape=(3, 4, 4), source_options={"shape": (3, 4, 4), "n_train": 200})


@pytest.mark.parametrize("noise", [
    None,
    {"name": "label_flip", "p": 0.5, "seed": 0},
    {"name": "gaussian", "p": 0.5, "seed": 0},
    {"name": "random_pixels", "p": 1.0, "seed": 1},
])
def test_normalization_uses_clean_training_statistics(noise):
    ref = make_dm(noise=None, **MULTI)
    dm = make_dm(noise=noise, **MULTI)
    assert dm.mean.shape == (3,) and dm.std.shape == (3,)
    assert torch.allclose(dm.mean, ref.mean) and torch.allclose(dm.std, ref.std)
    # the clean training inputs, standardized with those statistics: zero mean, unit std
    raw = load_source("synthetic", **MULTI["source_options"]).x_train
    z = (raw - dm.mean.reshape(1, 3, 1, 1)) / dm.std.reshape(1, 3, 1, 1)
    per_channel = z.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1), torch.ones(3), atol=1e-5)
    # test inputs use the same statistics
    raw_test = load_source("synthetic", **MULTI["source_options"]).x_test
    z_test = (raw_test - dm.mean.reshape(1, 3, 1, 1)) / dm.std.reshape(1, 3, 1, 1)
    assert torch.allclose(dm.splits["test"].tensors["x"], z_test, atol=1e-6)


def test_normalized_clean_train_split_is_standard_per_channel():
    dm = make_dm(noise=None, val_size=40, **MULTI)  # statistics of the part kept for training
    x = dm.splits["train"].tensors["x"].transpose(0, 1).reshape(3, -1)
    assert torch.allclose(x.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(1), torch.ones(3), atol=1e-5)
    raw_means = load_source("synthetic", **MULTI["source_options"]).x_train.mean(dim=(0, 2, 3))
    assert not torch.allclose(dm.mean, torch.zeros(3))
    assert torch.allclose(dm.mean, raw_means, atol=0.05)  # close to, not equal to, all-200 mean


def test_normalize_false_keeps_raw_pixels():
    dm = make_dm(normalize=False)
    raw = load_source("synthetic")
    assert torch.equal(dm.splits["train"].tensors["x"], raw.x_train)
    assert torch.equal(dm.splits["test"].tensors["x"], raw.x_test)
    assert torch.equal(dm.mean, torch.zeros(1)) and torch.equal(dm.std, torch.ones(1))


# -- DataModule: validation hold-out ---------------------------------------------------------------
@pytest.mark.parametrize(("val_size", "n_val"), [(10, 10), (1, 1), (95, 95), (0.25, 24),
                                                 (0.5, 48), (0, 0)])
def test_val_size_count_and_fraction(val_size, n_val):
    dm = make_dm(val_size=val_size, normalize=False)
    assert len(dm.splits["train"]) == 96 - n_val
    assert ("val" in dm.splits) == (n_val > 0)
    if n_val:
        assert len(dm.splits["val"]) == n_val
        # a partition of the source's training split: disjoint, nothing lost
        raw = load_source("synthetic")
        train, val = rows(dm.splits["train"].tensors["x"]), rows(dm.splits["val"].tensors["x"])
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(rows(raw.x_train))


def test_val_split_depends_on_val_seed_only():
    a = make_dm(val_size=10, val_seed=0, normalize=False)
    torch.manual_seed(99)
    b = make_dm(val_size=10, val_seed=0, normalize=False)
    c = make_dm(val_size=10, val_seed=1, normalize=False)
    assert torch.equal(a.splits["val"].tensors["x"], b.splits["val"].tensors["x"])
    assert not torch.equal(a.splits["val"].tensors["x"], c.splits["val"].tensors["x"])


@pytest.mark.parametrize("val_size", [96, 200, -1, 0.999999])
def test_bad_val_size_raises(val_size):
    with pytest.raises(ConfigError, match="val_size"):
        make_dm(val_size=val_size)


def test_negative_fractional_val_size_raises():
    with pytest.raises(ConfigError):
        make_dm(val_size=-0.5)


def test_tiny_val_fraction_is_consistent():
    dm = DataModule(**SYN, val_size=0.001)  # round(0.096) == 0
    try:
        dm.setup("fit")
    except ConfigError:
        return  # rejecting it up front is fine too
    assert len(dm.val_dataloader()) == len(dm.eval_splits)


# -- DataModule: config checks and idempotence -----------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(shape=(1, 8, 8)),
    dict(shape=(4, 4)),
    dict(num_classes=4),
    dict(source_options={"num_classes": 4}),
])
def test_shape_or_classes_mismatch_raises(kw):
    with pytest.raises(ConfigError, match="data.shape"):
        make_dm(**kw)


def test_source_options_reach_the_source():
    dm = make_dm(shape=[2, 3, 3], num_classes=5,
                 source_options={"shape": [2, 3, 3], "num_classes": 5, "n_train": 50})
    assert dm.splits["train"].tensors["x"].shape == (50, 2, 3, 3)
    assert int(dm.splits["train"].tensors["y"].max()) == 4


def test_unknown_source_in_datamodule_raises():
    with pytest.raises(ConfigError):
        DataModule(source="nope", shape=(1, 4, 4), num_classes=3).setup("fit")


def test_setup_twice_is_idempotent():
    dm = make_dm(noise={"name": "label_flip", "p": 0.5, "seed": 0}, val_size=5)
    splits = dict(dm.splits)
    record, mean = dm.record, dm.mean
    dm.setup("validate")
    dm.setup("test")
    assert dm.record is record and dm.mean is mean
    for k, v in splits.items():
        assert dm.splits[k] is v


def test_loader_before_setup_raises():
    with pytest.raises(RuntimeError, match="setup"):
        DataModule(**SYN).train_dataloader()


def test_checkpoint_state_checks_corruption_hash():
    a = make_dm(noise={"name": "label_flip", "p": 0.5, "seed": 0})
    b = make_dm(noise={"name": "label_flip", "p": 0.5, "seed": 1})
    state = a.state_dict()
    assert state == {"corruption_hash": a.record.hash}
    make_dm(noise={"name": "label_flip", "p": 0.5, "seed": 0}).load_state_dict(state)  # same: ok
    with pytest.raises(ConfigError, match="different corruption"):
        b.load_state_dict(state)


# -- DataModule: loaders ---------------------------------------------------------------------------
def epoch_order(loader) -> list[torch.Tensor]:
    return list(loader)


def test_train_loader_covers_every_index_once_per_epoch():
    dm = make_dm(noise={"name": "label_flip", "p": 0.5, "seed": 0}, batch_size=10)  # 96 % 10 != 0
    loader = dm.train_dataloader()
    batches = epoch_order(loader)
    assert len(batches) == len(loader) == 10
    assert [len(b["index"]) for b in batches] == [10] * 9 + [6]
    for b in batches:
        assert isinstance(b, dict)
        assert set(b) == {"x", "y", "y_true", "corrupted", "index"}
        # a batch is the dataset indexed by one index tensor
        for k, v in dm.splits["train"].tensors.items():
            assert torch.equal(b[k], v[b["index"]])
    order = torch.cat([b["index"] for b in batches])
    assert sorted(order.tolist()) == list(range(96))
    assert not torch.equal(order, torch.arange(96))  # shuffled


def test_train_loader_order_per_epoch_and_seed():
    def order(seed, epoch):
        loader = make_dm(batch_size=10, shuffle_seed=seed).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([b["index"] for b in loader])

    e0, e1 = order(0, 0), order(0, 1)
    assert sorted(e1.tolist()) == list(range(96))
    assert not torch.equal(e0, e1)
    torch.manual_seed(1234)  # the global seed plays no part
    assert torch.equal(order(0, 1), e1)
    assert torch.equal(order(0, 0), e0)
    assert not torch.equal(order(5, 0), e0)
    # the same loader replays its epoch when iterated again
    loader = make_dm(batch_size=10).train_dataloader()
    first = torch.cat([b["index"] for b in loader])
    assert torch.equal(first, torch.cat([b["index"] for b in loader]))


def test_eval_loaders_are_sequential_and_complete():
    dm = make_dm(val_size=20, eval_batch_size=7)
    for name, loader in zip(dm.eval_splits, dm.val_dataloader(), strict=True):
        ds = dm.splits[name].tensors
        batches = list(loader)
        n = len(ds["y"])
        assert len(batches) == len(loader) == math.ceil(n / 7)
        for k, v in ds.items():
            assert torch.equal(torch.cat([b[k] for b in batches]), v)
    test_batches = list(dm.test_dataloader())
    assert torch.equal(torch.cat([b["y"] for b in test_batches]), dm.splits["test"].tensors["y"])
    assert torch.equal(torch.cat([b["index"] for b in dm.val_dataloader()[0]]), torch.arange(76))


# -- EpochBatchSampler -----------------------------------------------------------------------------
def as_lists(sampler) -> list[list[int]]:
    return [b.tolist() for b in sampler]


def test_sampler_single_process():
    s = EpochBatchSampler(10, 3, shuffle=True, seed=0)
    batches = as_lists(s)
    assert [len(b) for b in batches] == [3, 3, 3, 1] and len(s) == 4
    assert sorted(sum(batches, [])) == list(range(10))
    s = EpochBatchSampler(10, 3, shuffle=True, seed=0, drop_last=True)
    assert [len(b) for b in as_lists(s)] == [3, 3, 3] and len(s) == 3
    s = EpochBatchSampler(10, 4, shuffle=False)
    assert as_lists(s) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(s) == 3


@pytest.fixture
def as_rank(monkeypatch):
    """Pretend to be ``rank`` of ``world`` processes (no real process group)."""

    def set_rank(rank: int, world: int = 2):
        monkeypatch.setattr(EpochBatchSampler, "_rank_world", staticmethod(lambda: (rank, world)))

    return set_rank


def per_rank(as_rank, world: int, **kw) -> list[list[list[int]]]:
    out = []
    for rank in range(world):
        as_rank(rank, world)
        s = EpochBatchSampler(**kw)
        batches = as_lists(s)
        assert len(s) == len(batches)
        out.append(batches)
    return out


@pytest.mark.parametrize("n", [10, 11, 7, 1])
@pytest.mark.parametrize("batch_size", [1, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_ddp_train_mode(as_rank, n, batch_size, drop_last):
    r0, r1 = per_rank(as_rank, 2, n=n, batch_size=batch_size, shuffle=True, seed=3,
                      drop_last=drop_last)
    assert len(r0) == len(r1)  # every rank runs the same number of steps
    assert [len(b) for b in r0] == [len(b) for b in r1]
    if drop_last:
        assert all(len(b) == batch_size for b in r0 + r1)
        return
    flat = sum(r0 + r1, [])
    assert set(flat) == set(range(n))  # together they cover every index
    pad = 2 * math.ceil(n / 2) - n
    assert len(flat) == n + pad  # padding only by repeating an index, at most world - 1


@pytest.mark.parametrize("n", [10, 11, 7, 2])
@pytest.mark.parametrize("batch_size", [1, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_ddp_eval_mode(as_rank, n, batch_size, drop_last):
    r0, r1 = per_rank(as_rank, 2, n=n, batch_size=batch_size, shuffle=False, drop_last=drop_last)
    a, b = sum(r0, []), sum(r1, [])
    assert a == sorted(a) and b == sorted(b)  # sequential
    assert not set(a) & set(b)
    if not drop_last:
        assert sorted(a + b) == list(range(n))  # every sample exactly once, no padding


def test_sampler_ddp_ranks_share_one_permutation_per_epoch(as_rank):
    def epoch(rank, e):
        as_rank(rank)
        s = EpochBatchSampler(20, 4, shuffle=True, seed=0)
        s.set_epoch(e)
        return sum(as_lists(s), [])

    assert sorted(epoch(0, 0) + epoch(1, 0)) == list(range(20))
    assert sorted(epoch(0, 1) + epoch(1, 1)) == list(range(20))
    assert epoch(0, 0) != epoch(0, 1)


def test_sampler_eval_rank_without_samples_yields_nothing(as_rank):
    as_rank(1, 2)
    s = EpochBatchSampler(1, 4, shuffle=False)
    assert len(s) == len(list(s)) == 0


def test_sampler_train_padding_when_world_exceeds_n(as_rank):
    ranks = per_rank(as_rank, 3, n=1, batch_size=4, shuffle=True, seed=0)
    assert [sum(len(b) for b in r) for r in ranks] == [1, 1, 1]


def test_sampler_without_seed_leaves_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    EpochBatchSampler(10, 3, shuffle=True, seed=None)
    assert torch.equal(torch.rand(3), expected)
