"""The W&B logger, offline: one history row per epoch on the epoch axis, the layer table and plots,
the summary. The run is read back from its ``.wandb`` transaction log (:func:`read_offline_run`)."""

from __future__ import annotations

import math

import pytest

wandb = pytest.importorskip("wandb")

from memorization.loggers.wandb_logger import TABLE_COLUMNS, WandbLogger  # noqa: E402
from tests.wandb_offline import read_offline_run, read_table  # noqa: E402

LAYERS = ["input", "fc1", "fc2"]


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _offline_wandb(tmp_path, monkeypatch):
    """Offline, quiet, and W&B's caches (tables are staged as artifacts) inside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    if wandb.run is not None:
        wandb.finish()
    yield
    if wandb.run is not None:
        wandb.finish()


def _layer_values(epoch: int) -> dict[str, float]:
    """The per-layer metrics' keys as LayerMetrics logs them (in its order: cosine before the
    input layer's polarization), values that encode (epoch, metric, split, depth)."""
    v = {}
    for d, layer in enumerate(LAYERS):
        if d:
            v[f"cosine/train/{layer}"] = epoch + 0.1 * d
            v[f"cosine/test/{layer}"] = epoch + 0.1 * d + 0.01
    for d, layer in enumerate(LAYERS):
        v[f"polarization/train/{layer}"] = epoch + 0.2 * d
        for split in ("train", "train_true", "test"):
            v[f"masc/{split}/{layer}"] = 0.5 + 0.1 * d
        v[f"masc/components/{layer}"] = 3.0 + d
    return v


def _log_three_epochs(logger: WandbLogger) -> None:
    """What Lightning logs over 3 epochs: two calls per epoch with its 0-based ``epoch``."""
    for e in range(3):
        logger.log_metrics({"train/loss": 1.0 / (e + 1), "train/acc": 0.3 * (e + 1),
                            "test/acc": 0.2 * (e + 1), "gap": 0.1, "epoch": e}, step=10 * e + 9)
        second = {"csr/test": 0.05 * e, "epoch": e}
        if e >= 1:
            second |= _layer_values(e + 1)
        logger.log_metrics(second, step=10 * e + 9)
    logger.log_metrics({"epochs_to_fit": 3})  # as RunReport.on_fit_end: no epoch


# -- tests --------------------------------------------------------------------------------------
def test_one_row_per_epoch_with_layer_table_and_plots(tmp_path):
    logger = WandbLogger(project="test", name="run", save_dir=tmp_path, mode="offline")
    logger.set_layers(LAYERS)
    logger.log_hyperparams({"noise": {"p": 0.2}})
    _log_three_epochs(logger)
    logger.finalize("success")
    wandb.finish()

    run = read_offline_run(tmp_path)
    rows = run["history"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["_step"] for r in rows] == [0, 1, 2]  # W&B's step counts rows
    for e, row in enumerate(rows, start=1):
        assert row["train/acc"] == pytest.approx(0.3 * e)  # the first call's keys ...
        assert row["csr/test"] == pytest.approx(0.05 * (e - 1))  # ... and the second's
        assert "trainer/global_step" not in row and "epochs_to_fit" not in row
    assert "cosine/train/fc1" not in rows[0] and "layers/table" not in rows[0]

    # the epoch axis: Lightning's "*" -> trainer/global_step, then ours, which replaces it
    globs = [(m.step_metric, m._control.overwrite) for m in run["metrics"] if m.glob_name == "*"]
    assert globs[-1] == ("epoch", True)
    assert any(m.name == "epoch" for m in run["metrics"])

    for e in (2, 3):
        row = rows[e - 1]
        assert row["cosine/train/fc2"] == pytest.approx(e + 0.2)  # flat keys stay
        columns, data = read_table(run, row["layers/table"])
        assert columns == TABLE_COLUMNS
        assert str(run["files"] / row["layers/table"]["path"]).startswith(
            str(run["files"] / "media" / "table"))
        expected = sorted(([k.split("/")[2], LAYERS.index(k.split("/")[2]), k.split("/")[0],
                            k.split("/")[1], v] for k, v in _layer_values(e).items()),
                          key=lambda r: (r[2], r[3], r[1]))
        assert [r[:4] for r in data] == [r[:4] for r in expected]
        assert [r[4] for r in data] == pytest.approx([r[4] for r in expected])

        # one line plot per metric family: its table under <key>_table, its chart in the config
        for metric in ("cosine", "polarization", "masc"):
            cols, points = read_table(run, row[f"layers/{metric}_table"])
            assert cols == ["step", "lineKey", "lineVal"]
            lines = {s for _, s, _ in points}
            assert lines == {"cosine": {"train", "test"}, "polarization": {"train"},
                             "masc": {"train", "train_true", "test"}}[metric]
        cosine = {(s, x): y for x, s, y in read_table(run, row["layers/cosine_table"])[1]}
        assert cosine[("test", 2)] == pytest.approx(e + 0.21)
        assert ("train", 0) not in cosine  # the input has no cosine
    charts = run["config"]["_wandb"]["visualize"]
    assert {"layers/cosine", "layers/polarization", "layers/masc"} <= set(charts)
    strings = charts["layers/masc"]["panel_config"]["stringSettings"]
    assert strings["title"] == "masc vs layer depth (epoch 3)"
    assert strings["xname"] == "layer depth: 0 input, 1 fc1, 2 fc2"

    assert run["summary"]["epochs_to_fit"] == 3  # the summary, not a history row
    assert run["config"]["noise"] == {"p": 0.2}


