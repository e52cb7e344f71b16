"""The LightningModule: one classifier for every network, loss and optimizer of the papers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from memorization.base import accel
from memorization.base.distributed import epoch_generator
from memorization.base.errors import ConfigError
from memorization.base.store import register, with_target
from memorization.engine.optim import OptimConfig, lightning_optimizers
from memorization.metrics import SubsetAccuracy
from memorization.metrics.csr import (
    DEFAULT_MAX_ITER,
    PAPER_ALPHA,
    PAPER_BETA,
    PAPER_PIXEL_SCALE,
    PAPER_R,
    lass_search,
    to_input_units,
)

LOSSES = ("ce", "mse")


@dataclass
class AdversarialConfig:
    """Arpit et al.'s adversarial training (Sec. 5, footnote 7: "using critical samples found by
    LASS algorithm with default parameters"; Fig. 10 pairs it with dropout, "weighting factor in
    range 0.2-0.7"). Each training step runs LASS (metrics/csr.py) from the batch, with the
    network in eval mode, and the loss becomes

        (1 - weight) * L(f(x), y) + weight * L(f(x^), y)

    with y the training label and x^ the search's point: the adversarial example for a critical
    sample, the last iterate (inside the box, same prediction) for the others. Our reading: the
    paper does not say what the non-critical samples contribute. alpha, beta, r are in units of
    1/pixel_scale of a [0, 1] pixel, as for the CSR metric. The noise comes from a generator
    seeded with (seed, epoch, rank) at each epoch's first step, so a run resumed at an epoch
    boundary draws what an uninterrupted one would. weight 0: off."""

    weight: float = 0.0
    alpha: float = PAPER_ALPHA
    beta: float = PAPER_BETA
    r: float = PAPER_R
    pixel_scale: float = PAPER_PIXEL_SCALE
    max_iter: int = DEFAULT_MAX_ITER
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"module.adversarial.weight={self.weight} must be in [0, 1] "
                              "(0: off; Arpit et al. use 0.2-0.7)")
        if min(self.alpha, self.beta, self.r) < 0 or self.pixel_scale <= 0 or self.max_iter < 1:
            raise ConfigError("module.adversarial: alpha, beta, r must be >= 0, pixel_scale > 0 "
                              "and max_iter >= 1")


@dataclass
class ModuleConfig:
    """The ``module`` node: the loss, and Arpit et al.'s adversarial training."""

    # ce, or mse on one-hot targets with no output activation (Theunissen et al.)
    loss: str = "ce"
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)

    def __post_init__(self):
        if isinstance(self.adversarial, dict):
            self.adversarial = AdversarialConfig(**self.adversarial)
        if self.loss not in LOSSES:
            raise ConfigError(f"module.loss={self.loss!r} is not one of {', '.join(LOSSES)}")


