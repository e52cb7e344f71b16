"""The sweep report's figures: drawn from fabricated job/history tables, skipped when data lacks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from memorization.cli.report.figures import FIGURES, aggregate, series_table, write_figures

LAYERS = {"input": 0, "fc1": 1, "fc2": 2, "fc3": 3}
TITLE = "theunissen_digits: noise.p=0,0.4 · seed=0,1"


def _split_key(key: str) -> tuple[str, str, str]:
    """(metric, split, layer) of a logged key, as the report's data module maps them."""
    parts = key.split("/")
    if len(parts) == 1:
        return parts[0], "", ""
    if len(parts) == 2:
        split, metric = parts
        return (metric, split, "") if split in ("train", "test", "val") else (split, metric, "")
    return parts[0], parts[1], parts[2]


def _job_values(p: float, seed: int, epoch: int, epochs: int, kind: int = 0) -> dict[str, float]:
    """Plausible per-epoch values of one job: noise slows fitting and lowers test accuracy."""
    rng = np.random.default_rng(seed * 1000 + epoch)
    p = p * (1 - 0.3 * kind)  # noise types differ in how much they hurt
    t = epoch / epochs
    fit = 1 - math.exp(-5 * t * (1 - 0.6 * p))
    values = {
        "train/loss": 2.3 * (1 - fit) + 0.01 + 0.01 * rng.random(),
        "train/acc": 0.1 + 0.9 * fit, "train/acc_true": (0.1 + 0.9 * fit) * (1 - p / 2),
        "train/acc_clean": min(1.0, 0.1 + 0.95 * fit),
        "test/acc": 0.1 + (0.85 - 0.5 * p) * fit - 0.01 * seed, "test/loss": 2.3 * (1 - fit),
        "csr/test": 0.3 * (1 - fit) + 0.05 * p,
    }
    values["gap"] = values["train/acc"] - values["test/acc"]
    if p > 0:  # no corrupted subset without noise
        values["train/acc_corrupted"] = fit**3
        values["train/acc_corrupted_true"] = 0.1 * (1 - fit**3)
    if epoch % 5 == 0 or epoch == epochs:
        for layer, depth in LAYERS.items():
            f = depth / 3
            values[f"polarization/train/{layer}"] = 0.2 + 0.6 * f * fit * (1 - p)
            values[f"masc/test/{layer}"] = 0.5 + 0.3 * f - 0.3 * p * f * fit
            values[f"masc_true/test/{layer}"] = 0.55 + 0.3 * f
            values[f"masc/components/{layer}"] = 10 + depth
            if depth:
                values[f"cosine/train/{layer}"] = 0.3 + 0.5 * f * fit + 0.02 * seed
                values[f"cosine/test/{layer}"] = 0.3 + 0.4 * f * fit
                values[f"dead/train/{layer}"] = 0.1 * f
    return values


def make_sweep(ps=(0.0, 0.4), seeds=(0, 1), types=("label_flip",), epochs=12):
    """Fabricated (jobs, history) of a sweep over noise type x level x seed."""
    job_rows, hist_rows = [], []
    for k, kind in enumerate(types):
        for p in ps:
            for seed in seeds:
                job = f"{kind}-p{p}-s{seed}"
                n = epochs - seed  # seeds stop at different epochs
                for epoch in range(1, n + 1):
                    for key, value in _job_values(p, seed, epoch, n, k).items():
                        metric, split, layer = _split_key(key)
                        hist_rows.append((job, epoch, split, layer, LAYERS.get(layer, np.nan),
                                          metric, value))
                final = _job_values(p, seed, n, n, k)
                fit = 5.0 if p == 0 else (float("nan") if seed else 10.0)
                job_rows.append({"job": job, "noise": kind, "noise.p": p, "seed": seed,
                                 "noise.seed": seed, "epochs": n, "epochs_to_fit": fit,
                                 "test/acc_best": final["test/acc"] + 0.02,
                                 **{k: v for k, v in final.items() if k.count("/") < 2}})
    history = pd.DataFrame(hist_rows, columns=["job", "epoch", "split", "layer", "depth",
                                               "metric", "value"])
    swept = (["noise"] if len(types) > 1 else []) + ["noise.p", "seed"]
    return pd.DataFrame(job_rows), history, swept


@pytest.fixture(scope="module")
def sweep():
    return make_sweep()


@pytest.fixture
def no_raster(monkeypatch):
    """For tests of what is skipped: build every figure but skip rasterizing it (the slow part;
    the other tests rasterize each figure)."""
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: Path(path).write_bytes(b"x"))


def _assert_pngs(paths: list[Path]) -> None:
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG"), path


def test_all_figures_written(sweep, tmp_path):
    jobs, history, swept = sweep
    written, skipped = write_figures(jobs, history, swept, TITLE, tmp_path)
    assert skipped == []
    assert sorted(p.name for p in written) == sorted(FIGURES)
    _assert_pngs(written)


def test_no_masc_skips_its_figure(sweep, tmp_path, no_raster):
    jobs, history, swept = sweep
    history = history[~history["metric"].isin(["masc", "masc_true"])]
    written, skipped = write_figures(jobs, history, swept, TITLE, tmp_path)
    assert not (tmp_path / "masc_per_layer.png").exists()
    assert len(written) == len(FIGURES) - 1
    assert [line for line in skipped if "masc_per_layer.png" in line] == skipped
    assert len(skipped) == 1


