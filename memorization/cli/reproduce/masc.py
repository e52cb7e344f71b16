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

from memorization.cli.report.tables import best_masc_layer
from memorization.cli.reproduce.plan import (
    Claim,
    Outcome,
    Paper,
    Results,
    Scale,
    SweepSpec,
    of_seed,
    seeds_of,
)
from memorization.cli.reproduce.verdicts import Check, Stat, all_of, by_seed, monotone

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
    "cpu10k": _scale(
        "cpu10k", ("data.train_size=10000", "trainer.check_val_every_n_epoch=10"),
        "0.2,0.4,0.8", "0,1", 300, 100,
        "Fashion-MNIST for both rows on a seeded subset of 10,000 training images (about 1,000 "
        "a class; the full test set), until 99% training accuracy or 300 epochs, p = 0.2 / 0.4 "
        "/ 0.8 and 2 seeds (the paper: 0.2-0.8 in steps of 0.2, 3 runs): fewer levels and "
        "seeds than the cpu scale, ten times the images, because at 1,000 images a class "
        "subspace at 99% variance nearly contains its own (mislabelled) training points, so "
        "MASC fitted on the training labels returns them (M3, M4)."),
    "paper": _scale(
        "paper", (), "0.2,0.4,0.6,0.8", "0,1,2", 500, 25,
        "The paper's: all 60,000 training images, until 99% training accuracy or 500 epochs, "
        "3 runs; the MLP row needs data=mnist for the paper's own MLP-MNIST."),
}


def _gain(row: pd.Series) -> tuple[float, str]:
    """Table 1's gain with the stage's best layer (the paper's layers, the input included,
    picked on the held-out 20%), and that layer."""
    acc, masc = row.get("relabel/model/test_acc_before"), row.get("relabel/masc/masc_test_acc")
    if acc is None or masc is None or not acc or math.isnan(acc) or math.isnan(masc):
        return math.nan, ""
    return (masc - acc) / acc, str(row.get("relabel/masc/best_layer") or "")


_VAL, _TEST = "relabel/masc/layer_val_acc/", "relabel/masc/layer_test_acc/"


def _layer_gain(row: pd.Series, hidden: bool) -> tuple[float, str]:
    """The gain of the input layer (``hidden`` False: the baseline that needs no network), or
    of the hidden layer best on the held-out 20% (``hidden`` True), on the reported 80%."""
    acc = row.get("relabel/model/test_acc_before")
    val = {k[len(_VAL):]: v for k, v in row.items() if isinstance(k, str) and k.startswith(_VAL)
           and v is not None and not (isinstance(v, float) and math.isnan(v))}
    names = [n for n in val if (n != "input") == hidden]
    if not names or acc is None or not acc or math.isnan(acc):
        return math.nan, ""
    layer = max(names, key=lambda n: (val[n], -names.index(n)))  # the shallowest on a tie
    test = row.get(_TEST + layer)
    return ((test - acc) / acc if test is not None else math.nan), layer


def _gains(df: pd.DataFrame, fn=_gain) -> list[tuple[float, Stat, str]]:
    out = []
    for p, group in df.groupby("noise.p", sort=True):
        vals = [fn(r) for _, r in group.iterrows()]
        layers = sorted({name for _, name in vals if name})
        out.append((float(p), Stat.of(v for v, _ in vals), ", ".join(layers)))
    return out


_SMALL_SUBSPACES = (
    "(our reading, not tested) "
    "the class subspaces are fitted to a reduced training set (1,000 images at the cpu scale, "
    "about 100 a class and most of them mislabelled at high p; the paper's: 60,000), so MASC's "
    "test accuracy, and with it the gain over the model, stays lower at high noise.")


