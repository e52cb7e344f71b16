"""The epoch-end driver of the metrics: one forward pass over the probe sets feeds every metric.

Every ``every_n_epochs`` epochs (and after the last one) it puts the network in eval mode and,
under no_grad, runs the probe sets through it with forward hooks on the probe layers, handing each
layer's tensors to the metrics that cover it (the protocol is in ``protocol.py``, the metrics are
the entries of the ``metrics`` config group, ``config.py``). The hooks are removed and the
training mode restored afterwards, also on an error. The probe sets are a fixed random subset of
``probe_size`` training samples (drawn once from ``probe_seed``) and the test set; under DDP every
rank takes its share (``idx[rank::world]``) and the metrics' sums are all-reduced, so the values
equal a single process's. Nothing leaves the device.

The pass: the training probe set, then every metric's ``fit`` (MASC fits its subspaces and scores
the outputs it kept), then the test set, then a second training pass only for the layers a metric
asks to revisit (MASC's layers whose outputs did not fit in its cache). Whole-model metrics (CSR)
run after it.

The input layer (probe layer 0, which has no weights) depends only on the data, which is fixed: its
values are computed at the first evaluation and reused afterwards.

Logged as ``<metric>/<split>/<layer>`` (``cosine/train/fc3``) and ``<metric>/<split>`` for
whole-model metrics (``csr/test``); each metric's module lists its keys.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import nn

from memorization.base.accel import full_precision
from memorization.base.distributed import rank_world
from memorization.base.errors import ConfigError
from memorization.base.io import say
from memorization.metrics.config import MetricsSuite, read_metrics_config
from memorization.metrics.protocol import Context, LayerMetric, ModelMetric, Probe, fixed_subset
from memorization.models.probes import capture


class LayerMetrics(Callback):
    """Computes and logs the epoch-end metrics; see the module docstring."""

    def __init__(self, config: dict | DictConfig | MetricsSuite | None = None):
        suite = config if isinstance(config, MetricsSuite) else read_metrics_config(config)
        self.cfg = suite.settings
        self.metrics = suite.build()
        self.probe: dict[str, torch.Tensor] = {}
        self.last: dict[str, float] = {}
        self.layer_names: list[str] = []
        # what metrics add to the run's report (metrics.json), e.g. MASC's per-class components;
        # the metrics update these dicts in place
        self.report_extras: dict[str, dict] = {}
        for m in self.metrics.values():
            self.report_extras |= m.extras
        self._static: dict[str, torch.Tensor] = {}  # the input layer's values, computed once
        self._bar: Tqdm | None = None  # progress of an evaluation, when the trainer shows one

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.cfg.enabled:
            return
        self.prepare(trainer.datamodule, pl_module.net, getattr(trainer, "loggers", []))

    def prepare(self, dm, net: nn.Module, loggers=()) -> None:
        """Draw the probe sets of ``dm``, tell ``loggers`` the layer order, set up the metrics
        for ``net``'s probe layers (what ``setup`` does; a stacked job calls it per replica)."""
        if not hasattr(dm, "splits") or not hasattr(net, "probe_layers"):
            raise ConfigError("metrics need the project's DataModule and a model with "
                              "probe_layers(); set metrics=none for other setups")
        layers = net.probe_layers()
        self.probe = {"train": fixed_subset(len(dm.splits["train"]), self.cfg.probe_size,
                                            self.cfg.probe_seed)}
        if self.cfg.test:
            self.probe["test"] = torch.arange(len(dm.splits["test"]))
        self._static = {}
        for logger in loggers:  # loggers charting against depth
            if hasattr(logger, "set_layers"):
                logger.set_layers([layer.name for layer in layers])
        for m in self.metrics.values():
            m.setup(dm, layers)

    def _due(self, trainer: L.Trainer) -> bool:
        return self.due(trainer.current_epoch + 1, trainer.should_stop, trainer.max_epochs)

    def due(self, epoch: int, stops: bool, max_epochs: int | None) -> bool:
        """Whether the metrics run at the end of ``epoch`` (counted from 1): every
        ``every_n_epochs`` epochs and at the run's last (it stops, or reaches ``max_epochs``).
        A stacked job asks it for each replica (memorization/jobs/stacked_callbacks.py)."""
        last = stops or (max_epochs is not None and epoch >= max_epochs)
        return epoch % self.cfg.every_n_epochs == 0 or last

    def _batches(self, dm, device: torch.device, split: str, idx: torch.Tensor,
                 batch_size: int | None = None):
        """This rank's share of ``idx`` in batches, on ``device`` (a no-op when data is there)."""
        rank, world = rank_world()
        ds = dm.splits[split]
        for b in idx[rank::world].split(batch_size or self.cfg.batch_size):
            yield {k: v.to(device, non_blocking=True) for k, v in ds[b].items()}
            if self._bar is not None:
                self._bar.update(1)

    # -- the epoch end ---------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.cfg.enabled or trainer.sanity_checking or not self._due(trainer):
            return
        bar = trainer.progress_bar_callback
        if trainer.is_global_zero and bar is not None and bar.is_enabled:
            # the training bar stands still meanwhile: tens of seconds on a big probe set
            self._bar = Tqdm(total=None, desc=f"layer metrics, epoch {trainer.current_epoch + 1}",
                             unit="batch", position=1, leave=False, dynamic_ncols=True,
                             file=sys.stdout)
        try:
            logs = self.compute(trainer.datamodule, pl_module.net)
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        self.last = {k: float(v) for k, v in logs.items()}
        pl_module.log_dict({k: v.float() for k, v in logs.items()}, sync_dist=False)

    def compute(self, dm, net: nn.Module) -> dict[str, torch.Tensor]:
        """All enabled metrics for ``net`` on ``dm``'s probe sets, as ``{name: scalar}``, in
        full float32 precision whatever the steps ran in (memorization/base/accel.py)."""
        with full_precision():
            return self._compute(dm, net)

    def _compute(self, dm, net: nn.Module) -> dict[str, torch.Tensor]:
        was_training = net.training
        net.eval()
        try:
            layers = net.probe_layers()
            self.layer_names = [layer.name for layer in layers]
            device = next(net.parameters()).device
            ctx = Context(layers=layers, num_classes=dm.cfg.num_classes,
                          probe_sizes={split: len(idx) for split, idx in self.probe.items()},
                          world=rank_world()[1], device=device,
                          batches=partial(self._batches, dm, device))
            logs = self._probe(net, ctx)
            for m in self.metrics.values():
                if isinstance(m, ModelMetric):
                    m.begin(ctx)
                    logs |= m.compute(net, dm)
        finally:
            net.train(was_training)
        return logs

    def _probe(self, net: nn.Module, ctx: Context) -> dict[str, torch.Tensor]:
        metrics = [m for m in self.metrics.values() if isinstance(m, LayerMetric)]
        if not metrics:
            return {}
        layers = ctx.layers
        # the input layer depends on the data only: its values from the first evaluation stand
        inputs = {layers[0].name} if layers and layers[0].weight is None else set()
        skip = inputs if self._static else set()
        covered = {m: {layer.name for layer in layers
                       if layer.name not in skip and m.covers(layer)} for m in metrics}

        def fed(split: str) -> dict[LayerMetric, set[str]]:
            return {m: names for m, names in covered.items() if split in m.splits}

        for m in metrics:
            m.begin(ctx)
        logs: dict[str, torch.Tensor] = {}
        with torch.no_grad(), capture(net, inputs=any(m.needs_pre for m in metrics)) as store:
            self._feed(net, ctx, store, "train", fed("train"), lambda m, p: m.update("train", p))
            for m in metrics:
                logs |= m.fit()
            if "test" in self.probe:
                self._feed(net, ctx, store, "test", fed("test"), lambda m, p: m.update("test", p))
            again = {m: covered[m] & m.layers_to_revisit() for m in metrics}
            if any(again.values()):  # e.g. MASC's layers beyond its cache: a second pass
                self._feed(net, ctx, store, "train", again, lambda m, p: m.revisit(p))
        for m in metrics:
            logs |= m.compute()
        if not self._static:
            self._static = {key: v for key, v in logs.items()
                            if key.rsplit("/", 1)[-1] in inputs}
        return {**logs, **self._static}

    def _feed(self, net: nn.Module, ctx: Context, store: dict, split: str,
              users: dict[LayerMetric, set[str]], call: Callable[[LayerMetric, Probe], None]
              ) -> None:
        """One pass over a probe set: each batch's layer tensors to the metrics using them."""
        for batch in ctx.batches(split, self.probe[split]):
            net(batch["x"])
            for layer in ctx.layers:
                receivers = [m for m, names in users.items() if layer.name in names]
                if receivers:
                    probe = Probe(layer, store["out"][layer.name], store["in"].get(layer.name),
                                  store["pre"].get(layer.name), batch)
                    for m in receivers:
                        call(m, probe)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        # what the run's report takes from the metrics (MASC's per-class components) and the
        # last values: a run resumed from the checkpoint of its last epoch evaluates nothing
        return {"report_extras": copy.deepcopy(self.report_extras), "last": dict(self.last),
                "layer_names": list(self.layer_names)}

    def load_state_dict(self, state_dict: dict) -> None:
        for key, value in (state_dict.get("report_extras") or {}).items():
            mine = self.report_extras.get(key)
            if isinstance(mine, dict) and isinstance(value, dict):
                mine.clear()  # in place: the metrics hold these dicts
                mine.update(value)
        self.last = dict(state_dict.get("last") or {})
        self.layer_names = list(state_dict.get("layer_names") or [])

    # -- the end ---------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.last:
            self._print_table()

    @rank_zero_only
    def _print_table(self) -> None:
        say(format_layer_table(self.last, self.layer_names))


