"""Run folders written by an older layout of the package still resume.

``tests/fixtures/run_folders/`` holds two unfinished runs made by the package at commit 2e88067,
before its modules moved into layer folders (their config_resolved.yaml names the old paths:
``memorization.engine.module.Classifier``, ``memorization.engine.callbacks.RunReport``, ...): one
single run and one stacked job of two replicas, each 2 epochs of a 1x8 MLP on 200 digits, with its
metrics.json removed so that the folder reads as killed after its last checkpoint. A rerun with
``trainer.max_epochs=3`` must resume each (not refuse it for other settings) and train the third
epoch only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "run_folders"
ARGS = ["model.depth=1", "model.width=8", "stop_at_train_acc=null", "logger=csv",
        "data.train_size=200", "trainer.max_epochs=3", "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize("kind, extra", [("single", []),
                                         ("stacked", ["trainer.replicas=2", "replicas.mode=loop"])])
def test_an_old_layouts_folder_resumes(tmp_path, kind, extra):
    folder = tmp_path / kind
    shutil.copytree(FIXTURES / kind, folder)
    old = (folder / "config_resolved.yaml").read_text()
    assert "memorization.module.Classifier" in old  # the fixture is of the old layout
    done = run_cli([*ARGS, *extra, f"hydra.run.dir={folder}"], cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-2000:]
    assert "resuming" in out and "other settings" not in out, out[-2000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    epochs = [json.loads(p.read_text())["epochs"]
              for p in sorted(folder.glob("replicas/*/metrics.json"))] or [metrics["epochs"]]
    assert epochs == [3] * (2 if kind == "stacked" else 1)


def test_a_damaged_checkpoint_of_the_folder_says_resume_false(tmp_path):
    """The folder's own last.ckpt, damaged: one line naming it as the checkpoint the folder
    resumes from (no ckpt_path was given), with the way out."""
    import os

    folder = tmp_path / "single"
    shutil.copytree(FIXTURES / "single", folder)
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(os.urandom(2000))
    done = run_cli([*ARGS, f"hydra.run.dir={folder}"], cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {last}, the checkpoint this folder resumes from, cannot be read "
        "(UnpicklingError): resume=false starts the run over there, or restore the file")