def _table1(sweep: str, row: str):
    def check(r: Results) -> Outcome:
        df = r.jobs[sweep]
        pts = _gains(df)
        hidden = dict((p, (s, ly)) for p, s, ly in _gains(df, lambda x: _layer_gain(x, True)))
        inputs = dict((p, s) for p, s, _ in _gains(df, lambda x: _layer_gain(x, False)))
        paper = dict(zip(PS, TABLE1[sweep], strict=True))
        rows = []
        for p, s, layers in pts:
            target = paper.get(round(p, 2))
            h, hl = hidden.get(p, (Stat.of([]), ""))
            rows.append({"noise.p": f"{p:g}", "paper": f"+{100 * target:.1f}%" if target
                         else "–", "ours (the paper's layers)": s.fmt(pct=True),
                         "best layer(s)": layers, "best hidden layer": h.fmt(pct=True),
                         "hidden layer(s)": hl,
                         "input layer (baseline)": inputs.get(p, Stat.of([])).fmt(pct=True)})

        def number(seed) -> Check:
            close = []
            for p, st, _ in _gains(of_seed(df, seed)):
                target = paper.get(round(p, 2))
                if target is not None:
                    close.append(Check(f"p={p:g}", f"{100 * st.mean:+.1f}% vs "
                                                   f"{100 * target:+.1f}%",
                                       abs(st.mean - target) <= 0.05 + 0.25 * target
                                       if st.n else None))
            return all_of(close, "|ours − paper| ≤ 5 pp + 25% of the paper's gain, at every p")

        def direction(seed) -> Check:
            g = _gains(of_seed(df, seed), lambda x: _layer_gain(x, True))
            return all_of([
                Check("best hidden layer's gain > 0 at every p",
                      ", ".join(f"{100 * st.mean:+.1f}%" for _, st, _ in g),
                      all(st.mean > 0 for _, st, _ in g) if g else None),
                monotone([st.mean for _, st, _ in g], +1, what="its gain over p")])

        seeds = seeds_of(df)
        return Outcome(f"{row}: gain " + ", ".join(f"p={p:g}: {s.fmt(pct=True)}"
                                                   for p, s, _ in pts),
                       number=by_seed(number, seeds), direction=by_seed(direction, seeds),
                       rows=rows,
                       note="The number test is Table 1's: the best of the paper's layers "
                            "(MLP: every layer, the input included; CNN: input, flatten and "
                            "FC), chosen on the held-out 20%. The direction test asks more: "
                            "the best *hidden* layer (chosen the same way) must beat the model, "
                            "more so with more noise, so a win of the raw pixels (the input "
                            "layer's MASC, shown as the baseline) does not count.")
    return check


RECOVERED = 0.25  # the share of the model's wrong true labels a layer must get right (M3)
M3_PS = (0.2, 0.4)  # the paper's "low to moderate degrees of corruption"


def _recovered(group: pd.DataFrame) -> tuple[Stat, Stat, Stat, list[str]]:
    best = [best_masc_layer(row, "masc/train_true/") for _, row in group.iterrows()]
    masc = Stat.of(b[0] if b else math.nan for b in best)
    model = Stat.of(group["train/acc_true"])
    share = Stat.of((b[0] - m) / (1 - m) if b and m < 1 else math.nan
                    for b, m in zip(best, group["train/acc_true"], strict=True))
    return masc, model, share, sorted({b[1] for b in best if b})


