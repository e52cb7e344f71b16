"""The MASC paper, "Decoding Generalization from Memorization in Deep Neural Networks": Table 1
(how much MASC on the best layer beats the model's test accuracy, on corrupted-label
subspaces), Figs. 2-3 (MASC per layer, true-label accuracy on the training set) and Fig. 4 /
Tables 6-8 (relabel the training set with the best layer's MASC and retrain).

Both rows on Fashion-MNIST: the CNN row is the paper's CNN-Fashion-MNIST; the MLP row is the
paper's MLP-MNIST recipe run on Fashion-MNIST in place of MNIST (the MNIST files are not
available here), so its numbers are held against MLP-MNIST's with that said. Every job runs the
relabel stage after its fit (``relabel.enabled=true``, the paper's Sec. 3.3: the test set split
80/20, the best layer chosen by MASC accuracy on the 20%, retraining up to 30 epochs with
patience 3, accuracies on the 80%), on the final weights.

Gain, as Table 1: (best layer's MASC test accuracy - model test accuracy) / model test accuracy.
Our reading: both accuracies on the 80% of the test set and the best layer chosen on the other
20% (the stage's numbers), where Table 1 picks "the one that has the highest measured MASC test
accuracy" on the test set it reports. Ours is the stricter estimate (a layer picked on the
reported data can only score higher), and it uses the final weights even when the per-epoch
test accuracy is logged every few epochs.
"""

from __future__ import annotations

import math

import pandas as pd

from memorization.report.tables import best_masc_layer
from memorization.reproduce.plan import (
    Claim,
    Outcome,
    Paper,
    Results,
    Scale,
    SweepSpec,
)
from memorization.reproduce.verdicts import Check, Stat, all_of, monotone

CNN, MLP = "cnn_fmnist", "mlp_fmnist"
PS = (0.2, 0.4, 0.6, 0.8)
MODEL_COL, MASC_COL = ("model's train acc, true labels",
                       "best layer's MASC train acc, true labels")
TABLE1 = {CNN: (0.0749, 0.3350, 0.8493, 1.8900), MLP: (0.1093, 0.3163, 0.7504, 1.5993)}


def _scale(name: str, data: tuple[str, ...], ps: str, seeds: str, epochs: int, every: int,
           reduction: str) -> Scale:
    common = (*data, f"trainer.max_epochs={epochs}", f"metrics.every_n_epochs={every}",
              "metrics.cosine.enabled=false", "metrics.polarization.enabled=false",
              "metrics.csr.enabled=false", "relabel.enabled=true")
    figures = ("masc_per_layer", "test_acc_vs_noise")
    return Scale(name, (
        SweepSpec(CNN, ("experiment=masc_cnn_fmnist", *common), {"noise.p": ps, "seed": seeds},
                  figures=figures, about="the paper's CNN, MASC on input, flatten and FC layers"),
        SweepSpec(MLP, ("experiment=masc_relabel_mlp_mnist", "data=fashion_mnist", *common),
                  {"noise.p": ps, "seed": seeds}, figures=figures,
                  about="the paper's MLP-MNIST recipe on Fashion-MNIST, MASC on every layer"),
    ), reduction)


SCALES = {
    "smoke": _scale("smoke", ("data=digits", "data.shape=[1,8,8]"), "0.4", "0", 3, 3,
                    "The embedded digits, 3 epochs, one seed: a test of the pipeline, not "
                    "evidence."),
    "cpu": _scale(
        "cpu", ("data.train_size=1000", "trainer.check_val_every_n_epoch=10"),
        "0.2,0.4,0.6,0.8", "0,1,2", 300, 100,
        "Fashion-MNIST for both rows, on a seeded subset of 1,000 training images (the full "
        "10,000-image test set), trained as the paper's until 99% training accuracy but for at "
        "most 300 epochs (the paper's: 500), 3 seeds (the paper's: 3 runs); the test accuracy "
        "logged every 10 epochs (the claims use the relabel stage's, on the final weights); "
        "MASC fitted on all 1,000 training images at the end. Why the shape should hold: "
        "MASC's advantage comes from the corrupted labels being spread uniformly over classes, "
        "so each class subspace is still dominated by its true members; that holds for any "
        "training-set size, though 100 images a class make each subspace noisier."),
    "paper": _scale(
        "paper", (), "0.2,0.4,0.6,0.8", "0,1,2", 500, 25,
        "The paper's: all 60,000 training images, until 99% training accuracy or 500 epochs, "
        "3 runs; the MLP row needs data=mnist for the paper's own MLP-MNIST."),
}