def test_one_noise_level_skips_noise_figures(tmp_path, no_raster):
    jobs, history, _ = make_sweep(ps=(0.4,))
    written, skipped = write_figures(jobs, history, ["seed"], TITLE, tmp_path)
    assert not (tmp_path / "test_acc_vs_noise.png").exists()
    assert any(line.startswith("skipped test_acc_vs_noise.png") for line in skipped)
    assert any("training_loss.png: panel b" in line for line in skipped)
    assert len(written) == len(FIGURES) - 1


def test_single_job_sweep(tmp_path):
    jobs, history, _ = make_sweep(ps=(0.2,), seeds=(0,))
    written, skipped = write_figures(jobs, history, ["noise.p"], TITLE, tmp_path)
    assert {p.name for p in written} == set(FIGURES) - {"test_acc_vs_noise.png"}
    assert len(skipped) == 2  # fig 1 and panel 2b
    _assert_pngs(written)


def test_missing_cosine_draws_polarization_only(sweep, tmp_path, no_raster):
    jobs, history, swept = sweep
    written, skipped = write_figures(jobs, history[history["metric"] != "cosine"], swept, TITLE,
                                     tmp_path)
    assert (tmp_path / "cosine_polarization_vs_depth.png").exists()
    assert skipped == []
    no_layers = history[~history["metric"].isin(["cosine", "polarization"])]
    written, skipped = write_figures(jobs, no_layers, swept, TITLE, tmp_path / "b")
    assert sum("cosine_polarization" in line for line in skipped) == 2


def test_aggregate_mean_min_max_by_hand():
    frame = pd.DataFrame({"series": ["a", "a", "a", "b", "b", "a"],
                          "epoch": [1, 1, 2, 1, 1, 2],
                          "value": [0.2, 0.6, 0.5, 1.0, float("nan"), 0.9]})
    agg = aggregate(frame, ["series", "epoch"]).set_index(["series", "epoch"])
    assert agg.loc[("a", 1)].tolist() == pytest.approx([0.4, 0.2, 0.6, 2])
    assert agg.loc[("a", 2)].tolist() == pytest.approx([0.7, 0.5, 0.9, 2])
    assert agg.loc[("b", 1)].tolist() == pytest.approx([1.0, 1.0, 1.0, 1])  # NaN left out


def test_seeds_aggregate_into_one_series(sweep):
    jobs, _, swept = sweep
    job_series, colours = series_table(jobs, swept)
    assert list(colours) == ["p=0", "p=0.4"]
    assert job_series.value_counts().tolist() == [2, 2]


def test_several_noise_types_one_line_per_type():
    jobs, _, swept = make_sweep(types=("label_flip", "gaussian_input", "structured"), epochs=6)
    swept = swept + ["noise.seed"]
    job_series, colours = series_table(jobs, swept, exclude=("noise.p",))
    assert sorted(colours) == ["gaussian_input", "label_flip", "structured"]
    assert len(set(colours.values())) == 3
    per_epoch, colours = series_table(jobs, swept)
    assert "label_flip p=0.4" in colours and len(colours) == 6
    assert job_series.loc["structured-p0.4-s1"] == "structured"


def test_other_parameter_labels():
    jobs, _, _ = make_sweep(epochs=6)
    jobs = pd.concat([jobs.assign(**{"model.width": w}) for w in (64, 256)], ignore_index=True)
    jobs["job"] = jobs["job"] + "-w" + jobs["model.width"].astype(str)
    _, colours = series_table(jobs, ["model.width", "noise.p", "seed"])
    assert list(colours) == ["model.width=64, p=0", "model.width=64, p=0.4",
                             "model.width=256, p=0", "model.width=256, p=0.4"]


def test_time_to_convergence_against_width_and_training_size(tmp_path):
    """Arpit et al. Fig. 6: epochs to fit against capacity and against dataset size, a line per
    noise level; drawn only when the sweep varies one of them."""
    rows = []
    for p in (0.0, 0.4):
        for width in (16, 64, 256):
            for size in (100, 400):
                fit = 5 + 40 * p * size / width
                rows.append({"job": f"p{p}-w{width}-n{size}", "noise": "gaussian", "noise.p": p,
                             "model.width": width,
                             "data.train_size": "null" if size == 400 else size,  # all 400
                             "n_train": size, "epochs": fit, "epochs_to_fit": fit})
    jobs = pd.DataFrame(rows)
    history = pd.DataFrame([(j, 1, "train", "", np.nan, "loss", 1.0) for j in jobs["job"]],
                           columns=["job", "epoch", "split", "layer", "depth", "metric", "value"])
    swept = ["noise.p", "model.width", "data.train_size"]
    written, skipped = write_figures(jobs, history, swept, TITLE, tmp_path)
    assert tmp_path / "time_to_convergence.png" in written
    _assert_pngs([tmp_path / "time_to_convergence.png"])
    assert not any("time_to_convergence" in line for line in skipped)
    # the same jobs at one width and one size: no such figure, and no note about it
    one = jobs[(jobs["model.width"] == 64) & (jobs["data.train_size"] == 100)]
    written, skipped = write_figures(one, history, ["noise.p"], TITLE, tmp_path / "b")
    assert not (tmp_path / "b" / "time_to_convergence.png").exists()
    assert not any("time_to_convergence" in line for line in skipped)
