"""Theunissen, Davel, Barnard, "Insights regarding overfitting on noise in deep learning":
Fig. 2 (the generalization gap against three noise types), Figs. 3/6 (mean cosine similarity
per layer) and Figs. 5/7 (mean corruption polarization per layer), on Fashion-MNIST.

The networks are the paper's (Appendix A: MLP 10x512, ReLU, a bias at the first layer only,
Adam, MSE on one-hot targets, batches of 128, no regularization or early stopping, a fixed
number of epochs), through ``experiment=theunissen_fmnist``. The gap is the training accuracy on
the training labels minus the test accuracy, as the paper's ("subtracting the evaluation
accuracy from the training accuracy"). Cosine and polarization are the final epoch's, on the
training samples, as in the figures. As the paper (Appendix A: "repeated for at least 2 random
uniform parameter initialization and the model that best fits the training data is selected to
be analysed"), each setting runs 2 initializations and every claim is judged on the one that
fits best (:func:`~memorization.cli.reproduce.plan.rank_inits`); the same test on the other is shown
beside it, and a claim whose outcome differs between them is *inconclusive*.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from memorization.cli.reproduce.plan import (
    Claim,
    Outcome,
    Paper,
    Results,
    Scale,
    SweepSpec,
    level_rows,
    levels,
    means,
    rank_inits,
    seeds_of,
    stat,
)
from memorization.cli.reproduce.verdicts import (
    Check,
    all_of,
    at_least,
    by_seed,
    greater,
    linear,
    slope_test,
)

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
    "smoke": _scale("smoke", ("data=digits", "data.val_size=0"), 8, "0,0.4", "0.4", "0,1", 4,
                    "The embedded digits, 8 epochs, two initializations: a test of the "
                    "pipeline, not evidence."),
    "cpu": _scale(
        "cpu", ("data.train_size=1000", "data.val_size=500", "metrics.probe_size=1000",
                "trainer.check_val_every_n_epoch=10"), 400,
        "0,0.2,0.4,0.6,0.8", "0.25,0.5,0.75,1.0", "0,1", 100,
        "Fashion-MNIST with the paper's network, loss, optimizer, batch size and 400 epochs, "
        "but a seeded subset of 1,000 training images (500 more held out for validation; the "
        "full 10,000-image test set) in place of 55,000, so 3,200 updates in place of "
        "171,600; validation and test accuracy every 10 epochs (the training accuracy every "
        "epoch); 5 label-noise and 4 input-noise levels per type, 2 initializations each "
        "(the paper's count; the best-fitting one is analysed); cosine and polarization on "
        "all 1,000 training samples every 100 epochs. Why the shape should hold: the network "
        "(2.8M parameters) is even more over-parameterized for 1,000 images; the gap's linear "
        "rise with label noise comes from the fraction of memorized wrong labels, which the "
        "subset keeps. What may move: with 3,200 updates the noisiest runs may not fit "
        "completely (claim T1 says how far), and with 100 images a class the per-layer "
        "statistics (T5, T6) are measured on few samples: the cpu10k scale has ten times "
        "more."),
    "cpu10k": _scale(
        "cpu10k", ("data.train_size=10000", "data.val_size=500", "metrics.probe_size=2000",
                   "trainer.check_val_every_n_epoch=20"), 400,
        "0,0.4,0.8", "0.5", "0,1", 200,
        "Fashion-MNIST with the paper's network, loss, optimizer, batch size and 400 epochs "
        "(the paper's epochs: 31,600 updates, each image seen as often as in the paper) on a "
        "seeded subset of 10,000 training images (500 more held out, the full test set); "
        "label noise 0 / 0.4 / 0.8 and Gaussian and structured input noise at 0.5, 2 "
        "initializations each, the best-fitting one analysed; cosine and polarization on "
        "2,000 training samples every 200 epochs. Fewer levels than the cpu scale, not fewer "
        "images: the per-layer claims (T5, T6) need the images, and 10 runs of 400 epochs "
        "fit about 3 hours of this 2-core CPU; T2-T4 have their levels at the cpu scale."),
    "paper": _scale(
        "paper", ("data.val_size=5000",), 400, "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0",
        "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0", "0,1", 20,
        "The paper's (Appendix A): 55,000 / 5,000 / 10,000 images, 400 epochs, noise levels "
        "0 to 1 in steps of 0.1; 2 initializations each, the best-fitting one analysed."),
}


SETTING = ("noise", "noise.p")
OTHER_READING = "polarization_trainlabel"  # c = the training label: the other reading


def _ranked(r: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both sweeps with each run's ``init`` rank in its setting (1: the best fit, analysed)."""
    return _rank(r, LABELS), _rank(r, INPUTS)


