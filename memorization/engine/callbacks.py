"""Callbacks: the stop rule, and the run report (corruption record, metrics.json, summary)."""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from memorization.base.io import pct, say, write_json_atomic, write_text_atomic
from memorization.engine.checkpoint import FIT

_pct = partial(pct, none="-", width=5)  # summary lines: "-" for a missing value


class StopAtTrainAccuracy(Callback):
    """Stop once accuracy on the training labels reaches ``threshold``; remember when.

    ``epochs_to_fit`` is the number of epochs trained when ``monitor`` first reached the threshold
    (None while it has not). ``threshold: null`` disables the rule (train for max_epochs), and
    ``epochs_to_fit`` is then when the training labels were first fit entirely (accuracy 1).
    The threshold's range is checked once, with the config's other top-level keys (RunConfig).
    """

    def __init__(self, threshold: float | None = 1.0, monitor: str = "train/acc"):
        self.threshold, self.monitor = threshold, monitor
        self.epochs_to_fit: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.threshold is not None and self.epochs_to_fit is not None:
            # resumed from the checkpoint of the epoch it fit at (killed before its results
            # were written): that epoch ended the run
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if self.threshold is None and self.epochs_to_fit is not None:
            return  # nothing left to watch: no host sync
        if self.check(trainer.callback_metrics.get(self.monitor), trainer.current_epoch + 1):
            trainer.should_stop = True

    def check(self, value, epoch: int) -> bool:
        """The rule on the monitored ``value`` of ``epoch`` (counted from 1): remembers the
        first epoch it fit at; True when the run stops there. A stacked job calls it for each
        replica (memorization/jobs/stacked_callbacks.py)."""
        target = 1.0 if self.threshold is None else self.threshold
        # the tolerance keeps 1.0 reachable despite float rounding of hits / n
        if value is None or float(value) < target - 1e-9:
            return False
        if self.epochs_to_fit is None:
            self.epochs_to_fit = epoch
        return self.threshold is not None

    def state_dict(self) -> dict:
        return {"epochs_to_fit": self.epochs_to_fit}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs_to_fit = state_dict.get("epochs_to_fit")


class ProgressBar(TQDMProgressBar):
    """The training bar, one line a run: ``epoch 12/500`` with the training loss and the train
    and test accuracy of the last evaluation, and the stop rule (``fit at train acc 100%``);
    the per-epoch evaluation passes (fast, full-batch) get no bar of their own."""

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}{total}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._refresh(trainer)
        super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._refresh(trainer)
        super().on_train_epoch_end(trainer, pl_module)

    def _refresh(self, trainer: L.Trainer) -> None:
        """The shown values, read once an epoch: the bar redraws every step, and reading a
        tensor on a GPU there would stall the device each time."""
        m = trainer.callback_metrics
        shown = {"loss": "train/loss", "train": "train/acc", "test": "test/acc", "val": "val/acc"}
        self._shown: dict[str, str] = {}
        for name, key in shown.items():
            if key in m:
                v = float(m[key])
                self._shown[name] = f"{v:.3f}" if name == "loss" else f"{100 * v:.1f}%"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        out = dict(getattr(self, "_shown", {}))
        # a single run's rule, or a stacked job's per-replica one (memorization/jobs/)
        stop = next((c for c in trainer.callbacks if isinstance(c, StopAtTrainAccuracy)
                     or getattr(c, "per_replica_stop", False)), None)
        if stop is not None and stop.threshold is not None:
            out["stop at train"] = f"{100 * stop.threshold:g}%"
        return out


def _clean(v):
    """JSON-safe: tensors to floats, NaN/inf to null."""
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class LogConfig(Callback):
    """Logs the resolved config to every logger, and saves it as ``config_resolved.yaml`` in the
    run folder, once the data module is set up (so a data error fails before a W&B run starts)."""

    def __init__(self, config: dict, output_dir: str | None = None):
        self.config = config
        self.output_dir = output_dir

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        self.write(self.config, Path(self.output_dir or trainer.default_root_dir),
                   trainer.loggers)
        say(format_settings(self.config, trainer, pl_module))

    @staticmethod
    def write(config: dict, folder: Path, loggers: list) -> None:
        """``config`` to each of ``loggers`` and to ``folder``/config_resolved.yaml: a run's, or
        each replica's of a stacked job (memorization/jobs/stacked_callbacks.py)."""
        import yaml

        for logger in loggers:
            logger.log_hyperparams(config)
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "config_resolved.yaml", yaml.safe_dump(config, sort_keys=False))