def true_labels_recovered(r: Results) -> Outcome:
    rows = []
    for sweep in (CNN, MLP):
        for p, group in r.jobs[sweep].groupby("noise.p", sort=True):
            masc, model, share, layers = _recovered(group)
            rows.append({"model": sweep, "noise.p": f"{p:g}", MODEL_COL: model.fmt(pct=True),
                         MASC_COL: masc.fmt(pct=True),
                         "share of the model's wrong labels recovered": share.fmt(pct=True),
                         "layer(s)": ", ".join(layers)})

    def test(seed) -> Check:
        tests = []
        for sweep in (CNN, MLP):
            for p, group in of_seed(r.jobs[sweep], seed).groupby("noise.p", sort=True):
                if round(float(p), 2) not in M3_PS:
                    continue
                masc, model, share, _ = _recovered(group)
                tests.append(Check(f"{sweep} p={p:g}", f"{100 * share.mean:.1f}% recovered "
                                   f"({100 * masc.mean:.1f}% vs model {100 * model.mean:.1f}%)",
                                   share.mean >= RECOVERED if share.n else None))
        return all_of(tests, f"at p = {' and '.join(f'{p:g}' for p in M3_PS)}, MASC on the "
                             f"best hidden layer gets at least {100 * RECOVERED:.0f}% of the "
                             "training labels the model gets wrong right by their true label")

    seeds = seeds_of(r.jobs[CNN], r.jobs[MLP])
    return Outcome("; ".join(f"{d['model']} p={d['noise.p']}: {d[MASC_COL]} vs model "
                             f"{d[MODEL_COL]}" for d in rows),
                   direction=by_seed(test, seeds), rows=rows,
                   note="Share recovered: (MASC's true-label training accuracy − the model's) / "
                        "(1 − the model's). The paper's example at p = 0.4 (MLP-MNIST over 90%, "
                        "CNN-Fashion-MNIST about 85%, the model about 64%) is a share of 58-72%; "
                        f"the test asks for {100 * RECOVERED:.0f}%, at the levels the paper "
                        "calls low to moderate; higher levels are shown, not tested. The layer "
                        "is the one with the highest true-label accuracy (the paper's \"in at "
                        "least one layer\"), so this is an upper bound over the layers.")


def _retrain_pairs(r: Results, seed=None) -> list[tuple[str, float, Stat, Stat]]:
    """(model, p, test accuracy before, after retraining on MASC labels) of one seed's runs."""
    out = []
    for sweep in (CNN, MLP):
        df = of_seed(r.jobs[sweep], seed)
        if "relabel/model/test_acc_before" not in df:
            continue
        for p, group in df.groupby("noise.p", sort=True):
            out.append((sweep, float(p), Stat.of(group["relabel/model/test_acc_before"]),
                        Stat.of(group["relabel/masc/test_acc_after"])))
    return out


def retrain_helps(r: Results) -> Outcome:
    rows = []
    for sweep in (CNN, MLP):
        df = r.jobs[sweep]
        if "relabel/model/test_acc_before" not in df:
            continue
        for p, group in df.groupby("noise.p", sort=True):
            rows.append({"model": sweep, "noise.p": f"{p:g}",
                         "before": Stat.of(group["relabel/model/test_acc_before"]).fmt(pct=True),
                         "retrained on MASC labels":
                             Stat.of(group["relabel/masc/test_acc_after"]).fmt(pct=True),
                         "retrained on MASC-true labels": Stat.of(group.get(
                             "relabel/masc_true/test_acc_after", pd.Series([]))).fmt(pct=True),
                         "wrong labels before → after": _wrong(group)})

    def test(seed) -> Check:
        return all_of([Check(f"{sweep} p={p:g}: retrained > before",
                             f"{100 * after.mean:.1f}% vs {100 * before.mean:.1f}%",
                             after.mean > before.mean if after.n else None)
                       for sweep, p, before, after in _retrain_pairs(r, seed) if p >= 0.4],
                      "test accuracy after retraining on the best layer's MASC labels > "
                      "before, every model at p ≥ 0.4")

    pairs = [(b, a) for _, p, b, a in _retrain_pairs(r) if p >= 0.4]
    return Outcome(f"retraining raised the test accuracy in "
                   f"{sum(a.mean > b.mean for b, a in pairs)} of {len(pairs)} settings with "
                   f"p ≥ 0.4", direction=by_seed(test, seeds_of(r.jobs[CNN], r.jobs[MLP])),
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
              why_not="(our reading, not tested) "
              "the best layer's MASC labels repeat the corrupted labels almost exactly "
              "(the table's last column: the share of wrong labels hardly moves), as when each "
              "class subspace is fitted to few images (1,000 in all at the cpu scale) and so "
              "holds its own, wrongly labelled, points; retraining on them has little to gain."),
    ),
    scales=SCALES,
)