def _rank(r: Results, sweep: str) -> pd.DataFrame:
    return rank_inits(r.jobs[sweep], SETTING)


def _init(df: pd.DataFrame, k) -> pd.DataFrame:
    """The runs of initialization rank ``k`` (None: the best-fitting one, the paper's)."""
    return df[df["init"] == (1 if k is None else k)]


def _per_init(test, *frames: pd.DataFrame) -> Check:
    """``test`` on the best-fitting initializations, with each rank's outcome beside it."""
    return by_seed(test, seeds_of(*frames, key="init"), label="init",
                   pooled="the best-fitting initializations, analysed")


def _gap_levels(df: pd.DataFrame, **where):
    return levels(df, "noise.p", "gap", **where)


def _spread(df: pd.DataFrame, y: str, **where) -> str:
    """The other initializations' values of ``y`` at each level: the spread the paper's
    protocol leaves aside."""
    others = df[df["init"] > 1]
    pts = levels(others, "noise.p", y, **where)
    return ", ".join(f"p={x:g}: {s.fmt(pct=True)}" for x, s in pts) or "none"


def fits(r: Results) -> Outcome:
    lab, ins = _ranked(r)
    both = pd.concat([lab, ins], ignore_index=True)
    best, rest = _init(both, 1), both[both["init"] > 1]
    s, o = stat(best, "train/acc"), stat(rest, "train/acc")
    worst = best.loc[best["train/acc"].idxmin()] if len(best) else None
    note = ("" if s.lo >= 0.99 else
            f"the least-fitted analysed run: {worst['noise']} p={float(worst['noise.p']):g} "
            f"seed {worst['seed']} at {100 * worst['train/acc']:.1f}%{_trend(r, worst)}. ") + (
        "As the paper's protocol, a setting's other initializations are there to make sure one "
        "fits; they are reported, not tested.")
    return Outcome(f"train acc on the training labels of the best-fitting initialization of "
                   f"each of {s.n} settings: {s.fmt(pct=True)} (the other initializations: "
                   f"{o.fmt(pct=True)})",
                   number=at_least(s.lo, 0.99, "lowest train acc", pct=True), note=note)


def _trend(r: Results, job: pd.Series, span: int = 100) -> str:
    """Measured: the run's training accuracy over its last ``span`` epochs (from its history):
    still rising says more updates would fit it."""
    for name in (LABELS, INPUTS):
        h = r.history.get(name)
        if h is None or not len(h):
            continue
        tr = h[(h["job"].astype(str) == str(job["job"])) & (h["split"] == "train")
               & (h["metric"] == "acc")]
        if "layer" in tr:
            tr = tr[tr["layer"].isna() | (tr["layer"] == "")]
        if str(job.get("noise")) not in {str(v) for v in r.jobs[name]["noise"]} or tr.empty:
            continue
        last = int(tr["epoch"].max())
        then = tr[tr["epoch"] <= last - span]
        if then.empty:
            return ""
        a = float(then.loc[then["epoch"].idxmax(), "value"])
        b = float(tr.loc[tr["epoch"].idxmax(), "value"])
        way = "still rising" if b - a > 0.005 else "flat"
        return (f" ({way} over its last {span} epochs: {100 * a:.1f}% at epoch "
                f"{last - span} → {100 * b:.1f}% at {last}, measured)")
    return ""


