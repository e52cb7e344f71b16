"""MNIST-1D from the optional generator: shapes, determinism, global random state untouched."""

from __future__ import annotations

import builtins
import random

import numpy as np
import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.data import DataModule, load_source

pytest.importorskip("mnist1d")


def test_generates_the_published_split_shapes():
    raw = load_source("mnist1d", num_samples=200)
    assert raw.x_train.shape == (160, 1, 40) and raw.x_test.shape == (40, 1, 40)
    assert raw.x_train.dtype == torch.float32 and raw.y_train.dtype == torch.int64
    assert set(raw.y_train.tolist()) <= set(range(10)) and raw.num_classes == 10
    # the generator standardizes the whole dataset
    both = torch.cat([raw.x_train, raw.x_test])
    assert abs(float(both.mean())) < 1e-4 and abs(float(both.std()) - 1) < 1e-2


def test_same_seed_same_data_and_global_rng_untouched():
    np.random.seed(7)
    random.seed(7)
    a = load_source("mnist1d", num_samples=100, seed=3)
    after = (np.random.rand(), random.random())
    np.random.seed(7)
    random.seed(7)
    assert after == (np.random.rand(), random.random())  # the generator's seeding was undone
    b = load_source("mnist1d", num_samples=100, seed=3)
    c = load_source("mnist1d", num_samples=100, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)


def test_datamodule_and_bad_options():
    dm = DataModule(source="mnist1d", shape=(1, 40), num_classes=10,
                    source_options={"num_samples": 100},
                    noise={"name": "label_flip", "p": 0.5, "seed": 0})
    dm.setup("fit")
    assert dm.splits["train"].tensors["x"].shape == (80, 1, 40)
    assert int(dm.record.corrupted.sum()) == 40
    with pytest.raises(ConfigError, match="train_split"):
        load_source("mnist1d", train_split=1.0)


def test_missing_package_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_mnist1d(name, *args, **kwargs):
        if name.startswith("mnist1d"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mnist1d)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[mnist1d\]'"):
        load_source("mnist1d")
