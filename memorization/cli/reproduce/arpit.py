"""Arpit et al., "A Closer Look at Memorization in Deep Networks" (ICML 2017): easy and hard
examples (Fig. 1), time to convergence against capacity and data (Fig. 6), the critical sample
ratio against input and label noise (Figs. 7-8), and regularizers that slow memorization of
random labels more than learning of real data (Figs. 10-11).

randX is ``noise=gaussian`` (a sample's input replaced by Gaussian noise with the data's
moments), randY ``noise=label_uniform`` (p < 1) or ``noise=random_labels`` (p = 1). CSR is the
final epoch's ``csr/test`` (LASS, Alg. 1, with the paper's alpha 0.25, beta 0.2, box 0.3 on the
0-255 scale, on 1,000 test samples: the paper measures it on the validation set). For Fig. 10
we take, per regularizer, its strongest setting against none: the final training accuracy on
random labels and the best validation accuracy on real data.
"""

from __future__ import annotations

import math

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
    of_seed,
    seeds_of,
    stat,
)
from memorization.cli.reproduce.verdicts import Check, all_of, by_seed, greater, slope_test

EASY_HARD, CONVERGENCE, CSR, DROPOUT, INPUT_NOISE = (
    "easy_hard", "convergence", "csr", "reg_dropout", "reg_input_noise")


def _net(width: int, lr: float, batch: int) -> tuple[str, ...]:
    # plain SGD as the paper's MLPs; lr and batch rescaled with the epoch's length (see SCALES)
    return ("model=mlp", "model.depth=2", f"model.width={width}", "optim=sgd",
            f"optim.lr={lr}", "optim.momentum=0.0", f"data.batch_size={batch}")


def _scale(name: str, data: tuple[str, ...], seeds: str, width: int, lr: float, batch: int,
           epochs: int, ps: str, easy: tuple[str, ...], convergence: dict[str, str],
           conv_data: tuple[str, ...], replicas: int, every: int, reduction: str) -> Scale:
    net = _net(width, lr, batch)
    fixed_epochs = (*data, *net, "stop_at_train_acc=null", f"trainer.max_epochs={epochs}")
    reg = (*fixed_epochs, "metrics=none", "noise.p=1.0")
    return Scale(name, (
        SweepSpec(EASY_HARD, easy, {"noise": "none,gaussian,random_labels"},
                  entry="memorization.easy_hard", figures=("easy_hard",),
                  about="100 one-epoch runs per dataset, per-example misclassification (Fig. 1)"),
        SweepSpec(CONVERGENCE, conv_data, convergence, figures=("time_to_convergence",),
                  about="epochs to fit against width and training-set size under randX (Fig. 6)"),
        SweepSpec(CSR, (*fixed_epochs, f"trainer.replicas={replicas}",
                        f"metrics.every_n_epochs={every}", "metrics.masc.enabled=false",
                        "metrics.cosine.enabled=false", "metrics.polarization.enabled=false"),
                  {"noise": "gaussian,label_uniform", "noise.p": ps},
                  figures=("csr",), about="CSR and accuracy under randX and randY (Figs. 7-8)"),
        SweepSpec(DROPOUT, reg, {"noise": "none,random_labels", "model.dropout": "0,0.5",
                                 "seed": seeds},
                  about="dropout on real data and on random labels (Fig. 10)"),
        SweepSpec(INPUT_NOISE, reg, {"noise": "none,random_labels", "model.input_noise": "0.5",
                                     "seed": seeds},
                  about="input Gaussian noise on real data and on random labels (Fig. 10)"),
    ), reduction)


_CONV_DIGITS = {"noise.p": "0,0.4,0.8", "model.width": "32,128,512",
                "data.train_size": "360,719,null"}

