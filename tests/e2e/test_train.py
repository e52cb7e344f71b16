"""End-to-end: the composed config trains, writes its run folder, stops, resumes, reproduces."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from memorization.cli.run import train
from memorization.engine.callbacks import format_summary
from memorization.noise import CorruptionRecord
from tests.conftest import compose_config


def test_fast_dev_run(make_cfg):
    summary = train(make_cfg("+trainer.fast_dev_run=true"))
    assert summary is not None and summary["final"]["train/loss"] is not None


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The default job (digits, label_flip p=0.2, MLP 3x512, Adam), CSV-logged."""
    out = tmp_path_factory.mktemp("digits")
    cfg = compose_config(["logger=csv", "trainer.enable_progress_bar=false",
                          "trainer.accelerator=cpu"], output_dir=out)
    return out, train(cfg)


def test_default_job_fits_digits_and_writes_its_folder(digits_run, capsys):
    out, summary = digits_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    final = summary["final"]
    # the stop rule: trained until the (noisy) training labels are fit, and no longer
    assert final["train/acc"] == 1.0
    assert summary["epochs_to_fit"] == summary["epochs"] < 500
    # memorization: the flipped labels are fit, so the true labels are not
    assert final["train/acc_corrupted"] == 1.0 and final["train/acc_corrupted_true"] == 0.0
    rec = CorruptionRecord.load(out / "corruption.npz")
    assert rec.hash == summary["corruption"]["hash"]
    frac = rec.n_corrupted / rec.n
    assert final["train/acc_true"] == pytest.approx(1 - frac, abs=1e-6)
    assert 0.5 < final["test/acc"] <= final["test/acc_best"] <= 1.0
    assert final["gap"] == pytest.approx(final["train/acc"] - final["test/acc"], abs=1e-6)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    resolved = (out / "config_resolved.yaml").read_text()
    assert "${" not in resolved and "noise:" in resolved


def test_default_job_logs_every_epoch(digits_run):
    out, summary = digits_run
    with open(out / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("test/acc")]
    assert len(rows) == summary["epochs"]
    for key in ("train/loss", "train/acc", "train/acc_true", "train/acc_clean",
                "train/acc_corrupted", "test/acc", "test/acc_best", "gap"):
        assert all(r[key] != "" for r in rows), key
    best = [float(r["test/acc_best"]) for r in rows]
    assert best == sorted(best)  # a running maximum
    assert best[-1] == pytest.approx(max(float(r["test/acc"]) for r in rows))


def test_summary_is_readable(digits_run):
    out, summary = digits_run
    text = format_summary(summary, out)
    assert "train acc, training labels" in text and "test acc" in text
    assert f"after {summary['epochs_to_fit']} epochs" in text
    assert "label_flip p=0.2" in text


def _final(tmp_path, name, *overrides):
    out = tmp_path / name
    cfg = compose_config(["data=synthetic", "logger=none", "trainer.enable_progress_bar=false",
                          "trainer.enable_model_summary=false", "trainer.accelerator=cpu",
                          *overrides], output_dir=out)
    return train(cfg), out


def test_same_seeds_same_record_and_metrics(tmp_path):
    a, out_a = _final(tmp_path, "a", "trainer.max_epochs=3", "stop_at_train_acc=null")
    b, out_b = _final(tmp_path, "b", "trainer.max_epochs=3", "stop_at_train_acc=null")
    assert a["corruption"]["hash"] == b["corruption"]["hash"]
    assert a["final"] == b["final"]
    c, _ = _final(tmp_path, "c", "trainer.max_epochs=3", "stop_at_train_acc=null", "seed=1")
    assert c["final"] != a["final"]  # the training seed matters...
    assert c["corruption"]["hash"] == a["corruption"]["hash"]  # ...but not to the noise


def test_without_stop_rule_trains_max_epochs(tmp_path):
    s, _ = _final(tmp_path, "a", "trainer.max_epochs=4", "stop_at_train_acc=null")
    assert s["epochs"] == 4 and s["epochs_to_fit"] is None


