"""What makes each replica of a stacked job its own run: its folder, loggers, stop rule,
epoch-end metrics and report.

Replica k's folder ``<job>/replicas/<k>/`` holds what a single run's holds: ``config_resolved.yaml``
(the single run it stands for: its seeds, ``trainer.replicas: 1``), ``corruption.npz``,
``history.csv`` (and a W&B run of its own in the sweep's group, CSV logs when configured),
``metrics.json`` (the single run's keys, plus ``replica``), and ``model.pt``, its final weights
(a state_dict of the network). The job folder keeps the job's own files: its config, the
checkpoint of all replicas, and a ``metrics.json`` listing the replicas, written once all are
done, so a rerun skips or resumes the whole job.

At every epoch end, for each replica still training: its values of the epoch; the stop rule on
its ``train/acc`` (it stops updating from the next epoch on, and its history ends there, as a
single run's would); the per-layer metrics when due (every ``metrics.every_n_epochs`` epochs, at
its last epoch), on its own network and probe sets; all of it logged to its loggers.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from memorization.base.io import atomic_path, pct, say, write_json_atomic
from memorization.engine.callbacks import (
    LogConfig,
    StopAtTrainAccuracy,
    log_ends,
    run_summary,
    save_record,
)
from memorization.metrics.callback import LayerMetrics

_pct = partial(pct, none="-", width=5)  # summary lines: "-" for a missing value

REPLICAS = "replicas"  # the replicas' folders inside the job's


def replica_folder(job: Path, k: int) -> Path:
    return Path(job) / REPLICAS / str(k)


class Replicas(Callback):
    """See the module docstring. ``configs[k]``: replica k's resolved config; ``loggers[k]``:
    its loggers (rank zero); ``metrics[k]``: its LayerMetrics (or None); ``seeds[k]``: its
    training seed; ``stop``: the stop rule's (threshold, monitor), None without one (then,
    as for a single run, no epochs_to_fit either)."""

    per_replica_stop = True  # the progress bar shows the rule (memorization/engine/callbacks.py)

    def __init__(self, job: Path, configs: list[dict], loggers: list[list],
                 metrics: list[LayerMetrics | None], seeds: list[int],
                 stop: tuple[float | None, str] | None = (1.0, "train/acc"),
                 print_summary: bool = True, previous: Path | None = None):
        self.job, self.configs, self.loggers, self.metrics = Path(job), configs, loggers, metrics
        self.seeds, self.stop, self.print_summary = seeds, stop, print_summary
        self.threshold, self.monitor = stop if stop is not None else (None, "train/acc")
        self.previous = previous  # the job folder a checkpoint from elsewhere came from
        self.S = len(configs)
        self.folders = [replica_folder(self.job, k) for k in range(self.S)]
        self.epochs = [0] * self.S  # epochs each replica trained
        # the single run's stop rule, one per replica (None without a rule: then, as for a
        # single run, no epochs_to_fit either)
        self.rules = [StopAtTrainAccuracy(self.threshold, self.monitor) if stop is not None
                      else None for _ in range(self.S)]
        self.final: list[dict] = [{} for _ in range(self.S)]
        self.summaries: list[dict] | None = None
        self.summary: dict | None = None  # the job's

    @property
    def epochs_to_fit(self) -> list[int | None]:
        return [None if r is None else r.epochs_to_fit for r in self.rules]

    # -- set-up --------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        for k in range(self.S):
            if self.metrics[k] is not None and self.metrics[k].cfg.enabled:
                self.metrics[k].prepare(dm.dms[k], pl_module.net_of(k), self.loggers[k])
        if not trainer.is_global_zero:
            return
        for k, folder in enumerate(self.folders):
            LogConfig.write(self.configs[k], folder, self.loggers[k])
            record = dm.dms[k].record
            if record is not None:
                save_record(record, folder, self.loggers[k])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if bool(pl_module.stopped.all()):  # resumed from the checkpoint of the last epoch
            trainer.should_stop = True
        for k in range(self.S):
            previous = (replica_folder(self.previous, k) / "history.csv"
                        if self.previous is not None else None)
            for logger in self.loggers[k]:
                if hasattr(logger, "begin"):  # a resumed job keeps the epochs it trained
                    logger.begin(self.epochs[k] if bool(pl_module.stopped[k])
                                 else trainer.current_epoch, previous=previous)

    # -- epoch ends ----------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        for k in range(self.S):
            if bool(pl_module.stopped[k]):
                continue
            logs = dict(pl_module.replica_logs[k])
            rule = self.rules[k]
            stops = rule is not None and rule.check(logs.get(self.monitor), epoch + 1)
            lm = self.metrics[k]
            if lm is not None and lm.cfg.enabled and lm.due(epoch + 1, stops, trainer.max_epochs):
                values = lm.compute(trainer.datamodule.dms[k], pl_module.net_of(k))
                logs |= values
            # float32, as a single run logs them (so its metrics.json holds the same numbers)
            floats = {key: float(torch.as_tensor(v).float()) for key, v in logs.items()}
            self.final[k] |= floats
            self.epochs[k] = epoch + 1
            if trainer.is_global_zero:
                for logger in self.loggers[k]:
                    logger.log_metrics({**floats, "epoch": epoch}, step=trainer.global_step)
                    logger.save()  # (the trainer saves only its own loggers: CSV's file)
            if stops:
                pl_module.stopped[k] = True
        if bool(pl_module.stopped.all()):
            trainer.should_stop = True

    # -- the end -------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module, "success")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == TrainerFn.FITTING:
            self._finish(trainer, pl_module, "success")
        elif trainer.is_global_zero:
            for loggers in self.loggers:
                for logger in loggers:
                    _close(logger, "failed")

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str) -> None:
        interrupted = bool(trainer.interrupted)
        self.summaries = []
        for k in range(self.S):
            extras = {"replica": {"index": k, "of": self.S, "job": str(self.job)}}
            if self.metrics[k] is not None:
                extras |= self.metrics[k].report_extras
            self.summaries.append(run_summary(
                epochs=self.epochs[k],
                stop=self.stop and (self.threshold, self.epochs_to_fit[k]),
                final=self.final[k], record=trainer.datamodule.dms[k].record,
                interrupted=interrupted, torch_seed=self.seeds[k], extras=extras))
        self.summary = {
            "replicas": self.S,
            "epochs": trainer.current_epoch,
            "interrupted": interrupted,
            "runs": [{"folder": str(f.relative_to(self.job)), "epochs": s["epochs"],
                      "epochs_to_fit": s["epochs_to_fit"],
                      "train/acc": s["final"].get("train/acc"),
                      "test/acc": s["final"].get("test/acc")}
                     for f, s in zip(self.folders, self.summaries, strict=True)],
        }
        if not trainer.is_global_zero:
            return
        for k, s in enumerate(self.summaries):
            log_ends(self.loggers[k], s)
            for logger in self.loggers[k]:
                _close(logger, status)
            with atomic_path(self.folders[k] / "model.pt") as tmp:
                torch.save(pl_module.net_of(k).state_dict(), tmp)
            write_json_atomic(self.folders[k] / "metrics.json", s)
        write_json_atomic(self.job / "metrics.json", self.summary)
        if self.print_summary:
            say(format_replicas(self.summaries, self.configs, self.job))

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "epochs_to_fit": self.epochs_to_fit, "final": self.final,
                "metrics": [m.state_dict() if m is not None else {} for m in self.metrics]}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = list(state.get("epochs", self.epochs))
        for rule, fit in zip(self.rules, state.get("epochs_to_fit") or [], strict=False):
            if rule is not None:
                rule.epochs_to_fit = fit
        self.final = [dict(f) for f in state.get("final", self.final)]
        for m, saved in zip(self.metrics, state.get("metrics") or [], strict=False):
            if m is not None:
                m.load_state_dict(saved)


def _close(logger, status: str) -> None:
    if hasattr(logger, "close"):
        logger.close(status)
    else:
        logger.finalize(status)


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) \
        if len(values) > 1 else 0.0
    return f"{mean:.3g} ± {sd:.2g}"


def format_replicas(summaries: list[dict], configs: list[dict], job: Path) -> str:
    """One row per replica, then the mean ± sd over the replicas."""
    lines = ["", f"=== memorization: {len(summaries)} replicas trained at once ===",
             f"{'replica':>7} {'seed':>5} {'noise.seed':>10} {'corrupted':>9} {'epochs':>6} "
             f"{'fit at':>6} {'train acc':>9} {'test acc':>8} {'memorized':>9}"]
    for k, (s, c) in enumerate(zip(summaries, configs, strict=True)):
        f = s["final"]
        n = (s.get("corruption") or {}).get("n_corrupted")
        lines.append(f"{k:>7} {str(c.get('seed')):>5} {str((c.get('noise') or {}).get('seed')):>10}"
                     f" {'-' if n is None else n:>9} {s['epochs']:>6} "
                     f"{str(s['epochs_to_fit'] or '-'):>6} "
                     f"{_pct(f.get('train/acc')):>9} {_pct(f.get('test/acc')):>8} "
                     f"{_pct(f.get('train/acc_corrupted')):>9}")
    fits = [s["epochs_to_fit"] for s in summaries if s["epochs_to_fit"] is not None]
    tests = [s["final"]["test/acc"] for s in summaries
             if s["final"].get("test/acc") is not None]
    lines.append(f"mean ± sd: test acc {_spread(tests)}; epochs to fit {_spread(fits)} "
                 f"({len(fits)} of {len(summaries)} fit)")
    lines.append(f"outputs: {Path(job) / REPLICAS}/<replica>/")
    return "\n".join(lines) + "\n"