SCALES = {
    "smoke": _scale(
        "smoke", ("data=digits",), "0", 64, 0.1, 32, 4, "0,0.8",
        ("experiment=arpit_easy_hard_digits", "easy_hard.n_seeds=5", "model.width=64"),
        {"noise.p": "0,0.8", "model.width": "32", "data.train_size": "360"},
        ("experiment=arpit_convergence_digits", "trainer.max_epochs=5"), 1, 2,
        "The embedded digits, a few epochs, one seed: a test of the pipeline, not evidence."),
    "cpu": _scale(
        "cpu", ("data=fashion_mnist", "data.train_size=2000", "data.val_size=1000"), "0,1,2",
        512, 0.1, 32, 60, "0,0.4,0.8",
        ("experiment=arpit_easy_hard_mnist", "data=fashion_mnist", "model.width=512"),
        _CONV_DIGITS, ("experiment=arpit_convergence_digits",), 3, 10,
        "Fashion-MNIST in place of MNIST and CIFAR-10, with an MLP of 2 x 512 (the paper's: 2 x "
        "4096 on MNIST, a CNN on CIFAR-10) on a seeded subset of 2,000 training images (1,000 "
        "held out for validation, the full test set), plain SGD at lr 0.1 with batches of 32 "
        "(63 updates an epoch; the paper's lr 0.01 at 390 updates an epoch would need "
        "thousands of epochs here), 60 epochs, noise 0 / 0.4 / 0.8 in place of 0.2-0.8 in "
        "steps of 0.2, 3 seeds. Easy and hard examples (Fig. 1): the paper's 1,000 examples "
        "and 100 one-epoch runs, on Fashion-MNIST with 2 x 512. Time to convergence (Fig. 6): "
        "the embedded digits (experiment=arpit_convergence_digits: widths 32-512, 25-100% of "
        "the 1,438 training digits, p = 0 / 0.4 / 0.8). Regularizers (Fig. 10): dropout 0.5 "
        "and input Gaussian noise of std 0.5 (on standardized pixels) against none, where the "
        "paper sweeps each over a range on CIFAR-10 with a CNN. Why the shapes should hold: "
        "each claim compares real with noise data for one network, so it rests on real data "
        "having patterns that noise lacks, which a subset keeps."),
    "paper": _scale(
        "paper", ("data=mnist", "data.val_size=10000"), "0,1,2", 4096, 0.01, 128, 1000,
        "0,0.2,0.4,0.6,0.8", ("experiment=arpit_easy_hard_mnist",),
        {"noise.p": "0,0.2,0.4,0.6,0.8", "model.width": "256,512,1024,2048,4096"},
        ("experiment=arpit_convergence_mnist",), 3, 50,
        "The paper's MNIST setting (Sec. 2: MLP 2 x 4096, SGD lr 0.01, 1000 epochs); its "
        "Figs. 8-10 use a CNN on CIFAR-10 (experiment=arpit_cifar10_cnn), not run here."),
}


def easy_hard(r: Results) -> Outcome:
    df = r.jobs[EASY_HARD]
    by = {row["noise"]: row for _, row in df.iterrows()}
    rows = [{"data": k, "mean misclassification": f"{v['mean_error']:.3f}",
             "spread of the rates": f"{v['std_rate']:.3f}",
             "binomial reference": f"{v['reference_std']:.3f}",
             "distance to reference": f"{v['distance_to_reference']:.3f}",
             "always right": f"{100 * v['always_correct']:.1f}%",
             "always wrong": f"{100 * v['always_wrong']:.1f}%"} for k, v in by.items()]
    tests = []
    real = by.get("none")
    for noise, name in (("gaussian", "randX"), ("random_labels", "randY")):
        if real is not None and noise in by:
            tests.append(greater(real["distance_to_reference"],
                                 by[noise]["distance_to_reference"],
                                 f"real data further from the binomial reference than {name}",
                                 f"{real['distance_to_reference']:.3f} vs "
                                 f"{by[noise]['distance_to_reference']:.3f}"))
    return Outcome("; ".join(f"{d['data']}: distance to reference {d['distance to reference']}"
                             for d in rows), direction=all_of(tests), rows=rows,
                   note="Distance to reference: the mean gap between the sorted per-example "
                        "rates and the sorted binomial sample of the same mean (0: every "
                        "example equally hard).")


def _ratio(df: pd.DataFrame, x: str, lo, hi, p: float) -> float:
    """epochs to fit at x=hi over at x=lo, at noise level p (means over the other keys)."""
    sub = df[(df["noise.p"].astype(float) - p).abs() < 1e-9]
    a = sub[sub[x] == lo]["epochs_to_fit"].mean()
    b = sub[sub[x] == hi]["epochs_to_fit"].mean()
    return float(b / a) if a and not math.isnan(a) else math.nan