def test_log_without_epoch_and_log_summary_go_to_summary(tmp_path):
    logger = WandbLogger(project="test", save_dir=tmp_path, mode="offline")
    logger.log_metrics({"train/acc": 0.5, "epoch": 0})
    logger.log_metrics({"epochs_to_fit": 7})
    logger.log_summary({"final/test/acc": 0.9})
    logger.finalize("failed")  # flushes the open epoch also after a failure
    wandb.finish()

    run = read_offline_run(tmp_path)
    assert len(run["history"]) == 1 and run["history"][0]["epoch"] == 1
    assert "epochs_to_fit" not in run["history"][0]
    assert run["summary"]["epochs_to_fit"] == 7
    assert run["summary"]["final/test/acc"] == 0.9


def _table_depths(logger: WandbLogger, row: dict) -> dict[str, int]:
    table = logger._layer_charts(row, epoch=1)["layers/table"]
    return {r[0]: r[1] for r in table.data}


def test_set_layers_gives_depth_else_first_seen(tmp_path):
    row = {"cosine/train/fc2": 0.1, "cosine/train/fc1": 0.2, "polarization/train/input": 0.3,
           "gap": 0.0}
    logger = WandbLogger(project="test", save_dir=tmp_path, mode="offline")
    logger.set_layers(["input", "fc1", "fc2"])
    assert _table_depths(logger, row) == {"input": 0, "fc1": 1, "fc2": 2}
    unknown = {**row, "cosine/train/head": 0.4}
    assert _table_depths(logger, unknown)["head"] == 3  # after the named layers

    fresh = WandbLogger(project="test", save_dir=tmp_path, mode="offline")
    assert _table_depths(fresh, row) == {"fc2": 0, "fc1": 1, "input": 2}


def test_nan_values_stay_in_table_not_in_plot(tmp_path):
    logger = WandbLogger(project="test", save_dir=tmp_path, mode="offline")
    logger.set_layers(LAYERS)
    out = logger._layer_charts({"masc/train_true/fc1": math.nan, "masc/train/fc1": 0.5}, epoch=2)
    assert len(out["layers/table"].data) == 2
    assert {r[1] for r in out["layers/masc"].table.data} == {"train"}


def test_disabled_mode_does_not_crash(tmp_path):
    logger = WandbLogger(project="test", save_dir=tmp_path, mode="disabled")
    logger.set_layers(LAYERS)
    logger.log_hyperparams({"a": 1})
    _log_three_epochs(logger)
    logger.log_summary({"x": 1})
    logger.finalize("success")
    wandb.finish()
    assert not list(tmp_path.glob("wandb/*run-*"))


def test_lightning_fit_logs_one_row_per_epoch(tmp_path):
    """A real (tiny) fit: Lightning's own two calls per epoch become one row each."""
    import lightning as L
    import torch
    from torch import nn

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 2)

        def training_step(self, batch, _):
            loss = nn.functional.cross_entropy(self.fc1(batch[0]), batch[1])
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            self.log("test/acc", (self.fc1(batch[0]).argmax(1) == batch[1]).float().mean())

        def on_train_epoch_end(self):  # as LayerMetrics
            self.log_dict({"cosine/train/fc1": torch.tensor(0.1),
                           "polarization/train/input": torch.tensor(0.2)})

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    logger = WandbLogger(project="test", save_dir=tmp_path, mode="offline")
    logger.set_layers(["input", "fc1"])
    trainer = L.Trainer(max_epochs=3, logger=logger, accelerator="cpu", num_sanity_val_steps=0,
                        log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(Tiny(), loader, loader)
    wandb.finish()

    run = read_offline_run(tmp_path)
    assert [r["epoch"] for r in run["history"]] == [1, 2, 3]
    for row in run["history"]:
        assert {"test/acc", "train/loss", "cosine/train/fc1", "layers/table"} <= set(row)
        assert "trainer/global_step" not in row
    _, data = read_table(run, run["history"][-1]["layers/table"])
    assert [r[:4] for r in data] == [["fc1", 1, "cosine", "train"],
                                     ["input", 0, "polarization", "train"]]
