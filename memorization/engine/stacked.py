"""The LightningModule of a stacked job: S networks of one architecture trained at once.

Each training step feeds replica k its own batch (``x[k]``, ``y[k]``) and minimizes the sum of
the replicas' mean losses; replica k's parameters get exactly the gradient of its own loss, and
one optimizer over all parameters steps each as a per-replica optimizer would (the optimizers
allowed are elementwise: memorization/config/replicas.py). A replica that has fit its training
labels stops updating: its gradients are dropped before the step, so its weights and its
optimizer state stay as they were when it stopped (``stopped``, kept in checkpoints).

How the S forward passes run (``mode``): ``loop``, one network after another (a single run's
kernels, bit-identical results on a CPU); ``vmap``, one batched computation over the stacked
parameters (``torch.func.stack_module_state``'s layout, differentiable back to each network),
equal to a single run within float rounding.

Per-epoch values are computed per replica (``replica_logs[k]``, the keys a single run logs:
``train/loss``, ``train/acc``, ``test/acc``, ``test/acc_best``, ``gap``, ...) and handed to the
replicas' loggers by :class:`memorization.jobs.stacked_callbacks.Replicas`; the trainer's own logs
(for the progress bar) are the means over the replicas still training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from memorization.engine.module import ClassifierBase, MeanLoss, best_and_gap
from memorization.engine.optim import OptimConfig
from memorization.metrics import SubsetAccuracy


def stacked_logits(nets, x: torch.Tensor, use_vmap: bool, stacked: bool) -> torch.Tensor:
    """Every network's output, ``[S, B, ...]``, for ``x`` shared (``[B, ...]``) or ``stacked``
    (``[S, B, ...]``, network k's samples at k): one after another, or as one batched
    computation over the stacked parameters (``use_vmap``)."""
    if not use_vmap:
        return torch.stack([net(x[k] if stacked else x) for k, net in enumerate(nets)])
    # stacked anew each call (a copy of the parameters): torch.stack is differentiable, so
    # its backward hands each network the gradient of its slice
    named = [dict(net.named_parameters()) for net in nets]
    params = {n: torch.stack([p[n] for p in named]) for n in named[0]}
    bufs = [dict(net.named_buffers()) for net in nets]
    buffers = {n: torch.stack([b[n] for b in bufs]) for n in bufs[0]}

    def call(p, b, xk):
        return functional_call(nets[0], (p, b), (xk,))

    return vmap(call, in_dims=(0, 0, 0 if stacked else None))(params, buffers, x)


def uses_vmap(mode: str, device: torch.device) -> bool:
    """``trainer.replicas``' modes: ``vmap``, ``loop``, or ``auto`` (vmap on a GPU): the one
    choice of the stacked job's module and of ``fit_stacked``."""
    return mode == "vmap" or (mode == "auto" and device.type == "cuda")


class StackedClassifier(ClassifierBase):
    """See the module docstring."""

    def __init__(self, nets: list[nn.Module], loss: str = "ce", optim: dict | None = None,
                 num_classes: int | None = None, mode: str = "loop", in_dims: int = 3):
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.S = len(nets)
        self.loss_name = loss
        self.optim = OptimConfig.from_dict(optim or {})
        self.num_classes = num_classes or nets[0].cfg.num_classes
        self.mode = mode
        self.in_dims = in_dims  # dims of one sample: [S, B, *shape] is a stacked batch
        splits = ("fit", "train", "val", "test")
        self.accs = nn.ModuleDict({f"{s}_": nn.ModuleList(SubsetAccuracy() for _ in nets)
                                   for s in splits})
        self.losses = nn.ModuleDict({f"{s}_": MeanLoss(self.S) for s in splits})
        self.register_buffer("best_test_acc", torch.full((self.S,), float("nan"),
                                                         dtype=torch.float64))
        self.register_buffer("stopped", torch.zeros(self.S, dtype=torch.bool))
        self.replica_logs: list[dict[str, torch.Tensor]] = [{} for _ in nets]
        self._active: list[int] = list(range(self.S))  # host copy of ~stopped

    @property
    def net(self) -> nn.Module:  # what single-run code reads (parameter counts, the summary)
        return self.nets[0]

    def net_of(self, k: int) -> nn.Module:
        return self.nets[k]

    # -- forward -----------------------------------------------------------------------------
    def _stacked(self, x: torch.Tensor) -> bool:
        return x.dim() == self.in_dims + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every replica's logits, ``[S, B, C]``; ``x`` is ``[B, ...]`` (shared) or
        ``[S, B, ...]`` (replica k's samples at k)."""
        return self.stepped("forward", self._forward)(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return stacked_logits(self.nets, x, self._use_vmap(), self._stacked(x))

    def _use_vmap(self) -> bool:
        return uses_vmap(self.mode, self.device)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor, which: list[int]) -> torch.Tensor:
        """Each listed replica's mean loss on its labels (``y`` [S, B] or shared [B])."""
        yk = (lambda k: y[k]) if y.dim() == 2 else (lambda k: y)
        return torch.stack([self.loss_fn(logits[i], yk(k)) for i, k in enumerate(which)])

    # -- training ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        self._active = [k for k in range(self.S) if not bool(self.stopped[k])]

    def on_train_epoch_start(self) -> None:
        self._active = [k for k in range(self.S) if not bool(self.stopped[k])]
        self.losses["fit_"].reset()
        for m in self.accs["fit_"]:
            m.reset()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        x, y = batch["x"], batch["y"]
        # a single process skips the stopped replicas' passes; DDP computes them all, as it
        # expects a gradient for every parameter, and drops theirs before the step
        world = self.trainer.world_size if self._trainer is not None else 1
        vec = self._use_vmap()
        which = self._active if world == 1 and not vec else list(range(self.S))
        if not which:  # all stopped (trainer.min_epochs beyond their fit): nothing to train
            return None
        logits = self(x) if vec else \
            torch.stack([self.stepped(k, self.nets[k])(x[k]) for k in which])
        losses = self._losses(logits, y, which)
        if len(which) == self.S:  # no index tensor to copy to the device
            full = losses.detach()
        else:
            full = torch.full((self.S,), float("nan"), dtype=losses.dtype, device=losses.device)
            full[which] = losses.detach()
        self.losses["fit_"].update(full, y.shape[-1])
        if not self._eval_train():
            for i, k in enumerate(which):
                b = {key: v[k] for key, v in batch.items()}
                self.accs["fit_"][k].update(logits[i].detach(), b["y"], b.get("y_true"),
                                            b.get("corrupted"))
        return losses.sum()

    def on_before_optimizer_step(self, optimizer) -> None:
        for k in range(self.S):
            if k not in self._active:  # the optimizer skips a parameter without a gradient
                for p in self.nets[k].parameters():
                    p.grad = None

    # -- evaluation ----------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self.eval_splits[dataloader_idx])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: dict, split: str) -> None:
        logits = self(batch["x"])
        y = batch["y"]
        which = list(range(self.S))
        self.losses[split + "_"].update(self._losses(logits, y, which), y.shape[-1])
        for k in which:
            b = {key: (v[k] if self._per_replica(key, v) else v) for key, v in batch.items()}
            self.accs[split + "_"][k].update(logits[k], b["y"], b.get("y_true"),
                                             b.get("corrupted"))

    def _per_replica(self, key: str, v: torch.Tensor) -> bool:
        if key == "x":
            return self._stacked(v)
        return v.dim() == 2  # labels, flags and indices are [B] when shared

    def _collect(self, split: str, name: str, with_loss: bool) -> list[dict[str, torch.Tensor]]:
        accs, loss = self.accs[split + "_"], self.losses[split + "_"]
        # per replica: the training steps feed only the replicas still training
        out = [{f"{name}/{key}": v for key, v in m.compute().items()} if m.update_called
               else {} for m in accs]
        if with_loss and loss.update_called:
            values = loss.compute().reshape(self.S)
            for k in range(self.S):
                if out[k]:
                    out[k][f"{name}/loss"] = values[k]
        for m in accs:
            m.reset()
        loss.reset()
        return out

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            for split in ("train", "val", "test"):
                self.losses[split + "_"].reset()
                for m in self.accs[split + "_"]:
                    m.reset()
            return
        logs: list[dict[str, torch.Tensor]] = [{} for _ in range(self.S)]
        if self.losses["fit_"].update_called:
            fit_loss = self.losses["fit_"].compute().reshape(self.S)  # (S = 1: a scalar)
            for k in range(self.S):
                logs[k]["train/loss"] = fit_loss[k]
        for parts in (self._collect("train" if self._eval_train() else "fit", "train", False),
                      self._collect("val", "val", True), self._collect("test", "test", True)):
            for k in range(self.S):
                logs[k] |= parts[k]
        for k in range(self.S):
            best_and_gap(logs[k], self.best_test_acc[k])
        self.replica_logs = logs
        # the progress bar's values: means over the replicas still training
        active = self._active or list(range(self.S))
        shown = {}
        for key in ("train/loss", "train/acc", "test/acc", "val/acc"):
            vals = [logs[k][key] for k in active if key in logs[k]]
            if vals:
                shown[key] = torch.stack([v.float() for v in vals]).mean()
        self.log_dict(shown, sync_dist=False)
