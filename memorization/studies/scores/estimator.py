"""Per-example memorization and consistency scores from models trained on random subsets.

Feldman & Zhang (2020), the memorization of example i by algorithm A on data S:

    mem(A, S, i) = P_{h ~ A(S)}[h(x_i) = y_i] - P_{h ~ A(S \\ i)}[h(x_i) = y_i]

estimated from M models, model k trained on a random subset S_k of ratio r (their estimator
with subsets of size m = r n): with I_i = {k : i in S_k} and O_i = {k : i not in S_k},

    acc_in(i)  = mean_{k in I_i} [h_k(x_i) = y_i]      acc_out(i) = mean_{k in O_i} [h_k(x_i) = y_i]
    mem(i)     = acc_in(i) - acc_out(i)
    se(i)      = sqrt(acc_in (1 - acc_in) / |I_i| + acc_out (1 - acc_out) / |O_i|)

(se: the binomial standard error of a difference of two independent proportions). y_i is the
label the models were trained on, so for a corrupted example its corrupted label: memorizing it
means predicting that label only when it was seen.

Jiang et al. (2021), the consistency score of (x, y) at subset size n:

    C_{D,n}(x, y) = E_{D' ~ D^n \\ {(x, y)}} [ P(f(x; D') = y) ]

the expected accuracy on the example of models trained on subsets that leave it out, estimated
here at ratio r as acc_out(i) over the models of that ratio (their hold-out estimator). A test
example is in no subset: its C-score is the accuracy of all models of that ratio on it.

Our readings, where the papers leave a choice: an estimate with no model on one side (|I_i| = 0
or |O_i| = 0) is NaN, not 0; the C-score of a training example is taken against its training
label (what the models were asked to fit; the true label is reported apart as ``cscore_true``).

Pure tensor functions, on whatever device the inputs are on; no loop over examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ExampleScores:
    """One value per example (float64 tensors of length N; NaN where undefined)."""

    n_in: torch.Tensor
    n_out: torch.Tensor
    acc_in: torch.Tensor
    acc_out: torch.Tensor
    mem: torch.Tensor
    mem_se: torch.Tensor


def _mean_where(values: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, mean over models) of ``values`` [M, N] where ``where`` [M, N]; NaN for none."""
    w = where.to(torch.float64)
    count = w.sum(0)
    total = (values.to(torch.float64) * w).sum(0)
    return count, torch.where(count > 0, total / count.clamp_min(1), torch.nan)


def memorization(included: torch.Tensor, correct: torch.Tensor) -> ExampleScores:
    """Feldman & Zhang's estimate for every training example. ``included`` [M, N] bool:
    model k trained on example i; ``correct`` [M, N] bool: model k predicts i's training
    label."""
    if included.shape != correct.shape or included.dim() != 2:
        raise ValueError(f"included {tuple(included.shape)} and correct "
                         f"{tuple(correct.shape)} must both be [models, examples]")
    n_in, acc_in = _mean_where(correct, included)
    n_out, acc_out = _mean_where(correct, ~included)
    var = acc_in * (1 - acc_in) / n_in + acc_out * (1 - acc_out) / n_out
    return ExampleScores(n_in=n_in, n_out=n_out, acc_in=acc_in, acc_out=acc_out,
                         mem=acc_in - acc_out, mem_se=var.sqrt())


def cscores(included: torch.Tensor | None, correct: torch.Tensor, ratios: torch.Tensor,
            levels: list[float]) -> dict[float, torch.Tensor]:
    """The C-score at each ratio of ``levels``: per example, the accuracy of the models of
    that ratio (``ratios`` [M]) that left it out (``included`` [M, N]; None: a test set, left
    out by every model). NaN where no model of that ratio left it out."""
    out = {}
    for r in levels:
        of_ratio = (ratios - r).abs() < 1e-9
        left_out = of_ratio[:, None].expand_as(correct)
        if included is not None:
            left_out = left_out & ~included
        out[r] = _mean_where(correct, left_out)[1]
    return out


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """The probability that a random positive scores above a random negative (ties: one
    half), from average ranks (Mann-Whitney U). NaN scores are left out; NaN if a class is
    empty."""
    keep = ~torch.isnan(scores)
    s, pos = scores[keep].to(torch.float64), positive[keep].bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64, device=s.device)
    # average ranks over ties: every member of a group of equal scores gets the group's mean
    uniq, inverse = torch.unique(s, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64, device=s.device).index_add_(0, inverse,
                                                                                 ranks)
    counts = torch.bincount(inverse, minlength=len(uniq)).to(torch.float64)
    ranks = (sums / counts)[inverse]
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))
