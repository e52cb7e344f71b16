"""Theunissen, Davel, Barnard, "Insights regarding overfitting on noise in deep learning":
Fig. 2 (the generalization gap against three noise types), Figs. 3/6 (mean cosine similarity
per layer) and Figs. 5/7 (mean corruption polarization per layer), on Fashion-MNIST.

The networks are the paper's (Appendix A: MLP 10x512, ReLU, a bias at the first layer only,
Adam, MSE on one-hot targets, batches of 128, no regularization or early stopping, a fixed
number of epochs), through ``experiment=theunissen_fmnist``. The gap is the training accuracy on
the training labels minus the test accuracy, as the paper's ("subtracting the evaluation
accuracy from the training accuracy"). Cosine and polarization are the final epoch's, on the
training samples, as in the figures. The paper keeps, of 2 initializations, the one that fits
best; we keep every seed and report their spread.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from memorization.reproduce.plan import (
    Claim,
    Outcome,
    Paper,
    Results,
    Scale,
    SweepSpec,
    level_rows,
    levels,
    means,
    stat,
)
from memorization.reproduce.verdicts import Check, all_of, at_least, greater, slope_test

LABELS, INPUTS = "label_noise", "input_noise"
BASE = ("experiment=theunissen_fmnist",)


def _scale(name: str, data: tuple[str, ...], epochs: int, label_ps: str, input_ps: str,
           seeds: str, every: int, reduction: str) -> Scale:
    common = (*BASE, *data, f"trainer.max_epochs={epochs}", f"metrics.every_n_epochs={every}",
              "metrics.masc.enabled=false", "metrics.csr.enabled=false")
    return Scale(name, (
        SweepSpec(LABELS, (*common, "noise=label_flip"), {"noise.p": label_ps, "seed": seeds},
                  figures=("test_acc_vs_noise", "cosine_polarization_vs_depth"),
                  about="labels flipped to a different class (Fig. 2a, 3a/6a, 5a/7a)"),
        SweepSpec(INPUTS, (*common,), {"noise": "gaussian_sample,structured",
                                       "noise.p": input_ps, "seed": seeds},
                  figures=("test_acc_vs_noise", "cosine_polarization_vs_depth"),
                  about="per-sample Gaussian and structured (rotated, inverted) inputs "
                        "(Fig. 2b-c, 3b-c/6b-c, 5b-c/7b-c)"),
    ), reduction)


SCALES = {
    "smoke": _scale("smoke", ("data=digits", "data.val_size=0"), 8, "0,0.4", "0.4", "0", 4,
                    "The embedded digits, 8 epochs, one seed: a test of the pipeline, not "
                    "evidence."),
    "cpu": _scale(
        "cpu", ("data.train_size=1000", "data.val_size=500", "metrics.probe_size=1000",
                "trainer.check_val_every_n_epoch=10"), 400,
        "0,0.2,0.4,0.6,0.8", "0.25,0.5,1.0", "0,1,2", 100,
        "Fashion-MNIST with the paper's network, loss, optimizer, batch size and 400 epochs, "
        "but a seeded subset of 1,000 training images (500 more held out for validation; the "
        "full 10,000-image test set) in place of 55,000, so 3,200 updates in place of "
        "171,600; validation and test accuracy every 10 epochs (the training accuracy every "
        "epoch); 5 label-noise and 3 input-noise levels per type, 3 seeds each; cosine and "
        "polarization on all 1,000 training samples every 100 epochs. Why the shape should "
        "hold: the network (2.8M parameters) is even more over-parameterized for 1,000 "
        "images; the gap's linear rise with label noise comes from the fraction of memorized "
        "wrong labels, which the subset keeps. What may move: with 3,200 updates the noisiest "
        "runs may not fit completely (claim T1 says how far), and the paper expects the "
        "input-noise threshold (too little true data left) to come earlier with fewer "
        "samples, so the flat part may end sooner than on 55,000 images."),
    "paper": _scale(
        "paper", ("data.val_size=5000",), 400, "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
        "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0", "0,1,2", 20,
        "The paper's (Appendix A): 55,000 / 5,000 / 10,000 images, 400 epochs, noise levels "
        "0 to 1 in steps of 0.1; 3 seeds each (the paper: the best-fitting of 2)."),
}


def _gap_levels(df: pd.DataFrame, **where):
    return levels(df, "noise.p", "gap", **where)


def fits(r: Results) -> Outcome:
    both = pd.concat([r.jobs[LABELS], r.jobs[INPUTS]], ignore_index=True)
    s = stat(both, "train/acc")
    worst = both.loc[both["train/acc"].idxmin()] if len(both) else None
    note = ("" if s.lo >= 0.99 else
            f"the least-fitted run: {worst['noise']} p={float(worst['noise.p']):g} seed "
            f"{worst['seed']} at {100 * worst['train/acc']:.1f}%: fewer updates than the "
            f"paper's 171,600")
    return Outcome(f"train acc on the training labels over all {s.n} runs: {s.fmt(pct=True)}",
                   number=at_least(s.lo, 0.99, "lowest train acc", pct=True), note=note)


def gap_linear_in_labels(r: Results) -> Outcome:
    pts = _gap_levels(r.jobs[LABELS])
    x, y = means(pts)
    return Outcome("gap: " + ", ".join(f"p={a:g}: {s.fmt(pct=True)}" for a, s in pts),
                   direction=slope_test(x, y, +1, 0.9, "slope of the gap over p"),
                   rows=level_rows(pts, "noise.p", "generalization gap"))


def _at(pts, p: float) -> float:
    return next((s.mean for x, s in pts if math.isclose(x, p)), math.nan)


def input_gap_flat(r: Results) -> Outcome:
    base = _gap_levels(r.jobs[LABELS])
    g0 = _at(base, 0.0)
    label = dict((x, s.mean) for x, s in base)
    tests, rows = [], []
    for noise in ("gaussian_sample", "structured"):
        pts = _gap_levels(r.jobs[INPUTS], noise=noise)
        for x, s in pts:
            rows.append({"noise": noise, "noise.p": f"{x:g}", "gap": s.fmt(pct=True),
                         "rise over p=0": f"{100 * (s.mean - g0):+.1f} pp",
                         "label noise's rise": (f"{100 * (label[x] - g0):+.1f} pp"
                                                if x in label else "–")})
        flat = [(x, s.mean) for x, s in pts if x <= 0.5]
        tests += [Check(f"{noise}: gap rise over p=0 ≤ 5 pp for p ≤ 0.5",
                       ", ".join(f"p={x:g}: {100 * (v - g0):+.1f} pp" for x, v in flat),
                       bool(flat) and all(v - g0 <= 0.05 for _, v in flat)
                       if not math.isnan(g0) else None)]
        top = pts[-1] if pts else None
        if top is not None and top[0] >= 0.99:  # no true data left: the gap must be large
            tests.append(greater(top[1].mean - g0, 0.3,
                                 f"{noise}: gap at p=1 exceeds p=0's by > 30 pp",
                                 f"{100 * (top[1].mean - g0):+.1f} pp"))
    return Outcome("gap rise over p=0 (" + f"{100 * g0:.1f}%): " + "; ".join(
        f"{d['noise']} p={d['noise.p']}: {d['rise over p=0']}" for d in rows),
        direction=all_of(tests), rows=rows)


def inputs_alike(r: Results) -> Outcome:
    g = _gap_levels(r.jobs[INPUTS], noise="gaussian_sample")
    s = dict((x, v.mean) for x, v in _gap_levels(r.jobs[INPUTS], noise="structured"))
    diffs = [(x, v.mean - s[x]) for x, v in g if x in s and x < 0.99]
    test = Check("|gap(Gaussian) − gap(structured)| ≤ 5 pp at every p < 1",
                ", ".join(f"p={x:g}: {100 * d:+.1f} pp" for x, d in diffs),
                all(abs(d) <= 0.05 for _, d in diffs) if diffs else None)
    return Outcome(test.measured, direction=test)


def _layers(df: pd.DataFrame, metric: str) -> list[str]:
    cols = [c for c in df.columns if c.startswith(f"{metric}/train/fc")]
    return sorted(cols, key=lambda c: int(re.sub(r"\D", "", c.rsplit("/", 1)[1]) or 0))


def _profile(df: pd.DataFrame, metric: str, **where) -> list[float]:
    """The metric's mean over seeds at each hidden layer, first to last."""
    for k, v in where.items():
        df = df[(df[k].astype(float) - v).abs() < 1e-9] if isinstance(v, float) else df[df[k] == v]
    return [float(df[c].mean()) for c in _layers(df, metric)]


