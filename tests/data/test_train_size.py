"""data.train_size: a seeded subset of the training split, drawn before corruption."""

from __future__ import annotations

import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.data import DataModule

SYN = dict(source="synthetic", shape=(1, 4, 4), num_classes=3, normalize=False)  # 96 train


def make_dm(noise: dict | None = None, **kw) -> DataModule:
    dm = DataModule(noise=noise, **{**SYN, **kw})
    dm.setup("fit")
    return dm


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(x.shape[0], -1)}


@pytest.mark.parametrize(("train_size", "n"), [(40, 40), (0.25, 24), (0.5, 48), (96, 96),
                                               (None, 96)])
def test_count_or_fraction(train_size, n):
    dm = make_dm(train_size=train_size)
    assert len(dm.splits["train"]) == n
    assert dm.record.n == n  # the corruption record covers exactly the kept samples


def test_a_subset_of_the_clean_split_in_its_order():
    full = make_dm().splits["train"].tensors
    sub = make_dm(train_size=30, train_seed=3).splits["train"].tensors
    assert rows(sub["x"]) <= rows(full["x"])
    # in the split's order: the kept rows appear in the full split in increasing positions
    pos = {r: i for i, r in enumerate(x.numpy().tobytes() for x in full["x"].flatten(1))}
    order = [pos[x.numpy().tobytes()] for x in sub["x"].flatten(1)]
    assert order == sorted(order)
    assert torch.equal(sub["index"], torch.arange(30))


def test_the_subset_depends_on_train_seed_only():
    a = make_dm(train_size=30, train_seed=1)
    b = make_dm({"name": "label_uniform", "p": 0.5, "seed": 7}, train_size=30, train_seed=1)
    c = make_dm(train_size=30, train_seed=2)
    assert torch.equal(a.splits["train"].tensors["x"], b.splits["train"].tensors["x"])
    assert torch.equal(a.splits["train"].tensors["y"], b.splits["train"].tensors["y_true"])
    assert not torch.equal(a.splits["train"].tensors["x"], c.splits["train"].tensors["x"])


def test_corruption_is_drawn_on_the_subset():
    """Drawn before corruption: the record is exactly what corrupting the kept samples alone
    gives (the noise's fraction is of the samples trained on), for label and input noise."""
    from memorization.noise import corrupt_dataset

    clean = make_dm(train_size=40, train_seed=2).splits["train"].tensors
    for noise in ({"name": "label_flip", "p": 0.5, "seed": 4},
                  {"name": "random_pixels", "p": 0.3, "seed": 1}):
        dm = make_dm(noise, train_size=40, train_seed=2)
        ref = corrupt_dataset(clean["x"], clean["y"], 3, noise["name"], noise["p"], noise["seed"])
        assert torch.equal(dm.record.selected, ref.record.selected)
        assert torch.equal(dm.record.train_labels, ref.record.train_labels)
        assert torch.equal(dm.splits["train"].tensors["x"], ref.x)
    assert make_dm({"name": "random_labels", "p": 1.0, "seed": 0}, train_size=40).record.n == 40


def test_validation_is_carved_first():
    dm = make_dm(val_size=16, train_size=0.5)
    assert len(dm.splits["val"]) == 16 and len(dm.splits["train"]) == 40  # half of 96 - 16
    full_val = make_dm(val_size=16).splits["val"].tensors["x"]
    assert torch.equal(dm.splits["val"].tensors["x"], full_val)  # the hold-out is unchanged


@pytest.mark.parametrize(("train_size", "message"), [
    (0, "data.train_size=0 must be an integer count"),
    (1.5, "data.train_size=1.5 must be an integer count"),
    (-3, "data.train_size=-3 must be a number >= 0"),
    (97, "data.train_size=97 is more than the 96 training samples"),
    (0.001, "data.train_size=0.001 keeps no training sample out of 96"),
])
def test_bad_train_size_is_one_line(train_size, message):
    with pytest.raises(ConfigError) as err:
        make_dm(train_size=train_size)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_from_the_command_line_config(make_cfg):
    from memorization.jobs.validate import validate

    cfg = make_cfg("data.train_size=300", "data.train_seed=5")
    validate(cfg)
    assert cfg.data.train_size == 300 and cfg.data.train_seed == 5


def test_the_settings_line_names_the_optimizer_and_schedule():
    """The run's settings before training: the optimizer's class (and its schedule), the
    training-set size after data.train_size."""
    from types import SimpleNamespace

    from torch import nn

    from memorization.engine.callbacks import format_settings

    dm = make_dm(train_size=40)
    trainer = SimpleNamespace(datamodule=dm, max_epochs=7)
    config = {"data": {"source": "synthetic", "num_classes": 3, "batch_size": 8},
              "noise": {"name": "none", "p": 0.0, "seed": 0},
              "model": {"_target_": "memorization.models.MLP", "depth": 2, "width": 16},
              "optim": {"_target_": "torch.optim.SGD", "lr": 0.1, "scheduler": {
                  "_target_": "torch.optim.lr_scheduler.ExponentialLR", "gamma": 0.95}},
              "seed": 0, "stop_at_train_acc": 1.0}
    text = format_settings(config, trainer, nn.Linear(2, 3))
    assert "SGD (ExponentialLR) lr=0.1" in text and "40 train" in text
    config["optim"] = {"_target_": "torch.optim.Adam", "lr": 0.001, "scheduler": {}}
    assert "Adam lr=0.001" in format_settings(config, trainer, nn.Linear(2, 3))


@pytest.mark.slow
def test_time_to_convergence_sweep_end_to_end(tmp_path):
    """Arpit et al. Fig. 6 scaled down, from its preset (which carries its own sweep; the
    command line narrows it): two widths on 50 digits, each trained until it fits; the report
    draws epochs to fit against the width from the jobs' own epochs_to_fit."""
    import json

    import pandas as pd

    from tests.conftest import run_cli

    res = run_cli(["-m", "experiment=arpit_convergence_digits", "noise.p=0", "model.width=32,64",
                   "data.train_size=50", "trainer.max_epochs=150", "logger=none",
                   f"hydra.sweep.dir={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    fits = [json.loads((tmp_path / j / "metrics.json").read_text())["epochs_to_fit"]
            for j in ("0", "1")]
    assert all(isinstance(f, int) and 1 <= f < 150 for f in fits)
    final = pd.read_csv(tmp_path / "report" / "final.csv")
    assert sorted(final["epochs_to_fit"]) == sorted(fits)
    assert set(final["n_train"]) == {50}
    assert (tmp_path / "report" / "time_to_convergence.png").read_bytes()[:4] == b"\x89PNG"