class RunReport(Callback):
    """Saves the run's artifacts into its folder and prints a readable summary at the end.

    - at setup: ``corruption.npz`` (the corruption record), also logged to every logger
      (its summary as hyperparameters; the file as a W&B artifact);
    - at the end of fit: ``metrics.json`` with the final epoch's values, ``epochs_to_fit``, the
      corruption summary, and a summary table on stdout. A crashed run writes no metrics.json.

    With ``stage_pending`` (a stage runs after the fit: memorization/jobs/relabel/), the end of fit
    writes ``fit.json`` instead, and :meth:`complete` writes ``metrics.json`` once the stage is
    done, so a job killed in between is not taken for finished (memorization/jobs/folder.py).
    """

    def __init__(self, output_dir: str | None = None, print_summary: bool = True):
        self.output_dir = Path(output_dir) if output_dir else None
        self.print_summary = print_summary
        self.summary: dict | None = None
        self.stage_pending = False
        self._trainer: L.Trainer | None = None
        self._final: dict[str, float] = {}  # the last logged values, from a checkpoint

    def folder(self, trainer: L.Trainer) -> Path:
        return self.output_dir or Path(trainer.default_root_dir)

    _dir = folder

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        record = getattr(trainer.datamodule, "record", None)
        if record is None or not trainer.is_global_zero:
            return
        save_record(record, self._dir(trainer), trainer.loggers)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # histories keep the epochs already done (a resumed run) and drop any later rows
        ckpt = trainer.ckpt_path
        previous = Path(ckpt).parent.parent / "history.csv" if ckpt else None
        for logger in trainer.loggers:
            if hasattr(logger, "begin"):
                logger.begin(trainer.current_epoch, previous=previous)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stop = next((c for c in trainer.callbacks if isinstance(c, StopAtTrainAccuracy)), None)
        extras: dict = {}
        for cb in trainer.callbacks:  # e.g. the per-class MASC components of LayerMetrics
            extras |= getattr(cb, "report_extras", None) or {}
        self.summary = run_summary(
            epochs=trainer.current_epoch, stop=stop and (stop.threshold, stop.epochs_to_fit),
            # what this process logged over the last values of a resumed run's checkpoint
            final={**self._final, **trainer.callback_metrics},
            record=getattr(trainer.datamodule, "record", None),
            interrupted=bool(trainer.interrupted),
            torch_seed=torch.initial_seed(),  # the training seed, also when seed=null
            extras=extras)
        log_ends(trainer.loggers, self.summary)
        self._write(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        # Ctrl-C: Lightning stops without on_fit_end; say so, in metrics.json and on the screen
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == TrainerFn.FITTING:
            self.on_fit_end(trainer, pl_module)

    def state_dict(self) -> dict:
        # the values logged so far, saved with the checkpoint of each epoch: a run resumed
        # from the epoch that ended it trains no further epoch and reports these
        # (tensors as they are: no host sync per value; _clean makes them numbers at the end)
        metrics = self._trainer.callback_metrics if self._trainer is not None else {}
        return {"final": {**self._final, **{k: v.detach() for k, v in metrics.items()}}}

    def load_state_dict(self, state_dict: dict) -> None:
        self._final = dict(state_dict.get("final") or {})

    @rank_zero_only
    def _write(self, trainer: L.Trainer) -> None:
        out = self._dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        pending = self.stage_pending and not self.summary["interrupted"]
        write_json_atomic(out / (FIT if pending else "metrics.json"), self.summary)
        if self.print_summary:
            say(format_summary(self.summary, out))

    @rank_zero_only
    def complete(self, trainer: L.Trainer, extra: dict, summary: dict | None = None) -> None:
        """After the stage: the fit's summary (``summary``, read back from fit.json by a later
        attempt; by default this run's) with ``extra`` as ``metrics.json``; fit.json goes."""
        self.summary = {**(summary if summary is not None else self.summary or {}), **extra}
        out = self._dir(trainer)
        write_json_atomic(out / "metrics.json", self.summary)
        (out / FIT).unlink(missing_ok=True)


def run_summary(epochs: int, stop: tuple[float | None, int | None] | None, final: dict,
                record, interrupted: bool, torch_seed: int, extras: dict) -> dict:
    """What a run's metrics.json holds: ``epochs`` completed, the stop rule's (threshold,
    epochs_to_fit) (None: no rule), the ``final`` logged values, the corruption summary, the
    training seed, the job's threads, and ``extras`` (e.g. MASC's per-class components)."""
    threshold, fit = stop if stop else (None, None)
    return {
        "epochs": epochs,
        "epochs_to_fit": fit,
        "stop_at_train_acc": threshold,
        "final": {k: _clean(v) for k, v in sorted(final.items())},
        "corruption": record.summary() if record is not None else None,
        "interrupted": interrupted,
        "torch_seed": torch_seed,
        "threads": torch.get_num_threads(),  # the job's share of the cores
        # the GPUs the job could see (a parallel sweep's worker: its own, launch.take_gpu)
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **extras,
    }


def log_ends(loggers, summary: dict) -> None:
    """A run's end values to its loggers: W&B's run summary; others, a last logged row."""
    ends = {"epochs": summary["epochs"]}
    if summary["epochs_to_fit"] is not None:
        ends["epochs_to_fit"] = summary["epochs_to_fit"]
    if summary["corruption"] is not None:
        ends["n_corrupted"] = summary["corruption"]["n_corrupted"]
    for logger in loggers:
        if hasattr(logger, "log_summary"):
            logger.log_summary(ends)
        elif "epochs_to_fit" in ends:
            logger.log_metrics({"epochs_to_fit": ends["epochs_to_fit"]})


def save_record(record, folder: Path, loggers) -> Path:
    """``corruption.npz`` in ``folder``; its summary to every logger (W&B: also the file, as
    an artifact)."""
    path = record.save(Path(folder) / "corruption.npz")
    for logger in loggers:
        logger.log_hyperparams({"corruption": record.summary()})
        if type(logger).__name__ == "WandbLogger":
            import wandb

            art = wandb.Artifact(f"corruption-{record.hash[:16]}", type="corruption",
                                 metadata=record.summary())
            art.add_file(str(path))
            logger.experiment.log_artifact(art)
    return path


def format_settings(config: dict, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """The run's settings in two lines, printed before training."""
    data, noise, model, optim = (config.get(k) or {} for k in ("data", "noise", "model", "optim"))
    splits = getattr(trainer.datamodule, "splits", {}) or {}
    sizes = ", ".join(f"{len(v)} {k}" for k, v in splits.items())
    record = getattr(trainer.datamodule, "record", None)
    corrupted = f" ({record.n_corrupted} corrupted)" if record is not None else ""
    n_params = sum(p.numel() for p in getattr(pl_module, "net", pl_module).parameters())
    net = str(model.get("_target_", "?")).rsplit(".", 1)[-1]
    shape = (f" {model['depth']}x{model['width']}" if isinstance(model.get("width"), int)
             and "depth" in model else "")
    opt = str(optim.get("_target_", "?")).rsplit(".", 1)[-1]
    schedule = (optim.get("scheduler") or {}).get("_target_")
    if schedule:
        opt += f" ({str(schedule).rsplit('.', 1)[-1]})"
    stop = config.get("stop_at_train_acc")
    until = (f"until train acc {stop:g} or {trainer.max_epochs} epochs" if stop is not None
             else f"{trainer.max_epochs} epochs")
    return "\n".join([
        f"data {data.get('source')} ({sizes}; {data.get('num_classes')} classes) · noise "
        f"{noise.get('name')} p={noise.get('p')} seed={noise.get('seed')}{corrupted}",
        f"model {net}{shape} ({n_params:,} parameters) · {opt} "
        f"lr={optim.get('lr')} · batch {data.get('batch_size')} · seed={config.get('seed')} · "
        f"{until}",
    ])



def format_summary(s: dict, out: Path | None = None) -> str:
    f, c = s["final"], s.get("corruption")
    lines = ["", "=== memorization: run summary ==="]
    if c:
        frac = _pct(c["fraction_corrupted"]).strip()
        lines.append(f"noise {c['noise']} p={c['p']:g} seed={c['seed']}: {c['n_corrupted']} of "
                     f"{c['n_train']} training samples corrupted ({frac})")
    target = s.get("stop_at_train_acc")
    fit = (f"fit (train acc >= {target if target is not None else 1:g}) after "
           f"{s['epochs_to_fit']} epochs" if s.get("epochs_to_fit") else
           f"did not reach train acc {target if target is not None else 1:g}")
    if target is None:
        fit += " (no stop rule)"
    lines.append(f"trained {s['epochs']} epoch{'s' if s['epochs'] != 1 else ''}; {fit}")
    if s.get("interrupted"):
        lines.append("interrupted (Ctrl-C): the values below are the last finished epoch's")
    rows = [
        ("train acc, training labels", f.get("train/acc")),
        ("train acc, true labels", f.get("train/acc_true")),
        ("  clean subset", f.get("train/acc_clean")),
        ("  corrupted subset, training labels (memorized)", f.get("train/acc_corrupted")),
        ("  corrupted subset, true labels", f.get("train/acc_corrupted_true")),
        ("validation acc", f.get("val/acc")),
        ("test acc", f.get("test/acc")),
        ("best test acc", f.get("test/acc_best")),
        ("generalization gap (train - test)", f.get("gap")),
    ]
    width = max(len(r[0]) for r in rows)
    lines += [f"  {name:<{width}}  {_pct(v)}" for name, v in rows
              if v is not None or not name.startswith("validation")]
    if out is not None:
        lines.append(f"outputs: {out}")
    return "\n".join(lines) + "\n"