def convergence(r: Results) -> Outcome:
    df = r.jobs[CONVERGENCE].copy()
    full = int(df["n_train"].max()) if "n_train" in df else None
    df["size"] = df["n_train"] if "n_train" in df else df["data.train_size"]
    widths = sorted(df["model.width"].unique())
    sizes = sorted(df["size"].unique())
    ps = sorted(df["noise.p"].astype(float).unique())
    rows, tests = [], []
    for p in ps:
        w = _ratio(df, "model.width", widths[0], widths[-1], p)
        s = _ratio(df, "size", sizes[0], sizes[-1], p)
        rows.append({"noise.p": f"{p:g}",
                     f"epochs to fit, width {widths[-1]} / {widths[0]}": f"{w:.2f}",
                     f"epochs to fit, {sizes[-1]} / {sizes[0]} examples": f"{s:.2f}"})
    if len(ps) > 1:
        w0, wn = _ratio(df, "model.width", widths[0], widths[-1], ps[0]), \
            _ratio(df, "model.width", widths[0], widths[-1], ps[-1])
        s0, sn = _ratio(df, "size", sizes[0], sizes[-1], ps[0]), \
            _ratio(df, "size", sizes[0], sizes[-1], ps[-1])
        tests = [greater(w0, wn, f"more width shortens fitting more at p={ps[-1]:g} than at 0 "
                                 "(ratio smaller)", f"{wn:.2f} vs {w0:.2f}"),
                 greater(sn, s0, f"more data lengthens fitting more at p={ps[-1]:g} than at 0",
                         f"{sn:.2f} vs {s0:.2f}")]
    return Outcome("; ".join(f"p={d['noise.p']}: " + ", ".join(
        f"{k} {v}" for k, v in d.items() if k != "noise.p") for d in rows),
        direction=all_of(tests), rows=rows,
        note=f"Means over the other swept key; training-set sizes as counts (full: {full}).")


def csr_rises(r: Results) -> Outcome:
    df = r.jobs[CSR]
    # p = 0 is real data whatever the noise type: the sweep runs it twice, counted once
    base = df[(df["noise.p"].astype(float) == 0) & (df["noise"] == "gaussian")]
    rows = []
    subs = {name: pd.concat([base, df[(df["noise"] == noise) & (df["noise.p"].astype(float) > 0)]])
            for noise, name in (("gaussian", "randX"), ("label_uniform", "randY"))}
    for name, sub in subs.items():
        rows += [{"noise": name, **d} for d in level_rows(levels(sub, "noise.p", "csr/test"),
                                                          "noise.p", "CSR", pct=True, digits=2)]

    def test(seed) -> Check:
        return all_of([slope_test(*means(levels(of_seed(sub, seed), "noise.p", "csr/test")), +1,
                                  what=f"{name}: slope of CSR over p")
                       for name, sub in subs.items()])

    return Outcome("; ".join(f"{d['noise']} p={d['noise.p']}: {d['CSR']}" for d in rows),
                   direction=by_seed(test, seeds_of(df)), rows=rows)


def _val_peaks(df: pd.DataFrame, h: pd.DataFrame) -> list[tuple[dict, Check]]:
    """Per randY run: its row for the table and its test."""
    sub = df[(df["noise"] == "label_uniform") & (df["noise.p"].astype(float) > 0)]
    out = []
    for _, job in sub.iterrows():
        hj = h[(h["job"] == job["job"]) & (h["layer"].isna() | (h["layer"] == ""))]
        split = "val" if (hj["split"] == "val").any() else "test"  # no val split: test
        val = hj[(hj["split"] == split) & (hj["metric"] == "acc")]
        tr = hj[(hj["split"] == "train") & (hj["metric"] == "acc")]
        if val.empty or tr.empty:
            continue
        best = int(val.loc[val["value"].idxmax(), "epoch"])
        high = tr[tr["value"] >= 0.9]
        fit = int(high["epoch"].min()) if len(high) else math.inf
        row = {"noise.p": f"{job['noise.p']:g}", "seed": job.get("seed"),
               "epoch of best val acc": best,
               "first epoch with train acc ≥ 90%": "never" if fit == math.inf else fit}
        # a run that never reaches 90% has no fitting epoch to come before: n/a, not a pass
        out.append((row, Check("best val epoch < first epoch with train acc ≥ 90%",
                               f"{best} vs {fit}", best < fit if fit != math.inf else None)))
    return out


def val_peaks_first(r: Results) -> Outcome:
    """randY: the best validation accuracy comes before the training accuracy gets high."""
    df, h = r.jobs[CSR], r.history.get(CSR)
    if h is None or not len(h):
        return Outcome("no per-epoch history of the CSR sweep",
                       direction=Check("every randY run: best val epoch < first epoch with "
                                       "train acc ≥ 90%", "no history", None))
    runs = _val_peaks(df, h)
    rule = "every randY run: best val epoch < first epoch with train acc ≥ 90%"
    direction = by_seed(lambda seed: all_of([t for _, t in _val_peaks(of_seed(df, seed), h)],
                                            rule), seeds_of(df))
    return Outcome(f"best validation epoch before fitting in {sum(bool(t.passed) for _, t in runs)}"
                   f" of {len(runs)} randY runs", direction=direction, rows=[r for r, _ in runs])