def test_resume_from_checkpoint_continues(tmp_path):
    first, out = _final(tmp_path, "a", "trainer.max_epochs=2", "stop_at_train_acc=null")
    ckpt = out / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["loops"]  # a full training state
    resumed, _ = _final(tmp_path, "b", "trainer.max_epochs=3", "stop_at_train_acc=null",
                        f"ckpt_path={ckpt}")
    assert resumed["epochs"] == 3
    straight, _ = _final(tmp_path, "c", "trainer.max_epochs=3", "stop_at_train_acc=null")
    assert resumed["final"]["train/acc"] == pytest.approx(straight["final"]["train/acc"])


def test_resume_with_other_noise_is_refused(tmp_path):
    _, out = _final(tmp_path, "a", "trainer.max_epochs=1", "stop_at_train_acc=null")
    with pytest.raises(ValueError, match="different corruption"):
        _final(tmp_path, "b", "trainer.max_epochs=2", "noise.seed=5",
               f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}")


def test_data_error_fails_before_any_logger_starts(tmp_path):
    """val_size is checked against the data in setup: before W&B creates a run folder."""
    out = tmp_path / "run"
    cfg = compose_config(["data=synthetic", "logger=wandb", "trainer.enable_progress_bar=false",
                          "trainer.accelerator=cpu", "data.val_size=500"], output_dir=out)
    with pytest.raises(ValueError, match="data.val_size=500"):
        train(cfg)
    assert not (out / "wandb").exists()


def test_progress_bar_shows_loss_accuracies_and_the_stop_rule():
    from types import SimpleNamespace

    from memorization.engine.callbacks import ProgressBar, StopAtTrainAccuracy

    trainer = SimpleNamespace(
        callback_metrics={"train/loss": torch.tensor(0.41234), "train/acc": torch.tensor(0.875),
                          "test/acc": torch.tensor(0.8012), "csr/test": torch.tensor(0.1)},
        callbacks=[StopAtTrainAccuracy(1.0)])
    bar = ProgressBar()
    assert bar.get_metrics(trainer, None) == {"stop at train": "100%"}  # before any epoch
    bar._refresh(trainer)  # at the end of an evaluation
    assert bar.get_metrics(trainer, None) == {
        "loss": "0.412", "train": "87.5%", "test": "80.1%", "stop at train": "100%"}
    trainer.callbacks = [StopAtTrainAccuracy(None)]
    assert "stop at train" not in bar.get_metrics(trainer, None)


def test_without_stop_rule_the_fit_is_still_recorded(tmp_path):
    """Theunissen's presets train on past the fit (stop_at_train_acc=null): when the training
    labels were first fit is still known, for the summary and the sweep report."""
    s, out = _final(tmp_path, "a", "trainer.max_epochs=3", "stop_at_train_acc=null", "noise.p=0")
    assert s["epochs"] == 3 and s["epochs_to_fit"] == 1
    assert format_summary(s).splitlines()[3] == (
        "trained 3 epochs; fit (train acc >= 1) after 1 epochs (no stop rule)")


def test_ctrl_c_leaves_a_summary_marked_interrupted(tmp_path, monkeypatch, capsys):
    """Ctrl-C during epoch 3: metrics.json holds the last finished epoch's values and says the
    run was interrupted (the sweep report lists it so), and the terminal says so too."""
    from memorization.engine.module import Classifier

    original = Classifier.on_train_epoch_start

    def interrupt_in_epoch_3(self):
        if self.current_epoch == 2:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Classifier, "on_train_epoch_start", interrupt_in_epoch_3)
    with pytest.raises(SystemExit):  # Lightning's answer to a KeyboardInterrupt
        _final(tmp_path, "a", "trainer.max_epochs=5", "stop_at_train_acc=null", "metrics=none")
    s = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert s["interrupted"] is True and s["epochs"] == 2
    assert s["final"]["train/loss"] is not None
    assert "interrupted (Ctrl-C)" in capsys.readouterr().out
