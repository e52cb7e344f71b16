"""Jobs that lose nothing: epoch checkpoints (atomic), a stop on a diverged loss, FAILED markers,
skip and resume on a rerun, every job of a sweep checked first, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from memorization.base.errors import ConfigError, TrainingDiverged
from memorization.engine.checkpoint import DivergenceGuard, EpochCheckpoint
from memorization.jobs.folder import job_state
from memorization.loggers.history import read_history
from tests.conftest import run_cli

QUICK = ["data=synthetic", "logger=none", "trainer.accelerator=cpu", "metrics=none",
         "trainer.enable_progress_bar=false"]


def test_divergence_guard_names_epoch_step_and_last_finite_loss():
    guard = DivergenceGuard()
    trainer = SimpleNamespace(global_step=0, current_epoch=2)
    for step, loss in enumerate([1.5, 0.25]):
        trainer.global_step = step + 1
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, step)
    trainer.global_step = 3
    with pytest.raises(TrainingDiverged) as err:
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("inf"))}, None, 2)
    assert str(err.value).startswith(
        "the training loss became inf at epoch 3, step 3 (last finite loss 0.25)")


def _feed(guard: DivergenceGuard, losses: list[float]) -> None:
    trainer = SimpleNamespace(global_step=0, current_epoch=0)
    for step, loss in enumerate(losses):
        trainer.global_step = step + 1
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, step)


def test_divergence_guard_bounds_the_loss_by_its_first_step():
    """max_ratio=1e6 with a first loss of 2: 1.9e6 is still a (bad) run, 2.1e6 is divergence;
    None: only a non-finite loss stops it; a bound below 1 is refused."""
    _feed(DivergenceGuard(max_ratio=1e6), [2.0, 3.0, 1.9e6])
    with pytest.raises(TrainingDiverged) as err:
        _feed(DivergenceGuard(max_ratio=1e6), [2.0, 3.0, 2.1e6])
    assert str(err.value).startswith("the training loss rose to 2.1e+06 at epoch 1, step 3, "
                                     "over callbacks.divergence.max_ratio=1e+06 times its "
                                     "first step's 2:")
    _feed(DivergenceGuard(max_ratio=None), [2.0, 1e30])
    with pytest.raises(TrainingDiverged):
        _feed(DivergenceGuard(max_ratio=None), [2.0, float("nan")])
    with pytest.raises(ConfigError, match="callbacks.divergence.max_ratio=0.5 must be"):
        DivergenceGuard(max_ratio=0.5)


def test_checkpoint_replaces_last_ckpt_only_when_complete(tmp_path):
    cb = EpochCheckpoint(tmp_path / "checkpoints")
    (tmp_path / "checkpoints").mkdir()
    cb.path.write_bytes(b"the previous, complete checkpoint")

    def full_disk(path):
        Path(path).write_bytes(b"half a checkp")
        raise OSError(28, "No space left on device")

    trainer = SimpleNamespace(fast_dev_run=False, sanity_checking=False, global_step=5,
                              is_global_zero=True, save_checkpoint=full_disk)
    with pytest.raises(OSError, match="No space"):
        cb._save(trainer)
    assert cb.path.read_bytes() == b"the previous, complete checkpoint"
    assert [p.name for p in cb.path.parent.iterdir()] == ["last.ckpt"]  # no temporary left
    trainer.save_checkpoint = lambda path: Path(path).write_bytes(b"new")
    trainer.global_step = 6
    cb._save(trainer)
    assert cb.path.read_bytes() == b"new"


def test_nan_loss_stops_the_job_in_one_line_and_marks_it_failed(tmp_path):
    out = tmp_path / "run"
    res = run_cli([*QUICK, "optim=sgd", "optim.lr=1e30", "trainer.max_epochs=50",
                   f"hydra.run.dir={out}"], cwd=tmp_path)
    assert res.returncode == 1
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "the training loss became nan at epoch 1, step" in err[0]
    assert "last finite loss" in err[0]
    assert not (out / "metrics.json").exists() and job_state(out) == "failed"
    assert (out / "FAILED").read_text().startswith("the training loss became nan at epoch 1")


@pytest.mark.slow
def test_sweep_keeps_going_past_a_failed_job_and_reports_it(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", *QUICK, "optim=sgd", "optim.lr=1e30,0.01", "trainer.max_epochs=2",
                   "stop_at_train_acc=null", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert res.returncode == 1  # a job failed
    assert (sweep / "0" / "FAILED").is_file() and not (sweep / "0" / "metrics.json").exists()
    assert json.loads((sweep / "1" / "metrics.json").read_text())["epochs"] == 2
    lines = res.stdout.splitlines()
    assert "sweep: 1 finished, 1 failed" in lines
    assert f"  failed: {sweep / '0'}: the training loss became nan at epoch 1, step " \
        in res.stdout
    assert "1 failed" in res.stdout.split("sweep: 1 finished")[1]  # the report's head line


@pytest.mark.slow
def test_rerun_of_a_finished_sweep_trains_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *QUICK, "noise.p=0,0.4", "trainer.max_epochs=2", "stop_at_train_acc=null",
            f"hydra.sweep.dir={sweep}"]
    assert run_cli(args, cwd=tmp_path).returncode == 0
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    ckpts = {p: p.stat().st_mtime_ns for p in sweep.glob("*/checkpoints/last.ckpt")}
    res = run_cli(args, cwd=tmp_path)
    assert res.returncode == 0
    assert res.stdout.count("skip ") == 2 and "sweep: 2 skipped" in res.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts  # nothing trained


def test_a_bad_value_in_any_job_fails_the_sweep_before_anything_runs(tmp_path):
    for name, values in (("a", "0.2,1.5"), ("b", "1.5,0.2")):
        sweep = tmp_path / name
        res = run_cli(["-m", *QUICK, f"noise.p={values}", f"hydra.sweep.dir={sweep}"],
                      cwd=tmp_path)
        assert res.returncode == 2
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and "noise.p=1.5 must be a number in [0, 1]" in err[0]
        assert "nothing was run" in err[0]
        assert not list(sweep.glob("*/metrics.json")) and not list(sweep.glob("*/FAILED"))


@pytest.mark.slow
def test_damaged_and_foreign_checkpoints_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(1000))
    res = run_cli([*QUICK, f"ckpt_path={garbage}", f"hydra.run.dir={tmp_path / 'a'}"],
                  cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(
        f"error: ckpt_path={garbage} is not a checkpoint that can be read")
    wide = tmp_path / "wide"
    assert run_cli([*QUICK, "trainer.max_epochs=1", f"hydra.run.dir={wide}"],
                   cwd=tmp_path).returncode == 0
    res = run_cli([*QUICK, "model.width=64", f"ckpt_path={wide / 'checkpoints/last.ckpt'}",
                   f"hydra.run.dir={tmp_path / 'b'}"], cwd=tmp_path)
    assert res.returncode == 2
    line = res.stderr.strip().splitlines()[-1]
    assert "holds another network" in line and "[512, 16]" in line and "[64, 16]" in line


def test_cfg_job_runs_the_checks_of_a_run(tmp_path):
    res = run_cli(["noise.p=2", "--cfg", "job"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == ("error: noise.p=2 must be a number in [0, 1]: the probability "
                                  "that a training sample is corrupted")
    ok = run_cli(["noise.p=0.3", "--cfg", "job"], cwd=tmp_path, timeout=120)
    assert ok.returncode == 0 and "p: 0.3" in ok.stdout


@pytest.mark.slow
def test_killed_job_resumes_to_identical_metrics_and_one_history(tmp_path):
    """SIGKILL after an epoch's checkpoint, the same command again: it resumes in its folder,
    continues its W&B run and history, and ends exactly where an uninterrupted run ends."""
    args = ["trainer.max_epochs=8", "stop_at_train_acc=null", "metrics.every_n_epochs=1",
            "metrics.probe_size=300", "metrics.csr.n=50", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", "model.dropout=0.2"]  # dropout: the RNG too
    straight = tmp_path / "straight"
    assert run_cli([*args, f"hydra.run.dir={straight}"], cwd=tmp_path).returncode == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "memorization.run", *args,
                             f"hydra.run.dir={killed}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        hist = killed / "history.csv"
        if (killed / "checkpoints/last.ckpt").is_file() and hist.is_file() and \
                read_history(hist)["epoch"].max() >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the job ended before it could be killed"
    assert job_state(killed) == "resumable"
    res = run_cli([*args, f"hydra.run.dir={killed}"], cwd=tmp_path)
    assert res.returncode == 0 and f"resuming {killed}" in res.stdout
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["final"] == a["final"] and b["epochs"] == a["epochs"] == 8
    ha, hb = read_history(straight / "history.csv"), read_history(killed / "history.csv")
    assert hb[["epoch", "split", "layer", "metric"]].equals(ha[["epoch", "split", "layer",
                                                                "metric"]])
    assert (hb["value"].fillna(-1) == ha["value"].fillna(-1)).all()
    runs = sorted((killed / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1  # one run id


def test_unwritable_output_folder_and_wandb_without_key_are_one_line_errors(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    res = run_cli([*QUICK, f"hydra.run.dir={blocker / 'run'}"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"error: the output folder {blocker / 'run'} cannot be made "
                                  f"there ({blocker} is not a writable folder); choose another "
                                  "with hydra.run.dir=...")
    res = run_cli(["data=synthetic", "logger=wandb", "logger.wandb.mode=online",
                   f"hydra.run.dir={tmp_path / 'w'}"], cwd=tmp_path, timeout=120,
                  env={"WANDB_MODE": "", "HOME": str(tmp_path), "WANDB_API_KEY": ""})
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "error: logger.wandb.mode=online but no W&B API key is set here: run `wandb login`")


def test_starting_over_leaves_nothing_of_the_old_run_to_resume(tmp_path):
    from memorization.jobs.folder import LAST, clear_markers

    for name in ("metrics.json", "FAILED", "wandb/run_id", str(LAST),
                 f"checkpoints/.last.ckpt.{os.getpid()}.tmp", "history.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("old")
    clear_markers(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["history.csv"]  # the history is cut by the new run itself
    assert job_state(tmp_path) == "new"


@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused_in_one_line(tmp_path):
    out = tmp_path / "job"
    base = [*QUICK, "trainer.max_epochs=1", f"hydra.run.dir={out}"]
    assert run_cli([*base, "noise.p=0.2"], cwd=tmp_path).returncode == 0
    res = run_cli([*base, "noise.p=0.4", "optim.lr=0.01"], cwd=tmp_path)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0] == (
        f"error: {out} holds a run with other settings (noise.p: 0.2 -> 0.4; optim.lr: 0.001 -> "
        "0.01): resume=false starts it over there, or choose another folder (hydra.run.dir, or "
        "hydra.sweep.dir for -m)")
    assert json.loads((out / "metrics.json").read_text())["corruption"]["p"] == 0.2  # intact
    # more epochs is no other run: the finished job is skipped, with the way to train it on
    res = run_cli([*base[:-2], "trainer.max_epochs=3", f"hydra.run.dir={out}", "noise.p=0.2"],
                  cwd=tmp_path)
    assert res.returncode == 0 and f"ckpt_path={out / 'checkpoints/last.ckpt'} trains it on" \
        in res.stdout


@pytest.mark.slow
def test_a_job_uses_its_own_wandb_service(tmp_path):
    """wandb exports WANDB_SERVICE so children share their parent's service; a job killed with
    kill -9 would leave its run registered there and its rerun refused. A job ignores an
    inherited service (here a token no service answers to: W&B would fail on it)."""
    env = {"WANDB_SERVICE": "1-999999-tcp-localhost-1"}
    res = run_cli(["trainer.max_epochs=1", "metrics=none", f"hydra.run.dir={tmp_path / 'job'}"],
                  cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "job" / "metrics.json").is_file()


def test_job_killed_after_its_last_checkpoint_trains_no_further_epoch(tmp_path):
    """Killed between the checkpoint of the epoch its stop rule ended it at and its results:
    the rerun trains no more and writes the results the first run would have."""
    from memorization.cli.run import train
    from tests.conftest import compose_config

    out = tmp_path / "job"
    overrides = ["logger=none", "trainer.enable_progress_bar=false", "data.train_size=300",
                 "data.batch_size=32", "model.width=64", "stop_at_train_acc=0.5",
                 "trainer.max_epochs=8", "metrics.every_n_epochs=3", "metrics.probe_size=100"]
    first = train(compose_config(overrides, output_dir=out))
    assert first["epochs"] == first["epochs_to_fit"] < 8
    history = (out / "history.csv").read_text()
    (out / "metrics.json").unlink()
    again = train(compose_config(overrides, output_dir=out))
    assert again == first and json.loads((out / "metrics.json").read_text()) == first
    assert (out / "history.csv").read_text() == history


def test_a_sweeps_job_folders_in_job_order(tmp_path):
    """Numbered folders in number order (10 after 9), then named jobs (they hold .hydra/); a
    report, a hidden folder and a plain folder are no jobs."""
    from memorization.jobs.folder import sweep_job_folders

    for name in ("10", "9", "0", "report", ".hydra", "plain"):
        (tmp_path / name).mkdir()
    (tmp_path / "named" / ".hydra").mkdir(parents=True)
    (tmp_path / "multirun.yaml").write_text("{}")
    assert [p.name for p in sweep_job_folders(tmp_path)] == ["0", "9", "10", "named"]
    assert sweep_job_folders(tmp_path / "missing") == []
