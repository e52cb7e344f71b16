"""A W&B logger whose run reads like the papers' figures: metrics against epochs and against depth.

The run holds

- **one history row per epoch**, ``epoch`` (epochs completed, 1 after the first epoch, as in
  ``history.csv``) the x axis of every key (``define_metric("*", step_metric="epoch")``).
  Lightning logs about twice an epoch (after the evaluation, after the epoch-end metrics); the
  values of one epoch are buffered and written as one ``run.log`` when a later epoch's values
  arrive or the logger is finalized (also after a failure). Without ``step=``, W&B's own step
  just counts rows; ``trainer/global_step`` is not logged.
- **the per-layer values against depth**, in every row that holds ``metric/split/layer`` keys:
  ``layers/table``, a table with columns ``layer, depth, metric, split, value`` (sorted by
  metric, split, depth), and ``layers/<metric>`` (``layers/cosine``, ``layers/masc``, ...), a line
  plot of value against depth with one line per split (MASC's ``components`` only in the table).
  ``depth`` is the layer's index among the probe layers (0: the input), as given by
  :meth:`WandbLogger.set_layers`; layers it did not name get the next indices in the order they
  are first seen. The flat keys (``cosine/train/fc1``) stay in the row for their history.
- **the summary**: W&B's last values, plus what is logged outside an epoch (a ``log_metrics``
  call without ``epoch``, e.g. ``epochs_to_fit`` at the end of fit) and :meth:`log_summary`.
- the config, as Lightning's logger logs it (:meth:`log_hyperparams`).

Constructor and configs are Lightning's ``WandbLogger``'s (``project``, ``group``, ``name``,
``tags``, ``mode``, ``save_dir``, ``log_model``, ...). With ``mode="disabled"`` all is a no-op.
"""

from __future__ import annotations

import math
import os
import secrets
import string
from collections.abc import Mapping
from numbers import Number
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _add_prefix
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from memorization.base.errors import ConfigError, first_line
from memorization.base.io import say, write_text_atomic
from memorization.loggers.history import parse_key

