"""The training engine: every network the package trains is one Lightning ``Trainer.fit``
assembled here.

- **Jobs.** A single run (memorization/jobs/single.py) and a stacked job
  (memorization/jobs/stacked.py) fit a LightningModule (``module.Classifier`` or
  ``replicas.module.StackedClassifier``) from the same pieces, so seeding, the config's
  callbacks (stop rule, checkpoints, divergence guard, layer metrics, progress bar), its loggers
  and W&B, the Trainer's options and the end of a W&B run are written once: :func:`seed`,
  :func:`config_callbacks`, :func:`config_loggers` (a stacked job gives each replica its own
  folder and W&B run through its arguments), :func:`build_module`, :func:`make_trainer`,
  :func:`finish_wandb`.
- **Networks trained inside a job** (the relabel stage's retraining, the studies' networks):
  :func:`fit_network`, a Trainer with no logger, checkpoint or progress bar over tensors held
  on the device (batches by indexing, seeded orders, an after-epoch hook that may stop it),
  and :func:`evaluate` / :func:`predict` in eval mode. The job around them owns the folder,
  the logs and the resume.

Why one Trainer for both: measured (``benchmarks/engine.py``, docs/architecture.md), a Trainer
built per network costs about 0.015 s more than a plain loop, nothing next to Arpit's 2x4096
networks, and its per-step cost is that of a job's (docs/performance.md); a network trained
by :func:`fit_network` has bitwise the weights the plain loop gave it
(tests/engine/test_trainer.py). """

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.callbacks import ProgressBar as ProgressBarBase
from omegaconf import DictConfig, OmegaConf
from torch import nn

from memorization.base import accel
from memorization.config.replicas import trainer_options
from memorization.engine.optim import lightning_optimizers
from memorization.engine.stacked import StackedClassifier, stacked_logits, uses_vmap


def seed(value: int) -> None:
    """Python, NumPy and torch from ``value``, and the dataloader workers after them."""
    L.seed_everything(value, workers=True, verbose=False)


def config_callbacks(cfg: DictConfig) -> list:
    """The config's ``callbacks`` nodes, instantiated in order (a null entry turned off);
    the progress bar left out when ``trainer.enable_progress_bar=false`` (Lightning refuses a
    bar it cannot show)."""
    out = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()
           if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):
        out = [c for c in out if not isinstance(c, ProgressBarBase)]
    return out


def config_loggers(cfg: DictConfig, folder: Path | None = None,
                   wandb: dict | None = None) -> list:
    """The config's loggers and its history logger, instantiated; ``folder``: where each one
    with a ``save_dir`` writes instead of its own; ``wandb``: more arguments of the W&B
    logger (a stacked job's replica: its own name, group and run; a group the config gives
    the logger is kept)."""
    out = []
    for c in (cfg.get("logger") or {}).values():
        if c is None:
            continue
        kw: dict = {"save_dir": str(folder)} if folder is not None and "save_dir" in c else {}
        if wandb and str(c.get("_target_", "")).endswith("WandbLogger"):
            kw |= {**wandb, **({"group": c.group} if c.get("group") else {})}
        out.append(hydra.utils.instantiate(c, **kw))
    if cfg.get("history") is not None:
        kw = {"save_dir": str(folder)} if folder is not None else {}
        out.append(hydra.utils.instantiate(cfg.history, **kw))
    return out


def make_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    """The Trainer of ``cfg.trainer``. Without a Checkpoint callback (callbacks=no_checkpoint)
    there is no checkpoint at all, not Lightning's own either."""
    saves = any(isinstance(c, Checkpoint) for c in callbacks)
    accel.apply_matmul_precision(cfg.trainer.get("matmul_precision"))
    return hydra.utils.instantiate(trainer_options(cfg), callbacks=callbacks,
                                   logger=loggers or False,
                                   **({} if saves else {"enable_checkpointing": False}))


def finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def build_module(cfg: DictConfig, net: torch.nn.Module | list[torch.nn.Module],
                 mode: str = "loop") -> L.LightningModule:
    """The config's LightningModule around ``net`` (``cfg.module``), or, for a list of S
    networks, the stacked one (memorization/engine/stacked.py; ``mode``: loop, vmap or auto)
    with the config's loss. The one builder of both, so that every module option reaches a
    stacked job too (``trainer.compile``). The optimizer stays plain options: Hydra would
    build its _target_ here, before the parameters exist."""
    options = OmegaConf.to_container(cfg.module, resolve=True)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    target = options.pop("_target_")
    if isinstance(net, list | tuple):
        module = StackedClassifier(list(net), loss=options.get("loss", "ce"), optim=optim,
                                   num_classes=cfg.data.num_classes, mode=mode,
                                   in_dims=len(cfg.data.shape))
    else:
        module = hydra.utils.get_class(target)(net=net, optim=optim, **options)
    module.compile_steps(cfg.trainer.get("compile", False))
    return module


# ---- networks trained inside a job (the relabel retrain, the studies' networks) ----------