def gap_linear_in_labels(r: Results) -> Outcome:
    lab = _rank(r, LABELS)
    pts = _gap_levels(_init(lab, 1))

    def test(k) -> Check:
        x, y = means(_gap_levels(_init(lab, k)))
        return slope_test(x, y, +1, 0.9, "slope of the gap over p")

    return Outcome("gap: " + ", ".join(f"p={a:g}: {s.fmt(pct=True)}" for a, s in pts),
                   direction=_per_init(test, lab),
                   rows=level_rows(pts, "noise.p", "generalization gap"),
                   note=f"The other initializations' gaps: {_spread(lab, 'gap')}.")


def _at(pts, p: float) -> float:
    return next((s.mean for x, s in pts if math.isclose(x, p)), math.nan)


FLAT_PP, FLAT_SHARE = 0.05, 0.25


def input_gap_flat(r: Results) -> Outcome:
    lab, ins = _ranked(r)
    best_lab = _gap_levels(_init(lab, 1))
    g0 = _at(best_lab, 0.0)
    label = dict((x, s.mean) for x, s in best_lab)
    rows = []
    for noise in ("gaussian_sample", "structured"):
        for x, s in _gap_levels(_init(ins, 1), noise=noise):
            rows.append({"noise": noise, "noise.p": f"{x:g}", "gap": s.fmt(pct=True),
                         "rise over p=0": f"{100 * (s.mean - g0):+.1f} pp",
                         "label noise's rise": (f"{100 * (label[x] - g0):+.1f} pp"
                                                if x in label else "–")})

    def test(k) -> Check:
        base = _gap_levels(_init(lab, k))
        z = _at(base, 0.0)
        lx, ly = means([(x, s) for x, s in base if x <= 0.5])
        label_slope = linear(lx, ly)[0]
        tests = []
        for noise in ("gaussian_sample", "structured"):
            flat = [(x, s.mean) for x, s in _gap_levels(_init(ins, k), noise=noise) if x <= 0.5]
            tests.append(Check(
                f"{noise}: gap rise over p=0 ≤ {100 * FLAT_PP:g} pp at every p ≤ 0.5",
                ", ".join(f"p={x:g}: {100 * (v - z):+.1f} pp" for x, v in flat),
                all(v - z <= FLAT_PP for _, v in flat)
                if flat and not math.isnan(z) else None))
            slope = linear([0.0, *(x for x, _ in flat)], [z, *(v for _, v in flat)])[0]
            tests.append(Check(
                f"{noise}: slope of the gap over p ≤ 0.5 ≤ {FLAT_SHARE:g} x label noise's",
                f"{slope:+.3f} vs {FLAT_SHARE:g} x {label_slope:+.3f}",
                slope <= FLAT_SHARE * label_slope
                if not (math.isnan(slope) or math.isnan(label_slope)) else None))
        return all_of(tests, f"the gap flat for p ≤ 0.5 under both input noises (each rise ≤ "
                             f"{100 * FLAT_PP:g} pp, the slope ≤ {FLAT_SHARE:g} x label "
                             f"noise's)")

    return Outcome("gap rise over p=0 (" + f"{100 * g0:.1f}%): " + "; ".join(
        f"{d['noise']} p={d['noise.p']}: {d['rise over p=0']}" for d in rows),
        direction=_per_init(test, lab, ins), rows=rows,
        note="The flat part is tested (p ≤ 0.5: each rise small, and the slope a quarter of "
             "label noise's at most); where the true data run out is reported, not tested: "
             "at p = 1 the gap is large by construction (no true data, so test accuracy at "
             "chance).")


def inputs_alike(r: Results) -> Outcome:
    ins = _rank(r, INPUTS)

    def test(k) -> Check:
        g = _gap_levels(_init(ins, k), noise="gaussian_sample")
        s = dict((x, v.mean) for x, v in _gap_levels(_init(ins, k), noise="structured"))
        diffs = [(x, v.mean - s[x]) for x, v in g if x in s and x < 0.99]
        return Check("|gap(Gaussian) − gap(structured)| ≤ 5 pp at every p < 1",
                     ", ".join(f"p={x:g}: {100 * d:+.1f} pp" for x, d in diffs),
                     all(abs(d) <= 0.05 for _, d in diffs) if diffs else None)

    direction = _per_init(test, ins)
    return Outcome(direction.measured, direction=direction)