def _half_depth(profile: list[float]) -> float:
    """The first hidden layer (1-based) whose cosine reaches half the profile's maximum."""
    if not profile or all(math.isnan(v) for v in profile):
        return math.nan
    top = max(v for v in profile if not math.isnan(v))
    return float(next(i for i, v in enumerate(profile, 1) if v >= top / 2))


def cosine_deeper(r: Results) -> Outcome:
    lab, ins = r.jobs[LABELS], r.jobs[INPUTS]
    base = _profile(lab, "cosine", **{"noise.p": 0.0})
    d0 = _half_depth(base)
    rows = [{"model": "no noise", "layer reaching half the max cosine": f"{d0:g}",
             "cosine fc1 … last": " ".join(f"{v:.3f}" for v in base)}]
    tests = []
    for name, df, noise in (("label", lab, None), ("gaussian", ins, "gaussian_sample"),
                            ("structured", ins, "structured")):
        sub = df if noise is None else df[df["noise"] == noise]
        ps = sorted(p for p in sub["noise.p"].astype(float).unique() if 0 < p < 0.99)
        if not ps:
            continue
        prof = _profile(sub, "cosine", **{"noise.p": ps[-1]})
        d = _half_depth(prof)
        rows.append({"model": f"{name} p={ps[-1]:g}", "layer reaching half the max cosine":
                     f"{d:g}", "cosine fc1 … last": " ".join(f"{v:.3f}" for v in prof)})
        # label noise: strictly deeper (the paper's clearest case); inputs: not shallower
        # (structured noise is "more consistent with the baseline")
        strict = name == "label"
        tests.append(Check(f"{name} p={ps[-1]:g}: that layer {'>' if strict else '≥'} the "
                          f"noiseless model's", f"{d:g} vs {d0:g}",
                          (d > d0 if strict else d >= d0) if not math.isnan(d + d0) else None))
    return Outcome("; ".join(f"{x['model']}: layer {x['layer reaching half the max cosine']}"
                             for x in rows), direction=all_of(tests), rows=rows,
                   note="Depth of a high cosine: the first hidden layer whose mean cosine "
                        "(over seeds) reaches half of that network's largest, at the highest "
                        "noise level below 1.")


