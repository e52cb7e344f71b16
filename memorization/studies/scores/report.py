"""What a scores job writes, from whatever chunks have landed (so any time, partial or not):

- ``scores.csv``: one row per training example: ``index`` (its place in the DataModule's
  training split), ``label_true``, ``label_train`` (what the models were trained on),
  ``corrupted``, ``n_in`` / ``n_out`` (models of ``scores.mem_ratio`` that trained on it / left
  it out), ``acc_in`` / ``acc_out``, ``mem`` and ``mem_se`` (Feldman & Zhang's estimate and its
  binomial standard error), and at every ratio r of ``scores.ratios`` ``cscore_<r>`` (against
  the training label) and ``cscore_true_<r>`` (against the true label);
- ``scores_test.csv``: one row per test example, ``cscore_<r>`` (all models of ratio r);
- ``summary.json``: models landed and planned (``partial``: not all yet), the AUROC of ``mem``
  and of ``-cscore`` at telling corrupted from clean examples, group means;
- at the end: ``memorization.png`` (histograms, clean vs corrupted), ``top_memorized.png``
  (the highest-scoring examples with their training and true labels), ``cscores.png``
  (C-score against the subset ratio), and a sweep's ``scores_roc.png`` over its jobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from memorization.base.io import write_json_atomic
from memorization.config.scores import ScoresConfig
from memorization.studies import common
from memorization.studies.scores.chunks import Chunks
from memorization.studies.scores.estimator import ExampleScores, auroc, cscores, memorization

FIGURES = ("memorization.png", "top_memorized.png", "cscores.png")


@dataclass
class Estimates:
    mem: ExampleScores
    cscore: dict[float, torch.Tensor]
    cscore_true: dict[float, torch.Tensor]
    cscore_test: dict[float, torch.Tensor]


def _cpu(data: dict) -> dict:
    return {k: v.cpu() for k, v in data.items()}


def estimates(sc: ScoresConfig, ch: Chunks, train: dict, test: dict) -> Estimates:
    train, test = _cpu(train), _cpu(test)
    y, y_true = train["y"], train["y_true"]
    pred = ch.pred_train.long()
    correct = pred == y[None]
    of_mem = (ch.ratios - sc.mem_ratio).abs() < 1e-9
    return Estimates(
        mem=memorization(ch.included[of_mem], correct[of_mem]),
        cscore=cscores(ch.included, correct, ch.ratios, sc.ratios),
        cscore_true=cscores(ch.included, pred == y_true[None], ch.ratios, sc.ratios),
        cscore_test=cscores(None, ch.pred_test.long() == test["y"][None], ch.ratios,
                            sc.ratios))


def _mean(values: torch.Tensor, where: torch.Tensor) -> float | None:
    v = values[where]
    v = v[~torch.isnan(v)]
    return common.finite(float(v.mean())) if len(v) else None


def summarize(sc: ScoresConfig, ch: Chunks, est: Estimates, train: dict, test: dict,
              partial: bool) -> dict:
    bad = train["corrupted"].cpu().bool()
    good = ~bad
    mem, r0 = est.mem, sc.mem_ratio
    per_ratio = {f"{r:g}": int(((ch.ratios - r).abs() < 1e-9).sum()) for r in sc.ratios}
    out = {
        "models_landed": ch.count, "models_planned": sc.total, "models_per_ratio": per_ratio,
        "partial": bool(partial or ch.count < sc.total), "mem_ratio": r0,
        "n_train": len(bad), "n_corrupted": int(bad.sum()), "n_test": len(test["y"]),
        "auroc_mem": common.finite(auroc(mem.mem, bad)),
        "auroc_cscore": common.finite(auroc(-est.cscore[r0], bad)),
        "mean_mem_corrupted": _mean(mem.mem, bad), "mean_mem_clean": _mean(mem.mem, good),
        # how well the models fit what they trained on (memorizing needs acc_in near 1)
        "acc_in_corrupted": _mean(mem.acc_in, bad), "acc_in_clean": _mean(mem.acc_in, good),
        "undefined": int(torch.isnan(mem.mem).sum()),
    }
    every = torch.ones(len(test["y"]), dtype=torch.bool)
    for r in sc.ratios:
        out[f"cscore_{r:g}_clean"] = _mean(est.cscore[r], good)
        out[f"cscore_{r:g}_corrupted"] = _mean(est.cscore[r], bad)
        out[f"cscore_true_{r:g}_corrupted"] = _mean(est.cscore_true[r], bad)
        out[f"cscore_{r:g}_test"] = _mean(est.cscore_test[r], every)
    return out


def _key(r: float) -> str:
    return f"{r:g}"


def write(out: Path, sc: ScoresConfig, ch: Chunks, train: dict, test: dict,
          partial: bool) -> dict:
    """scores.csv, scores_test.csv and summary.json from the chunks ``ch``; the summary."""
    est = estimates(sc, ch, train, test)
    tr, te = _cpu(train), _cpu(test)
    m = est.mem
    frame = {"index": tr["index"].numpy(), "label_true": tr["y_true"].numpy(),
             "label_train": tr["y"].numpy(), "corrupted": tr["corrupted"].numpy(),
             "n_in": m.n_in.long().numpy(), "n_out": m.n_out.long().numpy(),
             "acc_in": m.acc_in.numpy(), "acc_out": m.acc_out.numpy(), "mem": m.mem.numpy(),
             "mem_se": m.mem_se.numpy()}
    for r in sc.ratios:
        frame[f"cscore_{_key(r)}"] = est.cscore[r].numpy()
        frame[f"cscore_true_{_key(r)}"] = est.cscore_true[r].numpy()
    common.write_csv(out / "scores.csv", pd.DataFrame(frame))
    common.write_csv(out / "scores_test.csv", pd.DataFrame(
        {"index": te["index"].numpy(), "label": te["y"].numpy(),
         **{f"cscore_{_key(r)}": est.cscore_test[r].numpy() for r in sc.ratios}}))
    summary = summarize(sc, ch, est, train, test, partial)
    write_json_atomic(out / "summary.json", summary)
    return summary


def history(sc: ScoresConfig, ch: Chunks, train: dict) -> list[dict]:
    """The estimates as the chunks landed: after each, the models so far and the AUROC."""
    bad = train["corrupted"].cpu().bool()
    y = train["y"].cpu()
    rows = []
    for c in torch.unique(ch.chunk).tolist():
        keep = (ch.chunk <= c) & ((ch.ratios - sc.mem_ratio).abs() < 1e-9)
        mem = memorization(ch.included[keep], ch.pred_train[keep].long() == y[None])
        rows.append({"models": int((ch.chunk <= c).sum()),
                     "auroc_mem": common.finite(auroc(mem.mem, bad)),
                     "mean_mem_corrupted": _mean(mem.mem, bad),
                     "mean_mem_clean": _mean(mem.mem, ~bad)})
    return rows


def readable(s: dict, out: Path) -> str:
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    r = _key(s["mem_ratio"])
    return (f"scores of {s['models_landed']} models: memorization tells the "
            f"{s['n_corrupted']} corrupted from the {s['n_train'] - s['n_corrupted']} clean "
            f"training examples with AUROC {f(s['auroc_mem'])} (mean mem "
            f"{f(s['mean_mem_corrupted'])} corrupted, {f(s['mean_mem_clean'])} clean; fit of "
            f"the seen ones {f(s['acc_in_corrupted'])} and {f(s['acc_in_clean'])}); C-score at "
            f"ratio {r}: {f(s[f'cscore_{r}_corrupted'])} corrupted (their true label "
            f"{f(s[f'cscore_true_{r}_corrupted'])}), {f(s[f'cscore_{r}_clean'])} clean, "
            f"{f(s[f'cscore_{r}_test'])} test; outputs: {out}")


# ---- figures ------------------------------------------------------------------------------


def figures(out: Path, sc: ScoresConfig, ch: Chunks, train: dict, test: dict) -> list[Path]:
    est = estimates(sc, ch, train, test)
    tr = _cpu(train)
    bad = tr["corrupted"].bool()
    paths = [out / name for name in FIGURES]
    _histogram(paths[0], est.mem.mem, bad, sc, ch.count)
    _top(paths[1], est.mem, tr, sc.top)
    _cscores(paths[2], est, bad, sc)
    return paths


def _histogram(path: Path, mem: torch.Tensor, bad: torch.Tensor, sc: ScoresConfig,
               models: int) -> None:
    fig, (ax,) = common.new_figure(width=6.0)
    bins = np.linspace(-1, 1, 41)
    for name, where, color in (("clean", ~bad, "C0"), ("corrupted", bad, "C3")):
        v = mem[where & ~torch.isnan(mem)].numpy()
        if len(v):
            ax.hist(v, bins=bins, density=True, alpha=0.6, color=color,
                    label=f"{name} ({len(v)})")
    a = auroc(mem, bad)
    ax.set(xlabel=f"memorization estimate (models at ratio {sc.mem_ratio:g})",
           ylabel="density", title=f"{models} models; AUROC corrupted vs clean "
                                   f"{'-' if np.isnan(a) else f'{a:.3f}'}")
    _legend(ax)
    common.save_figure(fig, path)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # nothing drawn (no estimate yet): no legend
        ax.legend(fontsize=8)


def _top(path: Path, mem: ExampleScores, tr: dict, k: int) -> None:
    from matplotlib.figure import Figure

    score = torch.nan_to_num(mem.mem, nan=-2.0)
    k = min(k, len(score))
    cols = max(1, min(8, k))
    rows = max(1, -(-k // cols))
    fig = Figure(figsize=(1.6 * cols, 1.9 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, torch.argsort(score, descending=True)[:k].tolist(), strict=False):
        x = tr["x"][i].float()
        if x.dim() == 3:
            img = x.permute(1, 2, 0) if x.shape[0] == 3 else x[0]
            img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
            ax.imshow(img.numpy(), cmap="gray" if img.dim() == 2 else None)
        else:
            ax.axis("on")
            ax.plot(x.reshape(-1).numpy(), lw=0.8)
            ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"#{int(tr['index'][i])} train {int(tr['y'][i])} / true "
                     f"{int(tr['y_true'][i])}\nmem {float(mem.mem[i]):.2f}"
                     f"±{float(mem.mem_se[i]):.2f}", fontsize=7,
                     color="C3" if bool(tr["corrupted"][i]) else "black")
    fig.suptitle("most memorized training examples (red: corrupted)", fontsize=9)
    common.save_figure(fig, path)


def _cscores(path: Path, est: Estimates, bad: torch.Tensor, sc: ScoresConfig) -> None:
    fig, (left, right) = common.new_figure(cols=2, width=5.0)
    ratios = sorted(sc.ratios)
    every = torch.ones(len(next(iter(est.cscore_test.values()))), dtype=torch.bool)
    series = (("clean", est.cscore, ~bad, "C0"), ("corrupted", est.cscore, bad, "C3"),
              ("corrupted, true label", est.cscore_true, bad, "C1"),
              ("test", est.cscore_test, every, "C2"))
    for name, values, where, color in series:
        ys = [_mean(values[r], where) for r in ratios]
        if any(v is not None for v in ys):
            left.plot(ratios, [np.nan if v is None else v for v in ys], "o-", color=color,
                      label=name)
    left.set(xlabel="subset ratio", ylabel="mean C-score", xlim=(0, 1), ylim=(-0.02, 1.02),
             title="consistency against the subset ratio")
    _legend(left)
    bins, r0 = np.linspace(0, 1, 26), sc.mem_ratio
    for name, values, where, color in series[:2] + series[3:]:
        v = values[r0][where]
        v = v[~torch.isnan(v)].numpy()
        if len(v):
            right.hist(v, bins=bins, density=True, alpha=0.5, color=color, label=name)
    right.set(xlabel=f"C-score at ratio {r0:g}", ylabel="density", title="C-scores")
    _legend(right)
    common.save_figure(fig, path)


def sweep_figure(sweep_dir: Path) -> Path | None:
    """Every finished job's ROC curve of the memorization estimate for corrupted against
    clean examples, in one figure (a noise sweep: one curve per noise level)."""
    fig, (ax,) = common.new_figure(width=5.5)
    drawn = 0
    for folder in common.finished_jobs(sweep_dir, "scores.csv"):
        frame = pd.read_csv(folder / "scores.csv").dropna(subset=["mem"])
        bad = frame["corrupted"].to_numpy().astype(bool)
        if bad.all() or not bad.any():
            continue
        order = np.argsort(-frame["mem"].to_numpy(), kind="stable")
        tpr = np.concatenate([[0], np.cumsum(bad[order]) / bad.sum()])
        fpr = np.concatenate([[0], np.cumsum(~bad[order]) / (~bad).sum()])
        a = json.loads((folder / "metrics.json").read_text()).get("auroc_mem")
        ax.plot(fpr, tpr, label=f"{common.job_label(folder)} (AUROC "
                                f"{'-' if a is None else f'{a:.3f}'})")
        drawn += 1
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=0.8)
    ax.set(xlabel="clean examples above the threshold", title="memorization finds the "
           "corrupted examples", ylabel="corrupted examples above the threshold")
    ax.legend(fontsize=7)
    path = sweep_dir / "scores_roc.png"
    common.save_figure(fig, path)
    return path