def _layers(df: pd.DataFrame, metric: str) -> list[str]:
    cols = [c for c in df.columns if c.startswith(f"{metric}/train/fc")]
    return sorted(cols, key=lambda c: int(re.sub(r"\D", "", c.rsplit("/", 1)[1]) or 0))


def _profile(df: pd.DataFrame, metric: str, **where) -> list[float]:
    """The metric at each hidden layer, first to last (the mean, if several runs match)."""
    for k, v in where.items():
        df = df[(df[k].astype(float) - v).abs() < 1e-9] if isinstance(v, float) else df[df[k] == v]
    return [float(df[c].mean()) for c in _layers(df, metric)]


def depth_of_cosine(profile: list[float]) -> float:
    """The cosine-weighted mean depth of a network: sum_l l c_l / sum_l c_l over its hidden
    layers l = 1..L, each mean cosine c_l clipped at 0. Where the high cosines sit, as one
    number that moves smoothly with every layer's value (no threshold for a layer to reach)."""
    vals = [max(v, 0.0) for v in profile if not math.isnan(v)]
    if len(vals) != len(profile) or not vals or sum(vals) == 0:
        return math.nan
    return sum(i * v for i, v in enumerate(vals, 1)) / sum(vals)


def _noisy(df: pd.DataFrame, noise: str | None) -> tuple[pd.DataFrame, list[float]]:
    sub = df if noise is None else df[df["noise"] == noise]
    return sub, sorted(p for p in sub["noise.p"].astype(float).unique() if 0 < p < 0.99)


_TYPES = (("label", LABELS, None), ("gaussian", INPUTS, "gaussian_sample"),
          ("structured", INPUTS, "structured"))


def cosine_deeper(r: Results) -> Outcome:
    frames = dict(zip((LABELS, INPUTS), _ranked(r), strict=True))
    lab = frames[LABELS]
    base = _profile(_init(lab, 1), "cosine", **{"noise.p": 0.0})
    d0 = depth_of_cosine(base)
    rows = [{"model": "no noise", "cosine-weighted depth": f"{d0:.2f}",
             "cosine fc1 … last": " ".join(f"{v:.3f}" for v in base)}]
    for name, sweep, noise in _TYPES:
        sub, ps = _noisy(frames[sweep], noise)
        for p in ps:
            prof = _profile(_init(sub, 1), "cosine", **{"noise.p": p})
            rows.append({"model": f"{name} p={p:g}",
                         "cosine-weighted depth": f"{depth_of_cosine(prof):.2f}",
                         "cosine fc1 … last": " ".join(f"{v:.3f}" for v in prof)})

    def test(k) -> Check:
        z = depth_of_cosine(_profile(_init(lab, k), "cosine", **{"noise.p": 0.0}))
        tests = []
        for name, sweep, noise in _TYPES:
            sub, ps = _noisy(frames[sweep], noise)
            if not ps:
                continue
            d = depth_of_cosine(_profile(_init(sub, k), "cosine", **{"noise.p": ps[-1]}))
            tests.append(greater(d, z, f"{name} p={ps[-1]:g}: cosine-weighted depth > the "
                                       f"noiseless model's", f"{d:.2f} vs {z:.2f} "
                                       f"({d - z:+.2f} layers)"))
        return all_of(tests, "cosine-weighted depth of each noisy model (each type's highest "
                             "level below 1) > the noiseless model's")

    return Outcome("; ".join(f"{x['model']}: depth {x['cosine-weighted depth']}" for x in rows),
                   direction=_per_init(test, *frames.values()), rows=rows,
                   note="Depth of the high cosines: the cosine-weighted mean depth "
                        "sum_l l c_l / sum_l c_l over the hidden layers (c_l the layer's mean "
                        "cosine, clipped at 0), of each setting's best-fitting initialization, "
                        "tested at each noise type's highest level below 1. It replaces the "
                        "first layer to reach half the largest cosine, which hinged on one "
                        "threshold (a 0.001 difference moved it by two layers).")