def seeded_orders(n: int, seed: int) -> Callable[[int], torch.Tensor]:
    """Epoch e's order of n examples: successive permutations of one generator seeded with
    ``seed`` (called for e = 1, 2, ... in turn)."""
    gen = torch.Generator().manual_seed(seed)
    return lambda epoch: torch.randperm(n, generator=gen)


class _Batches:
    """The index batches of each epoch: ``order(e)`` cut into ``batch_size`` slices (the last
    may be short). Lightning takes any iterable as a train loader; a torch DataLoader would
    draw its base seed from the global generator every epoch, changing dropout's draws."""

    def __init__(self, n: int, batch_size: int, order: Callable[[int], torch.Tensor]):
        self.n, self.batch_size, self.order, self.epoch = n, batch_size, order, 0

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:  # a generator: iter() alone draws nothing
        self.epoch += 1
        yield from self.order(self.epoch).split(self.batch_size)


class _OnTensors(L.LightningModule):
    """A network trained on tensors (x, y), held where they are; batches by indexing."""

    def __init__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, build: Callable,
                 loss_fn: Callable):
        super().__init__()
        self.net, self.build, self.loss_fn = net, build, loss_fn
        self.x, self.y = x, y  # attributes, not buffers: the Trainer does not move them
        self.total: torch.Tensor | None = None

    def on_train_epoch_start(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)

    def training_step(self, idx: torch.Tensor, _: int) -> torch.Tensor:
        idx = idx.to(self.y.device)
        xb = self.x[idx].to(self.device, non_blocking=True)
        yb = self.y[idx].to(self.device, non_blocking=True)
        loss = self.loss_fn(self.net(xb), yb)
        self.total += loss.detach().double() * idx.numel()
        return loss

    def configure_optimizers(self):
        return lightning_optimizers(self.build(self.net.parameters()))


class _AfterEpoch(L.Callback):
    def __init__(self, hook: Callable[[int, torch.Tensor], bool | None]):
        self.hook = hook

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: _OnTensors) -> None:
        # a stacked fit keeps no loss sum: its hook gets None
        if self.hook(trainer.current_epoch + 1, getattr(pl_module, "total", None)):
            trainer.should_stop = True


