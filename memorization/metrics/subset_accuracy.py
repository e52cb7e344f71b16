"""Accuracy on the whole training set and on its clean and corrupted subsets.

With predictions p_i, training labels y~_i, true labels y_i and the corrupted set C (from the
corruption record, N samples):

    acc                = 1/N     sum_i       [p_i = y~_i]   (fit to the labels trained on)
    acc_true           = 1/N     sum_i       [p_i = y_i]    (agreement with the true labels)
    acc_clean          = 1/|~C|  sum_{i!in C} [p_i = y_i]   (y~_i = y_i there)
    acc_corrupted      = 1/|C|   sum_{i in C} [p_i = y~_i]  (memorization of the noise)
    acc_corrupted_true = 1/|C|   sum_{i in C} [p_i = y_i]   (true label recovered despite noise)

An empty subset gives NaN (e.g. the corrupted subset when p = 0). For the validation and test sets
there are no training labels, only ``acc``.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

KEYS = ("acc", "acc_true", "acc_clean", "acc_corrupted", "acc_corrupted_true")


def _counts(pred, y, y_true, corrupted) -> dict[str, torch.Tensor]:
    hit = pred == y
    c = {"n": y.numel(), "hit": hit.sum()}  # n stays a Python int: no host-to-device copy
    if y_true is not None:
        hit_true = pred == y_true
        c.update(n_corrupted=corrupted.sum(), hit_true=hit_true.sum(),
                 hit_corrupted=(hit & corrupted).sum(),
                 hit_corrupted_true=(hit_true & corrupted).sum())
    return c


def _ratios(c: dict[str, torch.Tensor], with_true: bool) -> dict[str, torch.Tensor]:
    def div(a, b):  # 0 / 0 is NaN: an empty subset has no accuracy
        return a.double() / torch.as_tensor(b, dtype=torch.float64, device=a.device)

    out = {"acc": div(c["hit"], c["n"])}
    if with_true:
        n_clean = c["n"] - c["n_corrupted"]
        out.update(
            acc_true=div(c["hit_true"], c["n"]),
            acc_clean=div(c["hit"] - c["hit_corrupted"], n_clean),
            acc_corrupted=div(c["hit_corrupted"], c["n_corrupted"]),
            acc_corrupted_true=div(c["hit_corrupted_true"], c["n_corrupted"]),
        )
    return out


def subset_accuracy(pred: torch.Tensor, y: torch.Tensor, y_true: torch.Tensor | None = None,
                    corrupted: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The accuracies above from predicted labels (not logits), in one shot."""
    if (y_true is None) != (corrupted is None):
        raise ValueError("pass both y_true and corrupted, or neither")
    return _ratios(_counts(pred, y, y_true, corrupted), with_true=y_true is not None)


class SubsetAccuracy(Metric):
    """Streaming version of :func:`subset_accuracy`: integer counts summed over batches/ranks."""

    full_state_update = False
    _STATES = ("n", "hit", "n_corrupted", "hit_true", "hit_corrupted", "hit_corrupted_true")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in self._STATES:
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("seen_true", default=torch.tensor(0, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, y: torch.Tensor, y_true: torch.Tensor | None = None,
               corrupted: torch.Tensor | None = None) -> None:
        pred = logits.argmax(dim=-1) if logits.dim() > 1 else logits
        for k, v in _counts(pred, y, y_true, corrupted).items():
            setattr(self, k, getattr(self, k) + v)
        if y_true is not None:
            self.seen_true += y.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        c = {k: getattr(self, k) for k in self._STATES}
        return _ratios(c, with_true=bool(self.seen_true > 0))


class ProbeAccuracy:
    """The accuracies of a classifier probed on a layer (MASC's predictions, say), per probe
    split: logged as ``<name>/<split>/<layer>`` (``acc``), plus ``<name>/train_true/<layer>``
    (``acc_true``, agreement with the true labels; NaN when this rank's share was empty)."""

    def __init__(self, splits, device: torch.device):
        self.acc = {split: SubsetAccuracy().to(device) for split in splits}

    def update(self, split: str, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.acc[split].update(pred, batch["y"], batch.get("y_true"), batch.get("corrupted"))

    def compute(self, name: str, layer: str) -> dict[str, torch.Tensor]:
        logs = {}
        for split, m in self.acc.items():
            res = m.compute()
            logs[f"{name}/{split}/{layer}"] = res["acc"]
            if split == "train":
                logs[f"{name}/train_true/{layer}"] = res.get(
                    "acc_true", torch.full_like(res["acc"], float("nan")))
        return logs