def _thirds(prof: list[float]) -> tuple[float, float]:
    k = max(1, len(prof) // 3)
    return sum(prof[:k]) / k, sum(prof[-k:]) / k


def _readings(df: pd.DataFrame) -> tuple[str | None, str | None]:
    """(the column prefix holding c = true class, the one holding c = training label), from
    the companion column each run logs beside ``polarization/`` (its configured reading):
    ``polarization_trainlabel/`` when that is the true class, ``polarization_truelabel/``
    when it is the training label. Neither: runs from before both were logged, reading
    unknown (None, None)."""
    if _layers(df, OTHER_READING):
        return "polarization", OTHER_READING
    if _layers(df, "polarization_truelabel"):
        return "polarization_truelabel", "polarization"
    return None, None


def polarized_late(r: Results) -> Outcome:
    frames = dict(zip((LABELS, INPUTS), _ranked(r), strict=True))
    true_col, train_col = _readings(pd.concat(list(frames.values()), ignore_index=True))
    if true_col is None:
        return Outcome("the runs do not say which class their polarization used (they predate "
                       "the logging of both readings): rerun them",
                       direction=Check("polarization by true class, last third > first third",
                                       "reading unknown", None))
    def models(k, column: str):
        """(model, level, its sub-frame, per-layer profile) of every noisy model with a whole
        profile, initialization rank ``k``."""
        for name, sweep, noise in _TYPES:
            sub, ps = _noisy(frames[sweep], noise)
            for p in ps:
                prof = _profile(_init(sub, k), column, **{"noise.p": p})
                if len(prof) >= 4 and not any(math.isnan(v) for v in prof):
                    yield name, p, sub, prof

    rows = []
    for name, p, sub, prof in models(1, true_col):
        early, late = _thirds(prof)
        row = {"model": f"{name} p={p:g}", "first third": f"{early:.3f}",
               "last third": f"{late:.3f}", "per layer": " ".join(f"{v:.2f}" for v in prof)}
        other = _profile(_init(sub, 1), train_col, **{"noise.p": p})
        if len(other) == len(prof) and not any(math.isnan(v) for v in other):
            row["c = training label: first → last third"] = "{:.3f} → {:.3f}".format(
                *_thirds(other))
        rows.append(row)

    def test(k) -> Check:
        tests = [greater(late, early, f"{name} p={p:g}: last third > first third",
                         f"{late:.3f} vs {early:.3f}")
                 for name, p, _, prof in models(k, true_col)
                 for early, late in [_thirds(prof)]]
        return all_of(tests, "polarization of the last third of the hidden layers > the first "
                             "third, every noisy model")

    direction = _per_init(test, *frames.values())
    held = sum(1 for d in rows if float(d["last third"]) > float(d["first third"]))
    return Outcome(f"later layers more polarized in {held} of {len(rows)} noisy models (the "
                   f"best-fitting initializations)", direction=direction, rows=rows,
                   note="A sample's class c is its true class (the paper's reading: "
                        "memorization/metrics/polarization.py); the other reading, c = the "
                        "training label, is shown beside it, not tested.")


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
              why_not="(our reading, not tested) "
              "the mean cosines are small (about 0.05-0.15) and rise with depth in "
              "every network, noiseless or not (the table), so the weighted depth moves by "
              "fractions of a layer and the noise's shift can sit inside the difference between "
              "initializations; the networks had far fewer updates than the paper's (T1)."),
        Claim("T6", "Sample sets are polarized between true and corrupted samples, most in "
              "later layers", "Figs. 5, 7", "\"sample sets tend to be highly in favour of true "
              "or corrupted sample information, and this is especially true in the later "
              "layers\"", (LABELS, INPUTS), polarized_late,
              why_not="where it fails is measured (the table): the label-noise models rise "
              "from the first third to the last on both initializations, and the input-noise "
              "models fall, their later nodes firing on the clean and the noisy samples of a "
              "class alike; why (not tested): fewer images and updates than the paper's, which "
              "the cpu and cpu10k documents compare."),
    ),
    scales=SCALES,
)