def _kept(r: Results, seed=None) -> list[tuple[str, float, float, float, float, float, float]]:
    """Per regularizer at its strongest setting: (name, random-label train acc without, with,
    best real-data val acc without, with, kept share of memorization, kept share of
    generalization), on one seed's runs (every seed's for ``seed`` None)."""
    out = []
    none = of_seed(r.jobs[DROPOUT], seed)
    none = none[none["model.dropout"].astype(float) == 0]
    best = "val/acc_best" if "val/acc_best" in none else "test/acc_best"  # no val split
    mem0 = stat(none, "train/acc", noise="random_labels").mean
    gen0 = stat(none, best, noise="none").mean
    for sweep, key, value in ((DROPOUT, "model.dropout", 0.5),
                              (INPUT_NOISE, "model.input_noise", 0.5)):
        df = of_seed(r.jobs[sweep], seed)
        reg = df[df[key].astype(float) == value]
        mem = stat(reg, "train/acc", noise="random_labels").mean
        gen = stat(reg, best, noise="none").mean
        out.append((f"{key}={value:g}", mem0, mem, gen0, gen, mem / mem0, gen / gen0))
    return out


def regularizers(r: Results) -> Outcome:
    rows = [{"regularizer": name,
             "train acc, random labels (none → with)": f"{100 * m0:.1f}% → {100 * m:.1f}%",
             "best val acc, real data (none → with)": f"{100 * g0:.1f}% → {100 * g:.1f}%",
             "kept share: real − random": f"{rg:.2f} − {rm:.2f} = {rg - rm:+.2f}"}
            for name, m0, m, g0, g, rm, rg in _kept(r)]

    def test(seed) -> Check:
        kept = _kept(r, seed)
        slows = [greater(rg, rm, f"{name}: kept share of real-data val acc > kept share of "
                                 "random-label train acc", f"{rg:.2f} vs {rm:.2f}")
                 for name, _, _, _, _, rm, rg in kept]
        (d, *_, d_rm, d_rg), (i, *_, i_rm, i_rg) = kept
        most = greater(d_rg - d_rm, i_rg - i_rm, f"{d} more effective than {i} (a larger "
                       "difference of the kept shares)", f"{d_rg - d_rm:+.2f} vs "
                       f"{i_rg - i_rm:+.2f}")
        return all_of([*slows, most])

    seeds = seeds_of(r.jobs[DROPOUT], r.jobs[INPUT_NOISE])
    return Outcome("; ".join(f"{d['regularizer']}: memorization "
                             f"{d['train acc, random labels (none → with)']}, generalization "
                             f"{d['best val acc, real data (none → with)']}" for d in rows),
                   direction=by_seed(test, seeds), rows=rows,
                   note="Effect of a regularizer: the share of the real-data validation "
                        "accuracy it keeps minus the share of the random-label training "
                        "accuracy it keeps (a flat curve in Fig. 10 is a large difference); "
                        "\"dropout being the most effective\" is tested as dropout's "
                        "difference above input noise's, the one other regularizer run here.")


PAPER = Paper(
    key="arpit",
    title="Arpit et al., A Closer Look at Memorization in Deep Networks (ICML 2017)",
    file="001_9bd22773f8530cad.txt",
    claims=(
        Claim("A1", "Real data has easy and hard examples, noise data much less", "Fig. 1",
              "per-example misclassification after one epoch \"much more variable in real "
              "data\"; randX close to the binomial reference", (EASY_HARD,), easy_hard),
        Claim("A2", "Capacity and data size change the time to fit noise data more than real "
              "data", "Fig. 6", "\"having more capacity/data does not decrease/increase "
              "training time as much as it does for noise data\"", (CONVERGENCE,), convergence,
              why_not="(our reading, not tested) "
              "the digits (at most 1,438 images of 64 pixels) lie far below the capacity "
              "of the wider networks, so more noise data need not slow their fitting while each "
              "epoch of a larger set carries more updates; the paper's sets are near capacity. "
              "One seed per setting at the cpu scale."),
        Claim("A3", "The critical sample ratio rises with input and label noise", "Figs. 7-8",
              "\"For both randX and randY datasets, the CSR is higher for noisier datasets\"",
              (CSR,), csr_rises),
        Claim("A4", "Under label noise, validation accuracy peaks before the noise is fitted",
              "Figs. 7b, 8b", "\"the network achieves maximum accuracy on the validation set "
              "before achieving high accuracy on the training set\"", (CSR,), val_peaks_first),
        Claim("A5", "Regularizers slow memorization of random labels more than learning of "
              "real data", "Fig. 10", "flat curves: lower training accuracy on randY at about "
              "the same validation accuracy on real data, \"dropout being the most "
              "effective\"",
              (DROPOUT, INPUT_NOISE), regularizers),
    ),
    scales=SCALES,
)
