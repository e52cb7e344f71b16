"""``python -m memorization.scores`` (memorization/studies/scores/job.py, report.py): the scores do
not depend on how many models train at once (exact in loop mode), a killed job resumes to the same
scores, a folder with other settings is refused, corrupted digits score high, the command and its
sweep end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from memorization.base.errors import ConfigError, Refusal
from memorization.config.scores import ScoresConfig
from memorization.studies.common import STUDY_KEYS
from memorization.studies.scores import job as scores_job
from memorization.studies.scores.chunks import load_chunks
from tests.conftest import ROOT
from tests.study_utils import compose_study, study_presets
from tests.wandb_offline import read_offline_run

TINY = ["data.train_size=200", "scores.models=4", "scores.epochs=3", "scores.device=cpu",
        "scores.mode=loop", "logger=none", "data.batch_size=32"]


def _run(tmp_path, *overrides):
    cfg = compose_study("scores", [*TINY, *overrides], tmp_path)
    return scores_job.job(scores_job.run, cfg)


def _frames(folder):
    return pd.read_csv(folder / "scores.csv"), pd.read_csv(folder / "scores_test.csv")


def test_the_scores_do_not_depend_on_how_many_models_train_at_once(tmp_path):
    """Two ratios, 4 models each: 4 at a time, 3 at a time, 1 at a time, the same chunks'
    predictions and the same scores.csv, bit for bit (loop mode on a CPU)."""
    runs = {}
    for s in (4, 3, 1):
        folder = tmp_path / str(s)
        summary = _run(folder, f"trainer.replicas={s}", "scores.ratios=[0.5,0.8]")
        runs[s] = (_frames(folder), load_chunks(folder))
        assert summary["models_landed"] == 8 and not summary["partial"]
        assert len(list((folder / "chunks").iterdir())) == {4: 2, 3: 4, 1: 8}[s]
    (train, test), ch = runs[1]
    assert ch.models.tolist() == list(range(8))
    assert ch.ratios.tolist() == [0.5, 0.8] * 4
    for s in (4, 3):
        (t2, e2), c2 = runs[s]
        pd.testing.assert_frame_equal(train, t2)
        pd.testing.assert_frame_equal(test, e2)
        assert torch.equal(ch.pred_train, c2.pred_train) and torch.equal(ch.included,
                                                                         c2.included)
    assert len(train) == 200 and len(test) == 359
    assert set(train.columns) >= {"index", "label_true", "label_train", "corrupted", "n_in",
                                  "n_out", "acc_in", "acc_out", "mem", "mem_se", "cscore_0.5",
                                  "cscore_0.8", "cscore_true_0.5", "cscore_true_0.8"}
    # mem comes from the models of the first ratio (0.5): 4 of them, each example in or out
    assert (train["n_in"] + train["n_out"] == 4).all()


def test_a_chunks_predictions_are_the_single_trainings(tmp_path):
    """Model 1 of a stacked chunk predicts what the engine's single fit of the same network,
    subset and order predicts."""
    from memorization.engine import trainer as engine
    from memorization.jobs.validate import build
    from memorization.studies import common
    from memorization.studies.scores.masks import ORDER, WEIGHTS, model_seed, subset_masks

    _run(tmp_path, "trainer.replicas=4")
    cfg = compose_study("scores", TINY, tmp_path)
    data = common.load_examples(cfg, "train", None, torch.device("cpu"))
    sub = subset_masks(200, 0.7, 0, [1])[0].nonzero()[:, 0]
    net = common.build_net(cfg, (1, 8, 8), 10, torch.device("cpu"),
                           seed=model_seed(0, 1, WEIGHTS))
    engine.fit_network(net, build(cfg, "optim"), data["x"][sub], data["y"][sub], epochs=3,
                       batch_size=32, order=engine.seeded_orders(len(sub),
                                                                 model_seed(0, 1, ORDER)))
    ch = load_chunks(tmp_path)
    assert torch.equal(ch.pred_train[1].long(), engine.predict(net, data["x"]))
    assert torch.equal(ch.included[1].nonzero()[:, 0], sub)


def test_bf16_mixed_trains_the_models_under_autocast(tmp_path, monkeypatch):
    """scores.precision reaches the stacked fit, which then trains other weights than the
    float32 one (so the predictions can differ) and still fits the subsets."""
    from memorization.engine import trainer as engine

    seen = []
    fit = engine.fit_stacked
    monkeypatch.setattr(engine, "fit_stacked",
                        lambda *a, **k: seen.append(k["precision"]) or fit(*a, **k))
    full = _run(tmp_path / "32", "scores.epochs=8")
    mixed = _run(tmp_path / "bf16", "scores.epochs=8", "scores.precision=bf16-mixed")
    assert seen == ["32-true", "bf16-mixed"]
    assert mixed["acc_in_clean"] > 0.9 and abs(mixed["acc_in_clean"] - full["acc_in_clean"]) < 0.1
    assert not torch.equal(load_chunks(tmp_path / "32").pred_test,
                           load_chunks(tmp_path / "bf16").pred_test)


@pytest.mark.slow
def test_a_killed_job_resumes_to_the_same_scores(tmp_path):
    """kill -9 once the first chunk has landed; the rerun trains only the models no chunk
    holds, and the scores equal those of a job that was never stopped."""
    args = [*TINY, "scores.models=5", "trainer.replicas=1", "scores.epochs=20"]
    folder = tmp_path / "killed"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "memorization.scores", *args, f"hydra.run.dir={folder}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (folder / "summary.json").is_file():  # written after each chunk landed
        assert proc.poll() is None and time.monotonic() < deadline, "no chunk landed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = load_chunks(folder)
    assert 1 <= before.count < 5 and not (folder / "metrics.json").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["partial"] and 1 <= summary["models_landed"] <= before.count
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{before.count} landed before" in res.stderr + res.stdout
    again = load_chunks(folder)
    assert again.models.tolist() == list(range(5))
    assert torch.equal(again.pred_train[:before.count], before.pred_train)
    # the job never stopped, in a process like theirs (the threads change the rounding)
    whole = [*cmd[:-1], f"hydra.run.dir={tmp_path / 'whole'}"]
    assert subprocess.run(whole, cwd=ROOT, env=env, capture_output=True,
                          timeout=300).returncode == 0
    for got, ref in zip(_frames(folder), _frames(tmp_path / "whole"), strict=True):
        pd.testing.assert_frame_equal(got, ref)


def test_a_folder_is_continued_refused_or_started_over(tmp_path, capsys):
    first = _run(tmp_path, "scores.models=2")
    assert first["models_landed"] == 2
    # finished: skipped, nothing trained
    assert _run(tmp_path, "scores.models=2") == first
    assert "skip" in "".join(capsys.readouterr())
    # more models: the two landed are kept, two more trained, at another chunk size
    more = _run(tmp_path, "scores.models=4", "trainer.replicas=3")
    assert more["models_landed"] == 4 and load_chunks(tmp_path).chunk.tolist() == [0, 0, 1, 1]
    # fewer: the estimates of the first two, from the same chunks
    assert _run(tmp_path, "scores.models=2")["auroc_mem"] == first["auroc_mem"]
    # another setting: refused in one line, nothing written
    with pytest.raises(Refusal, match=r"other settings \(scores.epochs: 3 -> 5\).*resume=false"):
        _run(tmp_path, "scores.epochs=5")
    assert len(load_chunks(tmp_path).models) == 4
    # resume=false: the chunks go, the job starts over
    again = _run(tmp_path, "scores.epochs=5", "scores.models=2", "resume=false")
    assert again["models_landed"] == 2 and load_chunks(tmp_path).count == 2


def test_bad_values_fail_in_one_line(tmp_path):
    for kwargs, match in [({"models": 0}, "scores.models=0 must be"),
                          ({"ratios": [0.7, 1.0]}, r"1 is not in \(0, 1\)"),
                          ({"ratios": []}, "lists no subset ratio"),
                          ({"ratios": [0.5, 0.5]}, "lists a ratio twice"),
                          ({"mem_ratio": 0.3}, "mem_ratio=0.3 is not one of"),
                          ({"mode": "fast"}, "scores.mode=fast must be one of"),
                          ({"precision": "64-true"}, "scores.precision=64-true is not one of"),
                          ({"matmul_precision": "low"},
                           "scores.matmul_precision=low is not one of")]:
        with pytest.raises(ConfigError, match=match):
            ScoresConfig(**kwargs)
    for overrides, match in [(["trainer.replicas=2", "model.dropout=0.5"], "model.dropout=0.5 "
                               "is not stacked"),
                             (["trainer.replicas=2", "optim._target_=torch.optim.LBFGS",
                               "optim.weight_decay=null"],
                              "not known to step each parameter elementwise"),
                             (["data.augment.hflip=true"], "data.augment is not applied"),
                             (["trainer.replicas=0"], "trainer.replicas=0 must be")]:
        cfg = compose_study("scores", [*TINY, *overrides], tmp_path)
        with pytest.raises(ConfigError, match=match):
            scores_job.validate(cfg)
    # one model alone may use dropout (nothing is stacked)
    scores_job.validate(compose_study("scores", [*TINY, "model.dropout=0.5", "trainer.replicas=1"],
                                      tmp_path))


@pytest.mark.parametrize("preset", study_presets("scores"))
def test_presets_compose_and_validate(tmp_path, preset):
    cfg = compose_study("scores", [f"experiment={preset}"], tmp_path)
    sc = scores_job.validate(cfg)
    assert sc.total >= 100 and cfg.model.depth == 3 and "scores" in STUDY_KEYS


def test_corrupted_digits_score_higher_than_clean_ones(tmp_path):
    """End to end on the embedded digits, 20% of the labels flipped: 24 MLPs 2x256 on random
    halves of 500 training examples, trained until they fit them, flipped labels included. A flipped
    example is predicted with its flipped label only by the models that saw it (mem near 1),
    a clean one by nearly every model (mem near 0): AUROC above 0.9, and C-scores the other
    way round."""
    summary = _run(tmp_path, "data.train_size=500", "scores.models=24", "scores.epochs=60",
                   "scores.ratios=[0.5]", "trainer.replicas=8", "model.depth=2",
                   "model.width=256", "optim.lr=0.003")
    assert 0.15 < summary["n_corrupted"] / 500 < 0.25  # each label flipped with p = 0.2
    assert summary["acc_in_corrupted"] > 0.95  # the models fit the flipped labels they saw
    assert summary["auroc_mem"] > 0.9, summary
    assert summary["mean_mem_corrupted"] > summary["mean_mem_clean"] + 0.4
    assert summary["auroc_cscore"] > 0.9
    assert summary["cscore_0.5_corrupted"] < 0.3 < 0.6 < summary["cscore_0.5_clean"]
    # the models held out from a flipped example tend to predict its true label instead
    assert summary["cscore_true_0.5_corrupted"] > 0.5
    frame = pd.read_csv(tmp_path / "scores.csv")
    top = frame.nlargest(20, "mem")
    assert top["corrupted"].mean() > 0.8
    for name in ("memorization.png", "top_memorized.png", "cscores.png", "metrics.json"):
        assert (tmp_path / name).is_file()


@pytest.mark.slow
def test_command_sweep_end_to_end(tmp_path):
    """python -m memorization.scores -m over the noise: each job's outputs, its W&B run
    (the estimates as the chunks landed, the figures, the summary), the sweep's ROC figure."""
    from tests.study_utils import run_study

    args = [a for a in TINY if a != "logger=none"]
    res = run_study("scores", ["-m", "noise.p=0.1,0.3", *args, "trainer.replicas=2",
                               f"hydra.sweep.dir={tmp_path}"])
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = [json.loads((tmp_path / j / "metrics.json").read_text()) for j in ("0", "1")]
    assert [s["models_landed"] for s in jobs] == [4, 4]
    summary = jobs[1]
    assert jobs[0]["n_corrupted"] < summary["n_corrupted"]
    assert (tmp_path / "scores_roc.png").is_file()
    run = read_offline_run(tmp_path / "1")
    rows = [r for r in run["history"] if "auroc_mem" in r]
    assert [r["models"] for r in rows] == [2, 4]
    assert rows[-1]["auroc_mem"] == pytest.approx(summary["auroc_mem"])
    assert run["summary"]["models_landed"] == 4
    assert any("image-file" in str(r.get("figures/memorization")) for r in run["history"])
    frame = pd.read_csv(tmp_path / "1" / "scores.csv")
    assert np.isfinite(frame["mem"]).any()