def polarized_late(r: Results) -> Outcome:
    tests, rows = [], []
    for name, df, noise in (("label", r.jobs[LABELS], None),
                            ("gaussian", r.jobs[INPUTS], "gaussian_sample"),
                            ("structured", r.jobs[INPUTS], "structured")):
        sub = df if noise is None else df[df["noise"] == noise]
        for p in sorted(p for p in sub["noise.p"].astype(float).unique() if 0 < p < 0.99):
            prof = _profile(sub, "polarization", **{"noise.p": p})
            if len(prof) < 4 or any(math.isnan(v) for v in prof):
                continue
            k = max(1, len(prof) // 3)
            early, late = sum(prof[:k]) / k, sum(prof[-k:]) / k
            rows.append({"model": f"{name} p={p:g}", "first third": f"{early:.3f}",
                         "last third": f"{late:.3f}",
                         "per layer": " ".join(f"{v:.2f}" for v in prof)})
            tests.append(greater(late, early, f"{name} p={p:g}: last third > first third",
                                 f"{late:.3f} vs {early:.3f}"))
    return Outcome(f"later layers more polarized in {sum(bool(t.passed) for t in tests)} of "
                   f"{len(tests)} noisy models", direction=all_of(
                       tests, "polarization of the last third of the hidden layers > the "
                       "first third, every noisy model"), rows=rows)


PAPER = Paper(
    key="theunissen",
    title="Theunissen, Davel, Barnard, Insights regarding overfitting on noise in deep learning",
    file="000_270cdbc36cf4d13a.txt",
    claims=(
        Claim("T1", "Every model fits its noisy training data", "Sec. 4.1, Fig. 2",
              "\"All models were able to easily fit the noisy training data\" (perfect, or "
              "close to perfect)", (LABELS, INPUTS), fits),
        Claim("T2", "The generalization gap grows near-linearly with label noise", "Fig. 2a",
              "\"a near linear inverse correlation between the amount of label noise and the "
              "model's ability to generalize\"", (LABELS,), gap_linear_in_labels),
        Claim("T3", "Input noise leaves the gap flat until the true data run out",
              "Fig. 2b-c", "\"an almost negligible effect on generalization up to the point "
              "where there is an insufficient amount of true data\"", (LABELS, INPUTS),
              input_gap_flat),
        Claim("T4", "Gaussian and structured input noise affect the gap alike", "Fig. 2b vs 2c",
              "\"very similar influences on generalization\"", (INPUTS,), inputs_alike),
        Claim("T5", "Noise moves high cosine similarity to deeper layers", "Figs. 3, 6",
              "\"the depth at which high mean cosine similarities are obtained being deeper "
              "in the noise-corrupted networks\"", (LABELS, INPUTS), cosine_deeper,
              why_not="the mean cosines are small and nearly flat over depth at a reduced scale "
              "(see the table), so the layer that first reaches half of the largest moves with "
              "small differences; the networks had far fewer updates than the paper's (T1)."),
        Claim("T6", "Sample sets are polarized between true and corrupted samples, most in "
              "later layers", "Figs. 5, 7", "\"sample sets tend to be highly in favour of true "
              "or corrupted sample information, and this is especially true in the later "
              "layers\"", (LABELS, INPUTS), polarized_late,
              why_not="short training (far fewer updates than the paper's, T1): the later "
              "layers have not yet sorted the sample sets into true and corrupted ones. Our "
              "reading of a sample set's polarization (memorization/metrics/polarization.py) "
              "is the other candidate."),
    ),
    scales=SCALES,
)