class MeanLoss(Metric):
    """Sample-weighted mean loss of each of ``replicas`` networks (1: a single run's, computed
    as a scalar), summed over batches and ranks in float64: ``update(losses, n)`` adds each
    network's batch-mean loss times the batch's ``n`` samples. Our own rather than torchmetrics'
    MeanMetric: that one casts its input to the metric's dtype, which Lightning resets to
    float32 when it moves the module, so its sums were float32 (about 1e-7 off the mean after
    one epoch of digits); it also checks for NaNs with a host sync per step unless told not to
    (a NaN loss is the divergence guard's business, memorization/jobs/folder.py)."""

    full_state_update = False

    def __init__(self, replicas: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros(replicas, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, losses: torch.Tensor, n: int) -> None:
        # in place: an assignment to a Metric attribute costs a few us of nn.Module machinery
        self.total.add_(losses.detach().to(torch.float64).reshape(-1), alpha=n)
        self.count.add_(n)

    def compute(self) -> torch.Tensor:
        # (torchmetrics returns a one-element result as a scalar)
        return self.total / self.count


class ClassifierBase(L.LightningModule):
    """What a single run's module (:class:`Classifier`) and a stacked job's
    (memorization/engine/stacked.py) share: the loss, the evaluation splits, the global
    generators in checkpoints, the optimizer. Subclasses set ``loss_name``, ``num_classes`` and
    ``optim``."""

    loss_name: str
    num_classes: int
    optim: OptimConfig

    def compile_steps(self, option: bool | str) -> None:
        """Run the steps' forward passes through ``torch.compile`` (``trainer.compile``,
        memorization/base/accel.py); the metrics and checkpoints keep the plain network."""
        self.__dict__["_compile"] = option  # plain attributes, outside the module's state
        self.__dict__["_compiled_fns"] = {}

    def stepped(self, key, fn):
        """``fn`` as the steps call it: compiled once per key when ``compile_steps`` asked."""
        cache = self.__dict__.setdefault("_compiled_fns", {})
        if key not in cache:
            cache[key] = accel.compiled(fn, self.__dict__.get("_compile", False))
        return cache[key]

    def loss_fn(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "mse":
            # Theunissen et al.: MSE on one-hot targets, no output activation
            return F.mse_loss(logits, F.one_hot(y, self.num_classes).to(logits.dtype))
        return F.cross_entropy(logits, y)

    def setup(self, stage: str) -> None:
        # names of the validation dataloaders, in order (the data module is set up by now)
        dm = getattr(self.trainer, "datamodule", None)
        self.eval_splits = list(getattr(dm, "eval_splits", None) or ["test"])

    def _eval_train(self) -> bool:
        return "train" in getattr(self, "eval_splits", ())

    # -- checkpoints -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the global generators (dropout, input noise): a resumed run draws what an
        # uninterrupted one would (Lightning saves the weights and loops, not these)
        # (as tensors and numbers only: checkpoints are read with torch's weights_only loader)
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, state, gauss_next = random.getstate()
        checkpoint["rng"] = {"torch": torch.get_rng_state(),
                             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                       has_gauss, gauss],
                             "python": [version, torch.tensor(state, dtype=torch.int64),
                                        gauss_next]}
        if torch.cuda.is_available() and self.device.type == "cuda":
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, state, gauss_next = rng["python"]
        random.setstate((version, tuple(state.tolist()), gauss_next))
        if "cuda" in rng and torch.cuda.is_available() and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # -- optimization --------------------------------------------------------------------------
    def configure_optimizers(self):
        return lightning_optimizers(self.optim.build(self.parameters()))


def best_and_gap(logs: dict[str, torch.Tensor], best: torch.Tensor) -> None:
    """Add ``test/acc_best`` (``best``, the best test accuracy so far, updated in place) and
    ``gap`` (train/acc - test/acc) to an epoch's ``logs``, when they have a test accuracy."""
    if "test/acc" in logs:
        best.copy_(torch.fmax(best, logs["test/acc"].to(best.dtype)))
        logs["test/acc_best"] = best.clone()
        if "train/acc" in logs:
            logs["gap"] = logs["train/acc"] - logs["test/acc"]


class Classifier(ClassifierBase):
    """Trains ``net`` on the (corrupted) training labels and evaluates every split each epoch.

    Logged once per epoch (after the validation loop), with stable names:
    ``train/loss`` (mean over the epoch's steps), ``train/acc``, ``train/acc_true``,
    ``train/acc_clean``, ``train/acc_corrupted``, ``train/acc_corrupted_true`` (see
    metrics/subset_accuracy.py; from an eval-mode pass over the whole training set when
    ``data.eval_train``, else from the training steps), ``test/acc``, ``test/loss``,
    ``test/acc_best``, ``gap`` (= train/acc - test/acc), and ``val/*`` with a hold-out.
    """

    def __init__(self, net: nn.Module, loss: str = "ce", optim: dict | OptimConfig | None = None,
                 num_classes: int | None = None, adversarial: dict | None = None):
        super().__init__()
        cfg = ModuleConfig(loss=loss, adversarial=adversarial or {})
        self.net = net
        self.loss_name = cfg.loss
        self.optim = optim if isinstance(optim, OptimConfig) else OptimConfig.from_dict(optim or {})
        self.num_classes = num_classes or net.cfg.num_classes
        self.adversarial = cfg.adversarial
        self._adv_generator: tuple[tuple, torch.Generator] | None = None
        # kept in checkpoints; not logged: the entry point logs the resolved config once
        self.save_hyperparameters(ignore=["net"], logger=False)
        splits = ("fit", "train", "val", "test")
        # keyed "<split>_" because ModuleDict keys may not shadow nn.Module attributes ("train")
        self.accs = nn.ModuleDict({f"{s}_": SubsetAccuracy() for s in splits})
        self.losses = nn.ModuleDict({f"{s}_": MeanLoss() for s in splits})
        self.register_buffer("best_test_acc", torch.tensor(float("nan"), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # -- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.accs["fit_"].reset()
        self.losses["fit_"].reset()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.stepped("net", self.net)(batch["x"])
        loss = self.loss_fn(logits, batch["y"])
        w = self.adversarial.weight
        if w > 0:
            x_adv = self._adversarial_points(batch["x"])
            loss = (1 - w) * loss + w * self.loss_fn(self.net(x_adv), batch["y"])
        self.losses["fit_"].update(loss, batch["y"].numel())
        if not self._eval_train():
            self.accs["fit_"].update(logits.detach(), batch["y"], batch.get("y_true"),
                                   batch.get("corrupted"))
        return loss

    def _adversarial_points(self, x: torch.Tensor) -> torch.Tensor:
        a = self.adversarial
        dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
        std = getattr(dm, "std", None)
        std = torch.ones(1, device=x.device) if std is None else std.to(x.device)
        alpha, beta, r = (to_input_units(v / a.pixel_scale, std, x.dim() - 1)
                          for v in (a.alpha, a.beta, a.r))
        key = (x.device, self.current_epoch if self._trainer else 0)
        if self._adv_generator is None or self._adv_generator[0] != key:
            self._adv_generator = (key, epoch_generator(a.seed, key[1], x.device))
        was_training = self.net.training
        self.net.eval()  # a deterministic search that leaves batch-norm statistics alone
        try:
            _, found = lass_search(self.net, x, alpha, beta, r, a.max_iter,
                                   generator=self._adv_generator[1])
        finally:
            self.net.train(was_training)
        return found.detach()

    # -- evaluation ----------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self.eval_splits[dataloader_idx])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: dict, split: str) -> None:
        logits, y = self.stepped("net", self.net)(batch["x"]), batch["y"]
        self.losses[split + "_"].update(self.loss_fn(logits, y), y.numel())
        self.accs[split + "_"].update(logits, y, batch.get("y_true"), batch.get("corrupted"))

    def _collect(self, split: str, name: str, with_loss: bool) -> dict[str, torch.Tensor]:
        """Compute and reset one split's metrics, logged under ``name/``; {} if it saw nothing."""
        acc, loss = self.accs[split + "_"], self.losses[split + "_"]
        if not acc.update_called:
            return {}
        out = {f"{name}/{k}": v for k, v in acc.compute().items()}
        if with_loss:
            out[f"{name}/loss"] = loss.compute()
        acc.reset()
        loss.reset()
        return out

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # drop what the sanity check saw; it is no epoch
            for split in ("train", "val", "test"):
                self.accs[split + "_"].reset()
                self.losses[split + "_"].reset()
            return
        logs: dict[str, torch.Tensor] = {}
        if self.losses["fit_"].update_called:
            logs["train/loss"] = self.losses["fit_"].compute()  # mean over the epoch's steps
        logs |= self._collect("train" if self._eval_train() else "fit", "train", with_loss=False)
        logs |= self._collect("val", "val", with_loss=True)
        logs |= self._collect("test", "test", with_loss=True)
        best_and_gap(logs, self.best_test_acc)
        # values are already reduced over ranks by the metrics: no second sync
        self.log_dict({k: v.float() for k, v in logs.items()}, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        logs = self._collect("test", "test", with_loss=True)
        self.log_dict({k: v.float() for k, v in logs.items()}, sync_dist=False)


ModuleSchema = with_target(ModuleConfig, "memorization.engine.module.Classifier")
register("module", ModuleSchema)
