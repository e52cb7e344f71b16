"""The stage as part of a job: called by the entry point after the fit (or, for a job whose fit
finished in an earlier attempt, after loading its trained weights from ``last.ckpt``); writes
``relabel.npz`` and, through the run report, ``metrics.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from memorization.base.io import atomic_path, say
from memorization.config.relabel import RelabelConfig
from memorization.engine.callbacks import format_summary
from memorization.jobs.relabel.masc_layers import LABELLINGS
from memorization.jobs.relabel.stage import format_relabel, log_relabel, report_node, run_relabel

LABELS_FILE = "relabel.npz"


def load_trained(module: torch.nn.Module, ckpt: str | Path) -> None:
    """The weights of a finished fit, from its checkpoint (torch's weights-only loader)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])


def run_stage(cfg: RelabelConfig, *, trainer, module, dm, report, init_state: dict | None,
              seed: int, summary: dict | None = None) -> dict:
    """Run the stage for a fitted job (in one process: rank zero
    under DDP) and complete its report: the ``relabel`` node in
    metrics.json, its numbers to the loggers, the relabeled training labels in
    ``relabel.npz`` (``masc``, ``masc_true``, ``train_labels``, ``true_labels``: one entry per
    training sample, in the data module's order), and a table on the screen. ``summary``: the
    fit's report from an earlier attempt (fit.json); by default the report's own."""
    if summary is not None:  # a job whose fit finished before: its report, its data set up
        say(format_summary(summary, report.folder(trainer)))
        dm.prepare_data()
        dm.setup("fit")
    result = run_relabel(cfg, module.net, dm, module.optim, module.loss_fn,
                         init_state=init_state, device=trainer.strategy.root_device, seed=seed)
    node = report_node(result)
    train = dm.splits["train"].tensors
    arrays = {lab: result[lab]["relabeled"] for lab in LABELLINGS}
    arrays |= {"train_labels": train["y"], "true_labels": train["y_true"]}
    with atomic_path(report.folder(trainer) / LABELS_FILE, suffix=".npz") as tmp:
        np.savez(tmp, **{k: v.cpu().numpy() for k, v in arrays.items()})
    log_relabel(trainer.loggers, node)
    say(format_relabel(node))
    report.complete(trainer, {"relabel": node}, summary)
    return report.summary
