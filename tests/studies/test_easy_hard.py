"""Arpit et al.'s easy and hard examples (memorization/studies/easy_hard.py): the binomial
reference, the per-example rates, determinism, the command end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from memorization.base.errors import ConfigError
from memorization.engine.optim import OptimConfig
from memorization.models import MLP
from memorization.studies import easy_hard
from memorization.studies.easy_hard import binomial_reference, error_counts
from tests.study_utils import compose_study, noise_sweep, study_presets
from tests.wandb_offline import read_offline_run

TINY = ["easy_hard.n_seeds=3", "data.train_size=200", "easy_hard.device=cpu", "logger=none"]


@pytest.mark.parametrize(("n", "runs", "p"), [(1000, 100, 0.3137), (50, 3, 0.5), (7, 10, 0.9),
                                              (200, 1, 0.25), (10, 5, 0.0), (10, 5, 1.0)])
def test_reference_mean_equals_the_mean_error(n, runs, p):
    ref = binomial_reference(n, runs, p)
    assert ref.shape == (n,)
    assert ref.mean() == pytest.approx(p, abs=1e-10)
    assert (np.diff(ref) >= -1e-12).all() and ref.min() >= 0 and ref.max() <= 1 + 1e-12


def test_reference_matches_sorted_binomial_draws():
    """The expected order statistics, against the mean of sorted simulated draws."""
    n, runs, p = 200, 20, 0.3
    draws = np.random.default_rng(0).binomial(runs, p, size=(2000, n)) / runs
    assert np.abs(np.sort(draws, axis=1).mean(0) - binomial_reference(n, runs, p)).max() < 0.01


def _counts(seeds):
    torch.manual_seed(123)
    x, y = torch.randn(40, 1, 3, 3), torch.randint(0, 3, (40,))

    def make_net(seed):
        torch.manual_seed(seed)
        return MLP(in_shape=(1, 3, 3), num_classes=3, depth=1, width=8)

    optim = OptimConfig(lr=0.1, momentum=0.0)
    return error_counts(make_net, optim.build, (x, y), (x, y), seeds, batch_size=8, epochs=1)


def test_rates_in_unit_interval_with_granularity_one_over_n():
    counts = _counts([0, 1, 2])
    rates = counts.double() / 3
    assert ((rates >= 0) & (rates <= 1)).all()
    assert torch.equal(rates * 3, (rates * 3).round())
    assert counts.dtype == torch.long and counts.max() <= 3


def test_same_seeds_same_rates():
    assert torch.equal(_counts([0, 1, 2]), _counts([0, 1, 2]))


def test_bad_values_fail_in_one_line():
    with pytest.raises(ConfigError, match="easy_hard.split=val must be one of"):
        easy_hard.EasyHardConfig(split="val")
    with pytest.raises(ConfigError, match="easy_hard.n_seeds=0 must be"):
        easy_hard.EasyHardConfig(n_seeds=0)


@pytest.mark.parametrize("split", ["train", "test"])
def test_runs_in_process(tmp_path, split):
    cfg = compose_study("easy_hard", [*TINY, f"easy_hard.split={split}"], tmp_path)
    summary = easy_hard.run(cfg)
    rates = pd.read_csv(tmp_path / "rates.csv")
    assert len(rates) == (200 if split == "train" else 359)  # digits: 359 test images
    assert summary["mean_error"] == pytest.approx(rates["rate"].mean())
    assert np.allclose(rates["rate"], rates["errors"] / 3)
    assert (tmp_path / "easy_hard.png").is_file()


@pytest.mark.parametrize("preset", study_presets("easy_hard"))
def test_presets_compose_and_run_on_synthetic_data_of_their_shape(tmp_path, preset):
    own = compose_study("easy_hard", [f"experiment={preset}"], tmp_path)
    shape, k = list(own.data.shape), own.data.num_classes
    cfg = compose_study("easy_hard", [
        f"experiment={preset}", "data=synthetic", f"data.shape={shape}", f"data.num_classes={k}",
        "data.source_options.n_train=40", "model.width=8", *TINY[:1], "data.train_size=30",
        "easy_hard.device=cpu"], tmp_path)
    assert cfg.model.depth == own.model.depth and cfg.optim == own.optim
    assert easy_hard.run(cfg)["n_examples"] == 30


@pytest.mark.slow
def test_command_sweep_end_to_end(tmp_path):
    """Real data and randY on a digits subset, N = 3; one figure for the sweep."""
    for job, summary in zip(("0", "1"), noise_sweep("easy_hard", TINY, tmp_path), strict=True):
        rates = pd.read_csv(tmp_path / job / "rates.csv")
        assert summary["n_seeds"] == 3 and len(rates) == 200
        assert set(np.round(rates["rate"] * 3, 9)) <= {0, 1, 2, 3}
    assert summary["noise"] == "random_labels" and summary["corrupted"] > 0
    assert (tmp_path / "easy_hard.png").is_file()
    run = read_offline_run(tmp_path / "1")  # the job's W&B run: the sorted curve, its summary
    curve = [row["rate_sorted"] for row in run["history"] if "rate_sorted" in row]
    assert curve == sorted(rates["rate"].tolist())
    assert run["summary"]["mean_error"] == summary["mean_error"]