def format_layer_table(values: dict[str, float], layers: list[str] | None = None) -> str:
    """The last logged ``<metric>/<split>/<layer>`` values: one row per metric, one column per
    layer (in ``layers`` order when given); other values listed below."""
    rows: dict[str, dict[str, float]] = {}
    order: list[str] = list(layers or [])
    scalars = {}
    for key, v in values.items():
        parts = key.split("/")
        if len(parts) != 3:
            scalars[key] = v
            continue
        metric, split, layer = parts
        rows.setdefault(f"{metric}/{split}", {})[layer] = v
        if layer not in order:
            order.append(layer)
    cols = [c for c in order if any(c in r for r in rows.values())]
    head = max([len(r) for r in rows] + [6])
    width = max([len(c) for c in cols] + [6])
    lines = ["", "=== per-layer metrics (last evaluation) ==="]
    if rows:
        lines.append(f"{'':<{head}}" + "".join(f" {c:>{width}}" for c in cols))
        for name, vals in rows.items():
            cells = "".join(f" {vals[c]:>{width}.3f}" if c in vals else " " * (width + 1)
                            for c in cols)
            lines.append(f"{name:<{head}}{cells}")
    lines += [f"{k}: {v:.3f}" for k, v in scalars.items()]
    return "\n".join(lines) + "\n"