def _gain(row: pd.Series) -> tuple[float, str]:
    acc, masc = row.get("relabel/model/test_acc_before"), row.get("relabel/masc/masc_test_acc")
    if acc is None or masc is None or not acc or math.isnan(acc) or math.isnan(masc):
        return math.nan, ""
    return (masc - acc) / acc, str(row.get("relabel/masc/best_layer") or "")


def _gains(df: pd.DataFrame) -> list[tuple[float, Stat, str]]:
    out = []
    for p, group in df.groupby("noise.p", sort=True):
        vals = [_gain(r) for _, r in group.iterrows()]
        layers = sorted({name for _, name in vals if name})
        out.append((float(p), Stat.of(v for v, _ in vals), ", ".join(layers)))
    return out


_SMALL_SUBSPACES = (
    "the class subspaces are fitted to a reduced training set (1,000 images at the cpu scale, "
    "about 100 a class and most of them mislabelled at high p; the paper's: 60,000), so MASC's "
    "test accuracy, and with it the gain over the model, stays lower at high noise.")


def _table1(sweep: str, row: str):
    def check(r: Results) -> Outcome:
        pts = _gains(r.jobs[sweep])
        paper = dict(zip(PS, TABLE1[sweep], strict=True))
        rows, close = [], []
        for p, s, layers in pts:
            target = paper.get(round(p, 2))
            rows.append({"noise.p": f"{p:g}", "paper": f"+{100 * target:.1f}%" if target
                         else "–", "ours": s.fmt(pct=True), "best layer(s)": layers})
            if target is not None:
                close.append(Check(f"p={p:g}", f"{100 * s.mean:+.1f}% vs {100 * target:+.1f}%",
                                  abs(s.mean - target) <= 0.05 + 0.25 * target
                                  if s.n else None))
        number = all_of(close, "|ours − paper| ≤ 5 pp + 25% of the paper's gain, at every p")
        direction = all_of([
            Check("gain > 0 at every p", ", ".join(f"{100 * s.mean:+.1f}%" for _, s, _ in pts),
                 all(s.mean > 0 for _, s, _ in pts) if pts else None),
            monotone([s.mean for _, s, _ in pts], +1, what="gain over p")])
        return Outcome(f"{row}: gain " + ", ".join(f"p={p:g}: {s.fmt(pct=True)}"
                                                   for p, s, _ in pts),
                       number=number, direction=direction, rows=rows)
    return check


def true_labels_recovered(r: Results) -> Outcome:
    rows, tests = [], []
    for sweep in (CNN, MLP):
        df = r.jobs[sweep]
        for p, group in df.groupby("noise.p", sort=True):
            best = [best_masc_layer(row, "masc/train_true/") for _, row in group.iterrows()]
            masc = Stat.of(b[0] for b in best if b)
            model = Stat.of(group["train/acc_true"])
            layers = sorted({b[1] for b in best if b})
            rows.append({"model": sweep, "noise.p": f"{p:g}", MODEL_COL: model.fmt(pct=True),
                         MASC_COL: masc.fmt(pct=True),
                         "layer(s)": ", ".join(layers)})
            tests.append(Check(f"{sweep} p={p:g}: best layer's MASC > the model",
                              f"{100 * masc.mean:.1f}% vs {100 * model.mean:.1f}%",
                              masc.mean > model.mean if masc.n and model.n else None))
    return Outcome("; ".join(f"{d['model']} p={d['noise.p']}: {d[MASC_COL]} vs model "
                             f"{d[MODEL_COL]}" for d in rows),
                   direction=all_of(tests, "at every p, MASC on the best layer labels the "
                                           "training set by its true labels better than the "
                                           "model does"), rows=rows)


