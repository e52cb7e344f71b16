"""The epoch-end driver of the per-layer metrics: cosine, polarization, MASC, CSR.

Every ``every_n_epochs`` epochs (and after the last one) it puts the network in eval mode and,
under no_grad, runs the probe sets through it with forward hooks on the probe layers feeding every
metric's accumulator; the hooks are removed and the training mode restored afterwards, also on an
error. The probe sets are a fixed random subset of ``probe_size`` training samples (drawn once from
``probe_seed``) and the test set; under DDP every rank takes its share and the metrics' sums are
all-reduced, so the values equal a single process's. Nothing leaves the device.

One forward pass over the probe sets, the training one first. Its batches feed cosine (from the
layer's own pre-activation, no extra product), polarization and the MASC Gram matrices of both
labellings (the rows where the two agree, the clean samples, multiplied once). MASC needs its
subspaces before it can score a sample, so the layers' outputs on the training probe set are kept
on the device (up to ``masc.max_cache_gb`` over all layers), the subspaces are fitted after the
training set, the kept outputs scored, and the test batches scored as they pass. Layers whose
outputs were not kept get a second pass over the training probe set.

The input layer (probe layer 0, which has no weights) depends only on the data, which is fixed: its
polarization and MASC values are computed at the first evaluation and reused afterwards.

CSR runs its own batched Langevin search with input gradients on ``csr.n`` samples.

Logged as ``<metric>/<split>/<layer>``: ``cosine/train/fc3``, ``dead/train/fc3``,
``polarization/train/fc3``, ``masc/train/fc3`` (MASC fitted on the training labels, accuracy on the
training labels), ``masc/train_true/fc3`` (same subspaces, accuracy on the true labels),
``masc/test/fc3``, ``masc/components/fc3`` (mean components per class), the same under
``masc_true/`` for subspaces fitted on the true labels, and ``csr/test``.
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import nn

from memorization.distributed import rank_world
from memorization.errors import ConfigError, check_all
from memorization.io import say
from memorization.metrics.cosine import MeanCosine, has_cosine, layer_cosine_sums
from memorization.metrics.csr import (
    PAPER_ALPHA,
    PAPER_BETA,
    PAPER_PIXEL_SCALE,
    PAPER_R,
    CriticalSampleRatio,
    to_input_units,
)
from memorization.metrics.masc import (
    MASCSamples,
    MASCSubspaces,
    flat_bases,
    gram_bytes,
    masc_predict,
)
from memorization.metrics.polarization import Polarization
from memorization.metrics.subset_accuracy import SubsetAccuracy
from memorization.models.probes import capture


@dataclass
class CosineConfig:
    enabled: bool = True


@dataclass
class PolarizationConfig:
    enabled: bool = True
    labels: str = "train"  # class of a sample: its training label, or "true"


@dataclass
class MASCConfig:
    enabled: bool = True
    variance: float = 0.99  # explained variance kept per class subspace
    # "gram": K Gram matrices (D x D) per layer, summed over batches; "samples": keep the probed
    # outputs (N x D) and eigendecompose per-class n_k x n_k kernels; "auto": samples when classes
    # have fewer probed samples than the layer has units and they fit in max_gram_gb, else gram
    method: str = "auto"
    max_gram_gb: float = 2.0  # memory allowed per layer and labelling, either route
    # the Gram route's layer outputs on the training probe set are kept on the device, up to this
    # much over all layers, and scored from there; layers beyond it get a second forward pass
    max_cache_gb: float = 1.0
    # probe layers to fit, by name or glob pattern (e.g. [input, flatten, "fc*"], the layers the
    # MASC paper probes in its CNNs); null: every probe layer
    layers: list[str] | None = None


@dataclass
class CSRConfig:
    enabled: bool = True
    n: int = 1000  # samples searched, a fixed subset of `split`
    split: str = "test"  # or "train"
    # Arpit et al.: alpha 0.25, beta 0.2, box r 0.3, on the 0-255 pixel scale
    alpha: float = PAPER_ALPHA
    beta: float = PAPER_BETA
    r: float = PAPER_R
    pixel_scale: float = PAPER_PIXEL_SCALE  # alpha, beta, r are in units of 1/pixel_scale
    max_iter: int = 20
    seed: int = 0
    batch_size: int = 500


@dataclass
class MetricsConfig:
    enabled: bool = True
    every_n_epochs: int = 5
    probe_size: int | None = 10000  # training samples probed; null: all of them
    probe_seed: int = 0
    batch_size: int = 1024
    test: bool = True  # probe the test set as well
    cosine: CosineConfig = field(default_factory=CosineConfig)
    polarization: PolarizationConfig = field(default_factory=PolarizationConfig)
    masc: MASCConfig = field(default_factory=MASCConfig)
    csr: CSRConfig = field(default_factory=CSRConfig)

    @classmethod
    def from_dict(cls, d: dict | None) -> MetricsConfig:
        d = dict(d or {})
        nested = {"cosine": CosineConfig, "polarization": PolarizationConfig,
                  "masc": MASCConfig, "csr": CSRConfig}
        for name, kind in nested.items():
            d[name] = kind(**(d.get(name) or {}))
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        checks = [
            (self.every_n_epochs >= 1,
             f"metrics.every_n_epochs={self.every_n_epochs} must be >= 1"),
            (self.probe_size is None or self.probe_size >= 1,
             f"metrics.probe_size={self.probe_size} must be >= 1 or null (all training samples)"),
            (self.batch_size >= 1, f"metrics.batch_size={self.batch_size} must be >= 1"),
            (self.polarization.labels in ("train", "true"),
             f"metrics.polarization.labels={self.polarization.labels!r} must be train or true"),
            (0 < self.masc.variance <= 1,
             f"metrics.masc.variance={self.masc.variance} must be in (0, 1]"),
            (min(self.masc.max_gram_gb, self.masc.max_cache_gb) >= 0,
             "metrics.masc.max_gram_gb and max_cache_gb must be >= 0"),
            (self.masc.method in ("auto", "gram", "samples"),
             f"metrics.masc.method={self.masc.method!r} must be auto, gram or samples"),
            (self.csr.split in ("train", "test"),
             f"metrics.csr.split={self.csr.split!r} must be train or test"),
            (self.csr.n >= 1, f"metrics.csr.n={self.csr.n} must be >= 1"),
            (self.csr.max_iter >= 1, f"metrics.csr.max_iter={self.csr.max_iter} must be >= 1"),
            (min(self.csr.alpha, self.csr.beta, self.csr.r) >= 0,
             "metrics.csr.alpha, beta and r must be >= 0"),
            (self.csr.pixel_scale > 0,
             f"metrics.csr.pixel_scale={self.csr.pixel_scale} must be > 0"),
        ]
        check_all(checks)


class _MASCFit(nn.Module):
    """MASC subspaces of one layer under both labellings, training labels (``masc``) and true
    labels (``masc_true``), by the Gram or the sample route; with ``keep``, also the layer's
    outputs on this rank's training probe batches, scored later without another forward pass."""

    def __init__(self, method: str, num_classes: int, dim: int, variance: float, budget: int,
                 keep: bool):
        super().__init__()
        self.method = method
        if method == "samples":  # holds the outputs anyway
            self.fitter = MASCSamples(num_classes, variance)
        else:
            self.fitter = MASCSubspaces(num_classes, dim, variance=variance, max_bytes=budget,
                                        labellings=2)
        self.kept: list[torch.Tensor] | None = [] if keep or method == "samples" else None
        self.labels: list[torch.Tensor] = []

    def update(self, out: torch.Tensor, y: torch.Tensor, y_true: torch.Tensor) -> None:
        labels = torch.stack([y, y_true], dim=1)
        if self.kept is None or self.method == "samples":
            self.fitter.update(out, labels)
        if self.kept is not None:
            self.kept.append(out)
            self.labels.append(labels)

    def fit(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self.method == "gram" and self.labels:
            # kept outputs: one Gram update over the whole probe set, whose per-class products
            # are far larger (and faster per row) than a batch's
            self.fitter.update(torch.cat(self.kept), torch.cat(self.labels))
            self.labels = []
        f = self.fitter
        with f.sync_context(dist_sync_fn=f.dist_sync_fn):  # one DDP sync for both labellings
            return {"masc": f.fit(0), "masc_true": f.fit(1)}


class LayerMetrics(Callback):
    """Computes and logs the per-layer metrics at epoch ends; see the module docstring."""

    def __init__(self, config: dict | MetricsConfig | None = None):
        self.cfg = config if isinstance(config, MetricsConfig) else MetricsConfig.from_dict(config)
        self.probe: dict[str, torch.Tensor] = {}
        self.last: dict[str, float] = {}
        self.layer_names: list[str] = []
        # per-class MASC components of the last evaluation, {"masc/fc1": [r_0, ..., r_K-1]};
        # RunReport puts it into metrics.json
        self.report_extras: dict[str, dict[str, list[int]]] = {"masc_components": {}}
        self._static: dict[str, torch.Tensor] = {}  # the input layer's values, computed once
        self._cache_left = 0
        self._bar: Tqdm | None = None  # progress of an evaluation, when the trainer shows one

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.cfg.enabled:
            return
        dm = trainer.datamodule
        if not hasattr(dm, "splits") or not hasattr(pl_module.net, "probe_layers"):
            raise ConfigError("metrics need the project's DataModule and a model with "
                              "probe_layers(); set metrics=none for other setups")
        n_train = len(dm.splits["train"])
        g = torch.Generator().manual_seed(self.cfg.probe_seed)
        size = self.cfg.probe_size
        train = (torch.arange(n_train) if size is None or size >= n_train
                 else torch.randperm(n_train, generator=g)[:size].sort().values)
        self.probe = {"train": train}
        self._static = {}
        names = [layer.name for layer in pl_module.net.probe_layers()]
        for logger in getattr(trainer, "loggers", []):  # loggers charting against depth
            if hasattr(logger, "set_layers"):
                logger.set_layers(names)
        for pattern in self.cfg.masc.layers or []:
            if not fnmatch.filter(names, pattern):
                raise ConfigError(f"metrics.masc.layers: {pattern!r} matches no probe layer of "
                                  f"this model; its layers are {', '.join(names)}")
        if self.cfg.test:
            self.probe["test"] = torch.arange(len(dm.splits["test"]))
        c = self.cfg.csr
        n_csr = len(dm.splits[c.split])
        g = torch.Generator().manual_seed(c.seed)
        self.csr_idx = (torch.arange(n_csr) if c.n >= n_csr
                        else torch.randperm(n_csr, generator=g)[: c.n].sort().values)

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.should_stop or (trainer.max_epochs is not None
                                       and epoch >= trainer.max_epochs)
        return epoch % self.cfg.every_n_epochs == 0 or last

    def _batches(self, dm, split: str, idx: torch.Tensor, device: torch.device,
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
        """All enabled metrics for ``net`` on ``dm``'s probe sets, as ``{name: scalar}``."""
        was_training = net.training
        net.eval()
        try:
            logs = self._probe(dm, net)
            if self.cfg.csr.enabled:
                logs[f"csr/{self.cfg.csr.split}"] = self._csr(dm, net)
        finally:
            net.train(was_training)
        return logs

    def _probe(self, dm, net: nn.Module) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        layers = net.probe_layers()
        self.layer_names = [layer.name for layer in layers]
        if not (cfg.cosine.enabled or cfg.polarization.enabled or cfg.masc.enabled):
            return {}
        device = next(net.parameters()).device
        k = dm.cfg.num_classes
        # the input layer depends on the data only: its values from the first evaluation stand
        inputs = {layers[0].name} if layers and layers[0].weight is None else set()
        skip = inputs if self._static else set()
        cos: dict[tuple[str, str], MeanCosine] = {}
        pol: dict[str, Polarization] = {}
        fit: dict[str, _MASCFit | None] = {}
        labels: list[dict[str, torch.Tensor]] = []  # the training probe batches' labels
        self._cache_left = int(cfg.masc.max_cache_gb * 1024**3)
        with torch.no_grad(), capture(net, inputs=cfg.cosine.enabled) as store:
            for batch in self._batches(dm, "train", self.probe["train"], device):
                net(batch["x"])
                self._update_cosine(cos, "train", layers, store, device)
                labels.append({key: batch[key] for key in ("y", "y_true", "corrupted")})
                for layer in layers:
                    if layer.name in skip:
                        continue
                    out = store["out"][layer.name].flatten(1)
                    if cfg.polarization.enabled:
                        if layer.name not in pol:
                            pol[layer.name] = Polarization(k, out.shape[1]).to(device)
                        y = batch["y"] if cfg.polarization.labels == "train" else batch["y_true"]
                        pol[layer.name].update(out, y, batch["corrupted"])
                    if cfg.masc.enabled and self._masc_on(layer.name):
                        if layer.name not in fit:
                            fit[layer.name] = self._masc_fitter(k, out.shape[1], device)
                        if fit[layer.name] is not None:
                            fit[layer.name].update(out, batch["y"], batch["y_true"])
            fit = {name: f for name, f in fit.items() if f is not None}
            logs, bases = self._masc_fit(fit)
            acc = {key: {s: SubsetAccuracy().to(device) for s in self.probe} for key in bases}
            for (name, layer), basis in bases.items():  # outputs kept from the pass above
                for out, y in zip(fit[layer].kept or [], labels if fit[layer].kept else [],
                                  strict=True):
                    acc[(name, layer)]["train"].update(masc_predict(out, *basis), **y)
            if "test" in self.probe:
                for batch in self._batches(dm, "test", self.probe["test"], device):
                    net(batch["x"])
                    self._update_cosine(cos, "test", layers, store, device)
                    self._score(acc, bases, store, batch, "test")
            later = {key: b for key, b in bases.items() if fit[key[1]].kept is None}
            if later:  # layers whose outputs did not fit in max_cache_gb: a second pass
                for batch in self._batches(dm, "train", self.probe["train"], device):
                    net(batch["x"])
                    self._score(acc, later, store, batch, "train")
        for (split, name), m in cos.items():
            res = m.compute()
            logs[f"cosine/{split}/{name}"] = res["cosine"]
            logs[f"dead/{split}/{name}"] = res["dead"]
        for name, m in pol.items():
            logs[f"polarization/train/{name}"] = m.compute()
        for (name, layer), per_split in acc.items():
            for split, m in per_split.items():
                res = m.compute()
                logs[f"{name}/{split}/{layer}"] = res["acc"]
                if split == "train":  # no sample at all (an empty probe share): NaN
                    logs[f"{name}/train_true/{layer}"] = res.get(
                        "acc_true", torch.full_like(res["acc"], float("nan")))
        if not self._static:
            self._static = {key: v for key, v in logs.items()
                            if key.rsplit("/", 1)[-1] in inputs}
        return {**logs, **self._static}

    def _update_cosine(self, cos, split: str, layers, store, device) -> None:
        if not self.cfg.cosine.enabled:
            return
        for layer in layers:
            if not has_cosine(layer.weight):
                continue
            key = (split, layer.name)
            if key not in cos:
                cos[key] = MeanCosine(layer.weight.weight.shape[0]).to(device)
            # the pre-activation (a_{l-1} W^T + b) is the forward pass's own product
            cos[key].update(sums=layer_cosine_sums(layer.weight, store["in"][layer.name],
                                                   store["out"][layer.name],
                                                   store["pre"][layer.name]))

    def _masc_on(self, name: str) -> bool:
        patterns = self.cfg.masc.layers
        return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)

    def _masc_fitter(self, num_classes: int, dim: int, device: torch.device) -> _MASCFit | None:
        m = self.cfg.masc
        budget = int(m.max_gram_gb * 1024**3)
        n = len(self.probe["train"])
        method = m.method
        if method == "auto":
            few = n / num_classes < dim and 4 * n * dim <= budget
            method = "samples" if few or gram_bytes(num_classes, dim) > budget else "gram"
        need = 4 * n * dim if method == "samples" else gram_bytes(num_classes, dim)
        if need > budget:  # e.g. a convolution's output: skip the layer, say so once
            rank_zero_warn(f"MASC skips a {dim}-wide layer: it would need {need / 1024**3:.1f} "
                           f"GiB (metrics.masc.max_gram_gb={m.max_gram_gb}); lower "
                           "metrics.probe_size or raise the limit to include it")
            return None
        kept = 4 * -(-n // rank_world()[1]) * dim  # this rank's share of the outputs
        keep = method == "gram" and kept <= self._cache_left
        if keep:
            self._cache_left -= kept
        with torch.device(device):  # the Gram states straight on the device, not via the host
            fit = _MASCFit(method, num_classes, dim, m.variance, budget, keep)
        return fit.to(device)  # a no-op for the tensors; tells torchmetrics where they are

    def _masc_fit(self, fit: dict[str, _MASCFit]):
        """Fits every layer's subspaces: (logs of the components, {(name, layer): (bases,
        flat bases)})."""
        logs, bases = {}, {}
        for layer, m in fit.items():
            for name, (basis, n_comp) in m.fit().items():
                bases[(name, layer)] = (basis, flat_bases(basis))
                logs[f"{name}/components/{layer}"] = n_comp.double().mean()
                self.report_extras["masc_components"][f"{name}/{layer}"] = n_comp.tolist()
        return logs, bases

    @staticmethod
    def _score(acc, bases, store, batch, split: str) -> None:
        for (name, layer), basis in bases.items():
            pred = masc_predict(store["out"][layer].flatten(1), *basis)
            acc[(name, layer)][split].update(pred, batch["y"], batch.get("y_true"),
                                             batch.get("corrupted"))

    def _csr(self, dm, net: nn.Module) -> torch.Tensor:
        c = self.cfg.csr
        device = next(net.parameters()).device
        std = dm.std.to(device)
        alpha, beta, r = (to_input_units(v / c.pixel_scale, std) for v in (c.alpha, c.beta, c.r))
        gen = torch.Generator(device=device).manual_seed(c.seed)
        metric = CriticalSampleRatio().to(device)
        for batch in self._batches(dm, c.split, self.csr_idx, device, c.batch_size):
            metric.update(net, batch["x"], alpha, beta, r, c.max_iter, generator=gen)
        return metric.compute()

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
