"""On-device augmentation: each transform on hand-made images, and its place in the DataModule."""

from __future__ import annotations

import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.data import DataModule
from memorization.data.augment import (
    AugmentConfig,
    augment,
    random_crop,
    random_hflip,
    random_rotation,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_crop_takes_every_window_of_the_padded_image():
    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    # padded by 1 with fill -5:   -5 -5 -5 -5 / -5 1 2 -5 / -5 3 4 -5 / -5 -5 -5 -5
    padded = torch.full((4, 4), -5.0)
    padded[1:3, 1:3] = img[0, 0]
    windows = {tuple(padded[i:i + 2, j:j + 2].flatten().tolist())
               for i in range(3) for j in range(3)}
    out = random_crop(img.expand(300, 1, 2, 2), 1, torch.tensor([-5.0]), gen())
    seen = {tuple(o.flatten().tolist()) for o in out}
    assert seen == windows  # all 9 offsets drawn, nothing else


def test_random_crop_fills_per_channel():
    x = torch.zeros(50, 2, 3, 3)
    out = random_crop(x, 2, torch.tensor([7.0, -1.0]), gen())
    assert set(out[:, 0].unique().tolist()) <= {0.0, 7.0}
    assert set(out[:, 1].unique().tolist()) <= {0.0, -1.0}
    assert (out[:, 0] == 7).any()  # some crop reached into the padding


def test_hflip_mirrors_about_half():
    x = torch.arange(6.0).reshape(1, 1, 2, 3).expand(400, 1, 2, 3)
    out = random_hflip(x, gen())
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert 150 < int(mirrored.sum()) < 250


def test_rotation_keeps_the_centre_and_fills_the_corners():
    x = torch.full((20, 1, 5, 5), 3.0)
    fill = torch.tensor([-2.0])
    out = random_rotation(x, 90.0, fill, gen())
    assert torch.allclose(out[:, 0, 2, 2], torch.full((20,), 3.0))  # the centre does not move
    # angles near +-45 degrees rotate the corner pixels' sources outside the image
    assert (out[:, 0, 0, 0] < 3.0 - 1e-3).any()
    assert out.min() >= -2.0 - 1e-5 and out.max() <= 3.0 + 1e-5  # bilinear: between fill and 3
    still = random_rotation(torch.rand(4, 3, 6, 6, generator=gen(1)), 0.0, fill, gen())
    assert still.shape == (4, 3, 6, 6)


def test_config_checks():
    with pytest.raises(ConfigError, match="crop_padding"):
        AugmentConfig(crop_padding=-1)
    with pytest.raises(ConfigError, match="rotation"):
        AugmentConfig(rotation=200)
    assert not AugmentConfig().enabled and AugmentConfig(hflip=True).enabled
    with pytest.raises(ConfigError, match="images"):
        DataModule(source="synthetic", shape=(10,), augment={"hflip": True})


def test_same_seed_same_batches_and_off_means_identity():
    x = torch.rand(8, 3, 6, 6, generator=gen(2))
    cfg = AugmentConfig(crop_padding=2, hflip=True, rotation=15)
    a = augment(x, cfg, torch.zeros(3), gen(5))
    b = augment(x, cfg, torch.zeros(3), gen(5))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(augment(x, AugmentConfig(), torch.zeros(3), gen(5)), x)


SYN = dict(source="synthetic", shape=(1, 6, 6), num_classes=3, batch_size=8,
           source_options={"n_train": 24, "n_test": 9, "num_classes": 3, "shape": (1, 6, 6)})


def _batch(dm, training: bool, epoch: int = 0):
    dm.trainer = type("T", (), {"training": training, "current_epoch": epoch})()
    batch = dm.splits["train"][torch.arange(8)]
    return batch, dm.on_after_batch_transfer(batch, 0)


def test_datamodule_augments_training_batches_only():
    dm = DataModule(**SYN, augment={"crop_padding": 2, "hflip": True, "seed": 3})
    dm.setup("fit")
    raw, out = _batch(dm, training=True)
    assert not torch.equal(raw["x"], out["x"]) and torch.equal(raw["y"], out["y"])
    # padding is raw pixel 0 in input units: -mean/std
    black = float(-dm.mean[0] / dm.std[0])
    assert torch.isclose(out["x"], torch.tensor(black), atol=1e-5).any()
    raw, out = _batch(dm, training=False)
    assert torch.equal(raw["x"], out["x"])  # evaluation batches are left alone

    def first_batch(epoch):  # a fresh run's first batch of the epoch
        fresh = DataModule(**SYN, augment={"crop_padding": 2, "hflip": True, "seed": 3})
        fresh.setup("fit")
        return _batch(fresh, True, epoch)[1]["x"]

    # the same seed and epoch give the same batch (also after a resume); another epoch another
    assert torch.equal(first_batch(0), first_batch(0))
    assert not torch.equal(first_batch(1), first_batch(0))