def retrain_helps(r: Results) -> Outcome:
    rows, tests = [], []
    for sweep in (CNN, MLP):
        df = r.jobs[sweep]
        if "relabel/model/test_acc_before" not in df:
            continue
        for p, group in df.groupby("noise.p", sort=True):
            before = Stat.of(group["relabel/model/test_acc_before"])
            after = Stat.of(group["relabel/masc/test_acc_after"])
            true = Stat.of(group.get("relabel/masc_true/test_acc_after", pd.Series([])))
            rows.append({"model": sweep, "noise.p": f"{p:g}", "before": before.fmt(pct=True),
                         "retrained on MASC labels": after.fmt(pct=True),
                         "retrained on MASC-true labels": true.fmt(pct=True),
                         "wrong labels before → after": _wrong(group)})
            if p >= 0.4:
                tests.append(Check(f"{sweep} p={p:g}: retrained > before",
                                  f"{100 * after.mean:.1f}% vs {100 * before.mean:.1f}%",
                                  after.mean > before.mean if after.n else None))
    return Outcome(f"retraining raised the test accuracy in {sum(bool(t.passed) for t in tests)}"
                   f" of {len(tests)} settings with p ≥ 0.4",
                   direction=all_of(tests, "test accuracy after retraining on the best layer's "
                                           "MASC labels > before, every model at p ≥ 0.4"),
                   rows=rows)


def _wrong(group: pd.DataFrame) -> str:
    if "relabel/masc/wrong_before" not in group:
        return "–"
    b, a = group["relabel/masc/wrong_before"].mean(), group["relabel/masc/wrong_after"].mean()
    return f"{100 * b:.1f}% → {100 * a:.1f}%"


PAPER = Paper(
    key="masc",
    title="Decoding Generalization from Memorization in Deep Neural Networks (MASC)",
    file="003_bcb90f990d738438.txt",
    claims=(
        Claim("M1", "MASC on the best layer beats the CNN's test accuracy, more so with more "
              "noise", "Table 1, CNN-Fashion-MNIST",
              "+7.49% / +33.50% / +84.93% / +189.00% at p = 0.2 / 0.4 / 0.6 / 0.8", (CNN,),
              _table1(CNN, "CNN-Fashion-MNIST"), why_not=_SMALL_SUBSPACES),
        Claim("M2", "MASC on the best layer beats the MLP's test accuracy, more so with more "
              "noise (on Fashion-MNIST; the paper's row is MNIST)", "Table 1, MLP-MNIST",
              "+10.93% / +31.63% / +75.04% / +159.93% at p = 0.2 / 0.4 / 0.6 / 0.8", (MLP,),
              _table1(MLP, "MLP (Fashion-MNIST)"), why_not=_SMALL_SUBSPACES),
        Claim("M3", "Some layer still labels the training set by its true labels better than "
              "the memorizing model", "Figs. 2-3, Sec. 4", "e.g. at 40% corruption \"MLP-MNIST "
              "has over 90% true training accuracy at layer FC(512), CNN-Fashion-MNIST has "
              "approximately 85% in Flat (576)\"", (CNN, MLP), true_labels_recovered),
        Claim("M4", "Retraining on the best layer's MASC labels raises the test accuracy",
              "Fig. 4, Tables 6-8", "an improvement for MLP-MNIST and CNN-Fashion-MNIST at "
              "non-zero corruption, \"quite significant, especially for larger corruption "
              "degrees\"", (CNN, MLP), retrain_helps,
              why_not="the best layer's MASC labels repeat the corrupted labels almost exactly "
              "(the table's last column: the share of wrong labels hardly moves), as when each "
              "class subspace is fitted to few images (1,000 in all at the cpu scale) and so "
              "holds its own, wrongly labelled, points; retraining on them has little to gain."),
    ),
    scales=SCALES,
)