def test_the_command_refuses_a_bad_value_before_it_starts(tmp_path):
    from tests.study_utils import run_study

    res = run_study("scores", [*TINY, "scores.ratios=[1.5]", f"hydra.run.dir={tmp_path}"])
    assert res.returncode == 2 and "1.5 is not in (0, 1)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "chunks").exists()


def test_a_sweep_checks_every_job_before_any_runs(tmp_path):
    from tests.study_utils import run_study

    res = run_study("scores", ["-m", "noise=label_flip,random_labels", *TINY,
                               f"hydra.sweep.dir={tmp_path}"])
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: job 1 (noise=random_labels): noise=random_labels is defined with p=1" in \
        res.stderr and "nothing was run" in res.stderr
    assert not list(tmp_path.glob("*/chunks"))


def test_the_command_extends_a_finished_folder(tmp_path):
    """A finished folder of 2 models, rerun by the command with scores.models=4: the entry's
    check before Hydra lets the job's own free keys through (it refused them), the two
    landed models are kept, two more trained, and the scores equal a one-shot run of 4."""
    from tests.study_utils import run_study

    folder, whole = tmp_path / "grown", tmp_path / "whole"
    args = [*TINY, "trainer.replicas=1"]
    first = run_study("scores", [*args, "scores.models=2", f"hydra.run.dir={folder}"])
    assert first.returncode == 0, first.stderr[-2000:]
    before = load_chunks(folder)
    grown = run_study("scores", [*args, "scores.models=4", f"hydra.run.dir={folder}"])
    assert grown.returncode == 0, grown.stderr[-2000:]
    assert "2 landed before" in grown.stderr + grown.stdout
    after = load_chunks(folder)
    assert after.models.tolist() == [0, 1, 2, 3]
    assert torch.equal(after.pred_train[:2], before.pred_train)
    assert json.loads((folder / "metrics.json").read_text())["models_landed"] == 4
    one = run_study("scores", [*args, "scores.models=4", f"hydra.run.dir={whole}"])
    assert one.returncode == 0, one.stderr[-2000:]
    for got, ref in zip(_frames(folder), _frames(whole), strict=True):
        pd.testing.assert_frame_equal(got, ref)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_device_this_machine_lacks_is_refused_before_the_job(tmp_path):
    cfg = compose_study("scores", [*TINY, "scores.device=cuda"], tmp_path)
    with pytest.raises(ConfigError, match=r"^scores.device=cuda but this machine sees 0 CUDA "
                                          r"GPU\(s\); use scores.device=auto or cpu$"):
        scores_job.validate(cfg)
    cfg = compose_study("scores", [*TINY, "scores.device=tpu9"], tmp_path)
    with pytest.raises(ConfigError, match="scores.device=tpu9 is no torch device"):
        scores_job.validate(cfg)


@pytest.mark.parametrize("content", [b"garbage\n", b"PK\x03\x04" + b"\x00" * 40],
                         ids=["not-a-zip", "truncated-zip"])
def test_a_damaged_chunk_is_named_with_the_way_out(tmp_path, content):
    folder = tmp_path / "chunks"
    folder.mkdir()
    (folder / "chunk_0000.npz").write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_chunks(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{folder / 'chunk_0000.npz'} is damaged (")
    assert msg.endswith("delete it and rerun: the job trains its models again")
    assert "allow_pickle" not in msg
