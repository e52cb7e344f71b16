"""Every paper preset composes with its own dataset and runs a fast_dev_run step on synthetic data
of that dataset's shape (the real files are not here)."""

from __future__ import annotations

import pytest

from memorization.cli.run import train
from tests.conftest import CONF, compose_config


def _for_run(path) -> bool:
    """A preset of python -m memorization.run, not of a study (memorization.sensitivity,
    memorization.easy_hard: tests/studies/test_sensitivity.py and tests/studies/test_easy_hard.py
    run those)."""
    from memorization.studies.common import STUDY_KEYS

    return not any(line.startswith(f"{key}:") for line in path.read_text().splitlines()
                   for key in STUDY_KEYS)


PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if _for_run(p))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_on_synthetic_data_of_its_shape(tmp_path, preset):
    own = compose_config([f"experiment={preset}"])
    shape, k = list(own.data.shape), own.data.num_classes
    crop = own.data.get("center_crop")
    # a cropping preset's source is larger than the network's input: make the synthetic one so
    source_shape = shape if crop is None else [shape[0], crop + 4, crop + 4]
    cfg = compose_config([
        f"experiment={preset}", "data=synthetic", f"data.shape={shape}", f"data.num_classes={k}",
        f"data.source_options.shape={source_shape}", "data.source_options.n_train=48",
        "data.source_options.n_test=16", "data.val_size=0", "logger=none",
        "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
        "+trainer.fast_dev_run=true", "metrics.probe_size=32", "metrics.csr.n=4",
    ], output_dir=tmp_path)
    assert cfg.model._target_ == own.model._target_ and cfg.optim == own.optim
    summary = train(cfg)
    assert summary["final"]["test/acc"] is not None