@contextlib.contextmanager
def _quiet():
    """No Lightning set-up lines or warnings for each of a study's many small fits."""
    names = ("lightning.pytorch", "lightning.fabric")
    levels = [logging.getLogger(n).level for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in zip(names, levels, strict=True):
            logging.getLogger(n).setLevel(level)


def fit_network(net: nn.Module, optim, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
                batch_size: int, seed: int = 0, loss_fn: Callable = F.cross_entropy,
                order: Callable[[int], torch.Tensor] | None = None,
                after_epoch: Callable[[int, torch.Tensor], bool | None] | None = None
                ) -> nn.Module:
    """Train ``net`` in place, on the device it is on, on (x, y) for ``epochs`` epochs: one
    Lightning fit with an optimizer and schedule that ``optim`` makes afresh (an
    ``optim.OptimConfig``, or its ``build``), the schedule stepped once per epoch. Epoch e goes
    through the examples in ``order(e)``, by default :func:`seeded_orders` of ``seed``, one
    optimizer step per ``batch_size`` slice. ``after_epoch(e, loss_sum)`` (the epoch's
    sample-weighted loss sum, a float64 device tensor) runs after each epoch and stops
    training by returning True. No logger, checkpoint or progress bar: the job around it owns
    those. Nothing syncs with the host inside an epoch."""
    module = _OnTensors(net, x, y, getattr(optim, "build", optim), loss_fn)
    batches = _Batches(len(y), batch_size, order or seeded_orders(len(y), seed))
    _fit(module, batches, epochs, _device(net),
         [_AfterEpoch(after_epoch)] if after_epoch is not None else [])
    return net


def _fit(module: L.LightningModule, batches, epochs: int, device: torch.device,
         callbacks: list, precision: str = "32-true") -> None:
    from lightning.pytorch.strategies import SingleDeviceStrategy

    with _quiet():
        trainer = L.Trainer(
            max_epochs=epochs, accelerator="gpu" if device.type == "cuda" else "cpu",
            strategy=SingleDeviceStrategy(device), logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            use_distributed_sampler=False, callbacks=callbacks, precision=precision)
        trainer.fit(module, train_dataloaders=batches)
    module.to(device)  # the strategy's teardown moves the network to the CPU


class _StackedBatches:
    """Each epoch's index batches of S networks on subsets of one size m: network k goes
    through ``subsets[k]`` (an [S, m] index tensor) in the order ``orders[k](e)``, the S
    orders cut into ``batch_size`` slices together, an [S, b] tensor per step."""

    def __init__(self, subsets: torch.Tensor, batch_size: int,
                 orders: list[Callable[[int], torch.Tensor]]):
        self.subsets, self.batch_size, self.orders, self.epoch = subsets, batch_size, orders, 0

    def __len__(self) -> int:
        return -(-self.subsets.shape[1] // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        self.epoch += 1
        dev = self.subsets.device
        idx = torch.stack([sub[order(self.epoch).to(dev)]
                           for sub, order in zip(self.subsets, self.orders, strict=True)])
        yield from idx.split(self.batch_size, dim=1)


class _StackedOnTensors(L.LightningModule):
    """S networks of one architecture trained at once on their own batches of (x, y): the
    loss is the sum of their mean losses, so each network gets exactly its own gradient, and
    one elementwise optimizer steps each as its own would."""

    def __init__(self, nets: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                 build: Callable, use_vmap: bool, loss_fn: Callable):
        super().__init__()
        self.nets, self.build, self.loss_fn = nn.ModuleList(nets), build, loss_fn
        self.x, self.y, self.use_vmap = x, y, use_vmap

    def training_step(self, idx: torch.Tensor, _: int) -> torch.Tensor:
        idx = idx.to(self.y.device)
        xb = self.x[idx].to(self.device, non_blocking=True)
        yb = self.y[idx].to(self.device, non_blocking=True)
        logits = stacked_logits(self.nets, xb, self.use_vmap, stacked=True)
        if self.use_vmap:  # one batched loss instead of S small ones
            return torch.vmap(self.loss_fn)(logits, yb).sum()
        return torch.stack([self.loss_fn(logits[k], yb[k]) for k in range(len(self.nets))]).sum()

    def configure_optimizers(self):
        return lightning_optimizers(self.build(self.nets.parameters()))


def fit_stacked(nets: list[nn.Module], optim, x: torch.Tensor, y: torch.Tensor,
                subsets: torch.Tensor, *, epochs: int, batch_size: int,
                orders: list[Callable[[int], torch.Tensor]], mode: str = "auto",
                loss_fn: Callable = F.cross_entropy, precision: str = "32-true",
                after_epoch: Callable[[int, None], bool | None] | None = None
                ) -> list[nn.Module]:
    """Train the S networks ``nets`` (one architecture, on one device) in place, network k on
    the examples ``subsets[k]`` of (x, y) (``subsets``: [S, m] indices), in one Lightning fit:
    epoch e takes network k through its subset in the order ``orders[k](e)`` (a permutation of
    range(m)), one step of every network per ``batch_size`` slice. ``mode``: ``loop`` runs the
    networks one after another (each bitwise as :func:`fit_network` on
    ``x[subsets[k]], y[subsets[k]]`` with ``order=orders[k]`` would train it, on a CPU);
    ``vmap`` as one batched computation (equal within rounding); ``auto``: vmap on a GPU.
    ``optim`` must step elementwise (replicas.config.ELEMENTWISE): one optimizer steps them
    all. ``precision``: Lightning's (``bf16-mixed``: the steps under autocast, the weights and
    the optimizer's state float32). ``after_epoch(e, None)`` runs after each epoch (a
    progress bar's hook) and stops training by returning True."""
    if subsets.dim() != 2 or subsets.shape[0] != len(nets) or len(orders) != len(nets):
        raise ValueError(f"{len(nets)} networks need [{len(nets)}, m] subsets and as many "
                         f"orders, not {tuple(subsets.shape)} and {len(orders)}")
    device = _device(nets[0])
    module = _StackedOnTensors(nets, x, y, getattr(optim, "build", optim),
                               uses_vmap(mode, device), loss_fn)
    _fit(module, _StackedBatches(subsets, batch_size, orders), epochs, device,
         [_AfterEpoch(after_epoch)] if after_epoch is not None else [], precision)
    return nets


@torch.no_grad()
def predict_stacked(nets: list[nn.Module], x: torch.Tensor, mode: str = "auto",
                    batch_size: int = 4096) -> torch.Tensor:
    """[S, N]: the class each network predicts (eval mode, argmax) for each row of x, on the
    networks' device; their modes are restored afterwards."""
    device, modes = _device(nets[0]), [net.training for net in nets]
    vec = uses_vmap(mode, device)
    for net in nets:
        net.eval()
    try:
        return torch.cat([stacked_logits(nets, xb.to(device, non_blocking=True), vec,
                                         stacked=False).argmax(-1)
                          for xb in x.split(batch_size)], dim=1)
    finally:
        for net, was in zip(nets, modes, strict=True):
            net.train(was)


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
             loss_fn: Callable = F.cross_entropy, batch_size: int = 4096,
             device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy, mean loss) of ``net`` in eval mode on (x, y), as float64 tensors on
    ``device`` (by default the network's; no host sync); the network's mode is restored
    afterwards."""
    device = device if device is not None else _device(net)
    was_training = net.training
    net.eval()
    hits = torch.zeros((), dtype=torch.long, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for idx in torch.arange(len(y), device=y.device).split(batch_size):
            xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            logits = net(xb)
            hits += (logits.argmax(1) == yb).sum()
            loss += loss_fn(logits, yb).double() * idx.numel()
    finally:
        net.train(was_training)
    n = max(len(y), 1)
    return hits.double() / n, loss / n


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The class ``net`` predicts (eval mode, argmax) for each row of x, on the network's
    device; the network's mode is restored afterwards."""
    device, was_training = _device(net), net.training
    net.eval()
    try:
        return torch.cat([net(xb.to(device, non_blocking=True)).argmax(1)
                          for xb in x.split(batch_size)])
    finally:
        net.train(was_training)