TABLE_KEY = "layers/table"
TABLE_COLUMNS = ["layer", "depth", "metric", "split", "value"]
SPLIT_ORDER = ("train", "train_true", "val", "test")  # the order of a plot's lines
NOT_PLOTTED = {"components"}  # splits kept in the table only
_SKIP = {"step", "trainer/global_step"}  # Lightning's bookkeeping, not values of the run
_MAX_XNAME = 200  # longer layer lists: names in the table only


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with one row per epoch, the epoch axis and the layer charts;
    see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # wandb 0.31 warns whenever it is passed
            self._wandb_init.pop("anonymous", None)
        if ("settings" not in self._wandb_init
                and not {"WANDB_SILENT", "WANDB_QUIET"} & set(os.environ)):
            # W&B's own banner is a dozen lines a run; one line of ours says where the run is
            import wandb

            self._wandb_init["settings"] = wandb.Settings(silent=True)
        self._id_file = Path(self._save_dir or ".") / "wandb" / "run_id"
        if self._wandb_init.get("id") is None:
            # one W&B run per job folder: a job resumed in its folder continues its run
            alphabet = string.ascii_lowercase + string.digits  # what W&B's own ids use
            self._wandb_init["id"] = (self._id_file.read_text().strip()
                                      if self._id_file.is_file() else
                                      "".join(secrets.choice(alphabet) for _ in range(8)))
            # (Lightning already asks W&B to resume="allow" a run of that id)
        self.depth: dict[str, int] = {}
        self._row: dict[str, Any] = {}
        self._row_epoch: int | None = None
        self._axes_defined = False

    @property
    @rank_zero_experiment
    def experiment(self):
        try:
            if self._experiment is None and self._wandb_init.get("reinit") == "create_new":
                # a run of its own beside others in this process (a stacked job's replicas);
                # Lightning's logger would reuse the run already open
                import wandb

                self._experiment = wandb.init(**self._wandb_init)
            run = super().experiment
        except Exception as e:  # no key, no network, a bad setting: one line, what to do
            mode = self._wandb_init.get("mode") or os.environ.get("WANDB_MODE", "online")
            raise ConfigError(
                f"W&B could not start a run in {mode} mode ({first_line(e)[:160]}); run "
                "`wandb login` and check the network, or use logger.wandb.mode=offline "
                "(logger=none: no W&B)") from e
        if not self._axes_defined and not self._is_disabled(run):
            self._axes_defined = True
            if not self._id_file.is_file():
                write_text_atomic(self._id_file, str(run.id))
            where = getattr(run.settings, "sync_dir", None)
            mode = getattr(run.settings, "mode", "")
            if mode == "offline" and where:
                say(f"W&B: offline run in {where} (upload: wandb sync {where})")
            elif getattr(run, "url", None):
                say(f"W&B: {run.url}")
            # replaces Lightning's "*" -> trainer/global_step: the glob's definition is
            # keyed by its name and overwrite=True drops the earlier one's fields
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch", overwrite=True)
        return run

    @rank_zero_only
    def close(self, status: str = "success") -> None:
        """Finalize, and finish the run when it is one of several in this process (a
        stacked job's replica; a single job's run is finished by the entry point)."""
        self.finalize(status)
        if self._experiment is not None and self._wandb_init.get("reinit") == "create_new":
            if not self._is_disabled(self._experiment):
                self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None

    @staticmethod
    def _is_disabled(run: Any) -> bool:
        from wandb.sdk.lib import RunDisabled

        return isinstance(run, RunDisabled) or bool(getattr(run, "disabled", False))

    def set_layers(self, names: list[str]) -> None:
        """The probe layers in order (input first): their index is the layer's ``depth``."""
        self.depth = {n: i for i, n in enumerate(names)}

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = {k: v for k, v in metrics.items() if k not in _SKIP}
        if "epoch" not in metrics:  # outside an epoch: numbers to the summary, media to a row
            numbers = {k: v for k, v in metrics.items() if _is_number(v)}
            media = {k: v for k, v in metrics.items() if k not in numbers}
            self.log_summary(_add_prefix(numbers, self._prefix, self.LOGGER_JOIN_CHAR))
            if media and self._row_epoch is not None:
                self._row.update(_add_prefix(media, self._prefix, self.LOGGER_JOIN_CHAR))
            elif media and not self._is_disabled(self.experiment):
                self.experiment.log(_add_prefix(media, self._prefix, self.LOGGER_JOIN_CHAR))
            return
        epoch = int(metrics.pop("epoch")) + 1  # Lightning's is 0-based: epochs completed
        if self._row_epoch is not None and epoch != self._row_epoch:
            self._flush()
        self._row_epoch = epoch
        self._row.update(_add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR))

    @rank_zero_only
    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Final values (``epochs_to_fit``, ...) into the run's summary, not its history."""
        if values and not self._is_disabled(self.experiment):
            self.experiment.summary.update(dict(values))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        try:
            self._flush()
        except Exception as err:
            if status == "success":
                raise
            rank_zero_warn(f"W&B: the last epoch's values were not logged: {err!r}")
        super().finalize(status)

    def _flush(self) -> None:
        """Writes the buffered epoch as one history row."""
        if self._row_epoch is None:
            return
        row, epoch = self._row, self._row_epoch
        self._row, self._row_epoch = {}, None
        run = self.experiment
        if self._is_disabled(run):
            return
        run.log({"epoch": epoch, **row, **self._layer_charts(row, epoch)})

    def _layer_charts(self, row: Mapping[str, Any], epoch: int) -> dict[str, Any]:
        """``layers/table`` and one ``layers/<metric>`` plot per metric with per-layer values."""
        entries = []  # (metric, split, depth, layer, value)
        for key, value in row.items():
            metric, split, layer = parse_key(key)
            if layer and _is_number(value):
                depth = self.depth.setdefault(layer, len(self.depth))
                entries.append((metric, split, depth, layer, float(value)))
        if not entries:
            return {}
        import wandb

        entries.sort(key=lambda e: e[:3])
        out: dict[str, Any] = {TABLE_KEY: wandb.Table(
            columns=TABLE_COLUMNS, data=[[la, d, m, s, v] for m, s, d, la, v in entries])}
        for metric in dict.fromkeys(m for m, *_ in entries):
            lines: dict[str, list[tuple[int, float]]] = {}
            for m, s, d, _, v in entries:
                if m == metric and s not in NOT_PLOTTED and math.isfinite(v):
                    lines.setdefault(s, []).append((d, v))
            if not lines:
                continue
            splits = sorted(lines, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER
                                                  else len(SPLIT_ORDER), s))
            names = {d: la for m, s, d, la, _ in entries if m == metric and s in lines}
            xname = "layer depth: " + ", ".join(f"{d} {n}" for d, n in sorted(names.items()))
            if len(xname) > _MAX_XNAME:
                xname = f"layer depth (layer names: {TABLE_KEY})"
            out[f"layers/{metric}"] = wandb.plot.line_series(
                xs=[[d for d, _ in lines[s]] for s in splits],
                ys=[[v for _, v in lines[s]] for s in splits],
                keys=splits, title=f"{metric} vs layer depth (epoch {epoch})", xname=xname)
        return out
