"""history.csv: every logged value per epoch, appended as the job runs, whatever the logger."""

from __future__ import annotations

import csv
import math

import pytest

from memorization.cli.run import train
from memorization.loggers.history import HistoryLogger, parse_key, read_history
from tests.conftest import compose_config


@pytest.mark.parametrize("key, parsed", [
    ("train/loss", ("loss", "train", "")),
    ("train/acc_corrupted_true", ("acc_corrupted_true", "train", "")),
    ("val/acc", ("acc", "val", "")),
    ("test/acc_best", ("acc_best", "test", "")),
    ("gap", ("gap", "", "")),
    ("csr/test", ("csr", "test", "")),
    ("cosine/train/fc3", ("cosine", "train", "fc3")),
    ("masc_true/train_true/input", ("masc_true", "train_true", "input")),
    ("masc/components/fc1", ("masc", "components", "fc1")),
])
def test_parse_key(key, parsed):
    assert parse_key(key) == parsed


def _log(logger, epoch0: int, **values):
    """What Lightning passes: the 0-based epoch among the values."""
    logger.log_metrics({**values, "epoch": epoch0}, step=10 * epoch0)


def test_rows_are_appended_per_call_with_epochs_counted_from_one(tmp_path):
    h = HistoryLogger(tmp_path)
    h.set_layers(["input", "fc1", "fc2"])
    _log(h, 0, **{"train/loss": 0.5, "test/acc": 0.25, "gap": 0.125})
    _log(h, 0, **{"cosine/train/fc2": 0.75, "polarization/train/input": 1.0, "csr/test": 0.0})
    _log(h, 1, **{"train/loss": float("nan")})
    h.log_metrics({"epochs_to_fit": 2})  # at the end of fit: no epoch of its own
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines == [
        "epoch,split,layer,depth,metric,value",
        "1,train,,,loss,0.5", "1,test,,,acc,0.25", "1,,,,gap,0.125",
        "1,train,fc2,2,cosine,0.75", "1,train,input,0,polarization,1.0", "1,test,,,csr,0.0",
        "2,train,,,loss,nan", "2,,,,epochs_to_fit,2.0",
    ]
    df = read_history(tmp_path / "history.csv")
    assert list(df.columns) == ["epoch", "split", "layer", "depth", "metric", "value"]
    assert df["layer"].tolist()[3:5] == ["fc2", "input"] and df["split"].iloc[2] == ""
    assert df["depth"].iloc[3] == 2 and math.isnan(df["depth"].iloc[0])
    assert math.isnan(df["value"].iloc[6]) and df["value"].iloc[0] == 0.5


def test_full_precision_and_a_cut_last_line_is_dropped(tmp_path):
    h = HistoryLogger(tmp_path)
    v = 0.1 + 0.2  # 0.30000000000000004: repr keeps every digit
    _log(h, 0, **{"test/acc": v, "train/acc": 1 / 3})
    path = tmp_path / "history.csv"
    with open(path, "a") as f:
        f.write("1,train,,,lo")  # a write cut off midway
    df = read_history(path)
    assert df["value"].tolist() == [v, 1 / 3]


def test_a_new_process_keeps_earlier_epochs_and_drops_the_rest(tmp_path):
    first = HistoryLogger(tmp_path)
    for e in range(4):
        _log(first, e, **{"train/loss": float(e)})
    # resumed from a checkpoint at the end of epoch 2: epochs 3 and 4 are logged again
    resumed = HistoryLogger(tmp_path)
    _log(resumed, 2, **{"train/loss": 20.0})
    df = read_history(tmp_path / "history.csv")
    assert df["epoch"].tolist() == [1, 2, 3] and df["value"].tolist() == [0.0, 1.0, 20.0]
    # a fresh run in the same folder starts a fresh file
    _log(HistoryLogger(tmp_path), 0, **{"train/loss": 7.0})
    assert read_history(tmp_path / "history.csv")["value"].tolist() == [7.0]


def test_history_equals_what_the_csv_logger_logged(tmp_path):
    """A real job (CSV and history loggers side by side): the same values for every key and
    epoch, the per-layer rows with the model's depths, also at the metrics' epochs only."""
    cfg = compose_config(["data=synthetic", "logger=csv", "trainer.enable_progress_bar=false",
                          "trainer.accelerator=cpu", "trainer.max_epochs=4",
                          "stop_at_train_acc=null", "metrics.every_n_epochs=2"],
                         output_dir=tmp_path)
    train(cfg)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        logged = {}
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("epoch", "step") and value != "":
                    logged[(int(row["epoch"]) + 1, parse_key(key))] = float(value)
    hist = read_history(tmp_path / "history.csv")
    ours = {(r.epoch, (r.metric, r.split, r.layer)): r.value for r in hist.itertuples()}
    assert set(ours) == set(logged)
    for k, v in logged.items():
        assert ours[k] == pytest.approx(v, rel=1e-6, nan_ok=True), k
    layers = hist[hist["layer"] != ""]
    assert sorted(layers["epoch"].unique()) == [2, 4]
    depth = dict(zip(layers["layer"], layers["depth"], strict=False))
    assert depth == {"input": 0, "fc1": 1, "fc2": 2, "fc3": 3}


def test_written_without_any_logger(make_cfg, tmp_path):
    train(make_cfg("trainer.max_epochs=2", "stop_at_train_acc=null", "metrics=none"))
    hist = read_history(tmp_path / "history.csv")
    assert sorted(hist["epoch"].unique()) == [1, 2]
    assert {"loss", "acc", "acc_true", "acc_clean", "acc_best", "gap"} <= set(hist["metric"])


def _run(out, *overrides):
    cfg = compose_config(["data=synthetic", "logger=none", "trainer.enable_progress_bar=false",
                          "trainer.accelerator=cpu", "stop_at_train_acc=null", "metrics=none",
                          *overrides], output_dir=out)
    train(cfg)
    return read_history(out / "history.csv")


def _epochs(hist) -> list[int]:
    train_loss = (hist["metric"] == "loss") & (hist["split"] == "train")
    return sorted(hist.loc[train_loss, "epoch"].tolist())


def test_a_resumed_job_has_its_whole_history(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = _run(a, "trainer.max_epochs=3")
    ckpt = a / "checkpoints" / "last.ckpt"
    # resumed into another folder: the checkpoint's epochs come from its run's history
    hist = _run(b, "trainer.max_epochs=5", f"ckpt_path={ckpt}")
    assert _epochs(hist) == [1, 2, 3, 4, 5]
    assert hist[hist["epoch"] <= 3]["value"].tolist() == first["value"].tolist()
    # resumed in its own folder, with nothing left to train: the history stays
    again = _run(a, "trainer.max_epochs=3", f"ckpt_path={ckpt}")
    assert _epochs(again) == [1, 2, 3]
    # a fresh run in a used folder starts a fresh history, even if its first row is epoch 2
    fresh = _run(a, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=2", "resume=false")
    assert set(fresh["epoch"]) == {2}
