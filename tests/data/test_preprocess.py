"""Zhang et al.'s CIFAR preprocessing: center crop and per-image whitening."""

from __future__ import annotations

import math

import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.data import DataModule
from memorization.data.preprocess import center_crop, per_image_whitening


def test_center_crop_by_hand():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # rows 1-2, columns 1-2 of [[0..3], [4..7], [8..11], [12..15]]
    assert center_crop(x, 2).flatten().tolist() == [5.0, 6.0, 9.0, 10.0]
    assert center_crop(torch.zeros(2, 3, 32, 32), 28).shape == (2, 3, 28, 28)


def test_per_image_whitening_moments_and_constant_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 4, 4, generator=g) * torch.arange(1, 6).reshape(5, 1, 1, 1)
    w = per_image_whitening(x).reshape(5, -1)
    assert torch.allclose(w.mean(1), torch.zeros(5), atol=1e-6)
    assert torch.allclose(w.std(1, unbiased=False), torch.ones(5), atol=1e-5)
    # a constant image: std 0 is replaced by 1/sqrt(48), so it maps to zeros, not NaN
    flat = torch.full((1, 3, 4, 4), 0.7)
    assert torch.allclose(per_image_whitening(flat), torch.zeros_like(flat), atol=1e-5)
    # (v - mean) / max(std, 1/sqrt(n)) worked by hand. [1, 0, 0, 0]: mean 1/4, population std
    # sqrt(3)/4 = 0.433 < 1/sqrt(4) = 0.5, so the adjusted std 0.5 applies: (1 - 1/4) / 0.5 = 1.5
    y = torch.zeros(1, 1, 1, 4)
    y[..., 0] = 1.0
    assert per_image_whitening(y).flatten()[0].item() == pytest.approx(1.5)
    # [2, 0, 0, 0, 0, 0, 0, 0, 0]: mean 2/9, std sqrt(32)/9 = 0.629 > 1/3: (2 - 2/9) / 0.629
    z = torch.zeros(1, 1, 3, 3)
    z[0, 0, 0, 0] = 2.0
    want = (2 - 2 / 9) / (math.sqrt(32) / 9)
    assert per_image_whitening(z).flatten()[0].item() == pytest.approx(want, rel=1e-5)


def test_datamodule_applies_the_recipe():
    dm = DataModule(source="synthetic", shape=(3, 4, 4), num_classes=3, normalize=False,
                    center_crop=4, per_image_whitening=True,
                    source_options={"n_train": 30, "n_test": 9, "num_classes": 3,
                                    "shape": (3, 6, 6)},
                    noise={"name": "gaussian", "p": 0.5, "seed": 0})
    dm.setup("fit")
    for split in ("train", "test"):
        x = dm.splits[split].tensors["x"].reshape(-1, 48)
        assert x.shape[1] == 48
        assert torch.allclose(x.mean(1), torch.zeros(len(x)), atol=1e-5)
    with pytest.raises(ConfigError, match="replaces data.normalize"):
        DataModule(source="synthetic", shape=(3, 4, 4), num_classes=3, center_crop=4,
                   per_image_whitening=True,
                   source_options={"num_classes": 3, "shape": (3, 6, 6)}).setup("fit")
    with pytest.raises(ConfigError, match="center_crop=8 does not fit"):
        DataModule(source="synthetic", shape=(3, 8, 8), num_classes=3, center_crop=8,
                   source_options={"num_classes": 3, "shape": (3, 6, 6)}).setup("fit")
