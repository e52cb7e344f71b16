"""Draw the PNG figures of a sweep report from the sweep's job and history tables.

``jobs`` has one row per finished job (swept parameters, ``noise``, ``noise.p``, final metric
values, ``epochs``, ``epochs_to_fit``); ``history`` is the tidy per-epoch table with columns
job, epoch, split, layer, depth, metric, value. See :func:`write_figures`.

Aggregation rules
-----------------
* Seed-like parameters are ``seed``, ``noise.seed`` and any swept key ending in ``seed``. Jobs
  that differ only in seed-like parameters are aggregated: the line is their mean, the shaded band
  spans their min..max (the legend then says "mean, min–max over N seeds"). Per-epoch curves
  aggregate the seeds present at each epoch, so a seed that stops early just leaves the band.
  NaN values (a job that never fit, an empty corrupted subset) are left out of the aggregate.
* A series (one line) is one combination of the non-seed swept parameters other than the
  figure's x axis. Parameters that take a single value among the finished jobs neither split nor
  label lines.
* Noise level is the ``noise.p`` column, noise type the ``noise`` column. Colours: when noise
  level is the only varying parameter, a viridis ramp over it; otherwise one colour family per
  noise type (or per combination of the other parameters), darker for higher noise levels.
* Per-layer figures use each job's last evaluated epoch of the metric; layers are ordered by
  ``depth`` (0 = input) and their ticks carry the layer names.
* A figure whose data the sweep lacks is skipped with one line of explanation, never drawn empty;
  so are noise-level panels when the sweep has fewer than two noise levels.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from memorization.base.io import atomic_path
from memorization.cli.report.series import (
    BAND_ALPHA,
    Color,
    Styles,
    aggregate,
    last_epoch,
    numeric_columns,
    series_table,
)

DPI = 110
@dataclass
class _Sweep:
    jobs: pd.DataFrame
    history: pd.DataFrame
    swept: list[str]
    title: str
    notes: list[str] = field(default_factory=list)
    nseeds: int = 0  # the most seeds behind any point of the figure being drawn

    def __post_init__(self) -> None:
        # Split the (large) history once: figures ask for the same metrics several times.
        known = self.history[self.history["value"].notna()]
        self._parts = dict(tuple(known.groupby(["metric", "split"], sort=False)))
        self._empty = known.iloc[:0]

    def rows(self, metric: str, split: str | None = None) -> pd.DataFrame:
        parts = [v for (m, s), v in self._parts.items()
                 if m == metric and (split is None or s == split)]
        return pd.concat(parts) if len(parts) > 1 else parts[0] if parts else self._empty

    def present(self, metrics: tuple[tuple[str, str], ...], split: str) -> list[tuple[str, str]]:
        return [(m, name) for m, name in metrics if not self.rows(m, split).empty]

    def noise_levels(self) -> int:
        return self.jobs["noise.p"].nunique() if "noise.p" in self.jobs.columns else 0

    def series(self, exclude: tuple[str, ...] = ()) -> tuple[pd.Series, dict[str, Color]]:
        return series_table(self.jobs, self.swept, exclude)

    def curve(self, ax: Axes, rows: pd.DataFrame, job_series: pd.Series,
              colours: dict[str, Color], x: str, value: str = "value", **style) -> None:
        """Aggregate ``rows`` over seeds per (series, x) and draw them."""
        agg = aggregate(rows.assign(series=rows["job"].map(job_series)), ["series", x], value)
        _draw(ax, agg, x, colours, **style)
        self.nseeds = max(self.nseeds, int(agg["n"].max()) if len(agg) else 0)


def _figure(sw: _Sweep, what: str, ncols: int, nrows: int = 1,
            size: tuple[float, float] = (4.4, 3.4), legend_w: float = 2.6, **share,
            ) -> tuple[Figure, np.ndarray]:
    width = max(size[0] * ncols + legend_w, 6.5)  # room for the title above a lone panel
    fig = Figure(figsize=(width, size[1] * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **share)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    chars = int(width * 11)  # about what a line of the medium-size title holds
    fig.suptitle(textwrap.fill(sw.title, chars) + "\n" + textwrap.fill(what, chars),
                 fontsize="medium")
    return fig, axes


def _draw(ax: Axes, agg: pd.DataFrame, x: str, colours: dict[str, Color], ls="-",
          marker: str | None = None) -> None:
    """One mean line + min–max band per series, in legend order."""
    parts = dict(tuple(agg.groupby("series", sort=False)))
    for label, colour in colours.items():
        if (part := parts.get(label)) is None:
            continue
        part = part.sort_values(x)
        # a series of one point (a job that fit in its first epoch) shows as a dot
        dot = marker or ("o" if len(part) == 1 else None)
        ax.plot(part[x], part["mean"], color=colour, ls=ls, marker=dot, ms=4, lw=1.5)
        if (part["n"] > 1).any():
            ax.fill_between(part[x], part["min"], part["max"], color=colour, alpha=BAND_ALPHA,
                            lw=0)


def _legend(fig: Figure, sw: _Sweep, colours: dict[str, Color], styles: Styles = ()) -> None:
    handles = [Line2D([], [], color=c, lw=2, label=label) for label, c in colours.items()]
    handles += [Line2D([], [], color="0.2", label=label, **kw) for label, kw in styles]
    if sw.nseeds > 1:
        handles.append(Patch(color="0.5", alpha=BAND_ALPHA * 2,
                             label=f"mean, min–max over {sw.nseeds} seeds"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", frameon=False)


def _acc_axis(ax: Axes, ylabel: str, xlabel: str = "epoch") -> None:
    ax.set(ylim=(-0.02, 1.02), ylabel=ylabel, xlabel=xlabel)


def _vs_depth(ax: Axes, sw: _Sweep, metric: str, split: str, job_series: pd.Series,
              colours: dict[str, Color], ticks_from: pd.DataFrame) -> None:
    """Mean over seeds of ``metric`` per layer at each job's last evaluated epoch."""
    sw.curve(ax, last_epoch(sw.rows(metric, split)), job_series, colours, "depth", marker="o")
    # Tick all panels' layers (cosine has no input layer) so that the panels line up.
    names = ticks_from.drop_duplicates("depth").sort_values("depth")
    rotate = len(names) > 6 or names["layer"].str.len().max() > 6
    ax.set_xticks(names["depth"], names["layer"], rotation=45 if rotate else 0)
    ax.set_xlabel("layer (by depth)")


def fig_test_acc_vs_noise(sw: _Sweep) -> Figure | str:
    jobs = sw.jobs
    if "gap" not in jobs.columns and {"train/acc", "test/acc"} <= set(jobs.columns):
        jobs = jobs.assign(gap=jobs["train/acc"] - jobs["test/acc"])
    if sw.noise_levels() < 2:
        return "fewer than two noise levels"
    panels = [c for c in ("test/acc", "gap") if c in jobs.columns and jobs[c].notna().any()]
    if not panels:
        return "no test/acc or gap values"
    job_series, colours = sw.series(exclude=("noise.p",))
    fig, axes = _figure(sw, "final test accuracy and generalization gap vs noise level",
                        len(panels))
    styles: Styles = []
    for ax, col in zip(axes[0], panels, strict=True):
        sw.curve(ax, jobs, job_series, colours, "noise.p", col, marker="o")
        if col == "gap":
            ax.axhline(0, color="0.6", lw=0.8)
            ax.set(ylabel="gap = train acc − test acc", xlabel="noise level p")
            continue
        _acc_axis(ax, "test accuracy (final)", "noise level p")
        if "test/acc_best" in jobs.columns and jobs["test/acc_best"].notna().any():
            sw.curve(ax, jobs, job_series, colours, "noise.p", "test/acc_best", ls="--")
            styles = [("solid: final test acc", {}), ("dashed: best test acc", {"ls": "--"})]
    _legend(fig, sw, colours, styles)
    return fig


def fig_training_loss(sw: _Sweep) -> Figure | str:
    rows = sw.rows("loss", "train")
    if rows.empty:
        return "no training loss history (train/loss)"
    job_series, colours = sw.series()
    fit_panel = sw.noise_levels() >= 2 and "epochs_to_fit" in sw.jobs.columns
    if not fit_panel:
        sw.notes.append("training_loss.png: panel b (epochs to fit vs noise level) left out: "
                        "fewer than two noise levels or no epochs_to_fit")
    fig, axes = _figure(sw, "training loss over epochs" + " · epochs to fit" * fit_panel,
                        1 + fit_panel)
    ax = axes[0, 0]
    sw.curve(ax, rows, job_series, colours, "epoch")
    if rows["value"].min() > 0 and rows["value"].max() / rows["value"].min() > 100:
        ax.set_yscale("log")  # memorization drives the loss towards 0: show its last decades
    ax.set(xlabel="epoch", ylabel="training loss", title="a) training loss")
    if fit_panel:
        _fit_panel(axes[0, 1], sw)
    _legend(fig, sw, colours)
    return fig


def _fit_panel(ax: Axes, sw: _Sweep) -> None:
    job_series, colours = sw.series(exclude=("noise.p",))
    sw.curve(ax, sw.jobs, job_series, colours, "noise.p", "epochs_to_fit", marker="o")
    if "epochs" in sw.jobs.columns:  # a job that never fit: a cross at the epochs it trained
        unfit = sw.jobs[sw.jobs["epochs_to_fit"].isna()]
        ax.scatter(unfit["noise.p"], unfit["epochs"], marker="x", s=40,
                   c=[colours[s] for s in unfit["job"].map(job_series)])
    ax.set(xlabel="noise level p", ylabel="epochs to fit", ylim=(0, None),
           title="b) epochs to fit the training set")
    # Panel b's series are not panel a's (the noise level is its x axis): its own legend.
    handles = [Line2D([], [], color=c, label=label) for label, c in colours.items()]
    handles.append(Line2D([], [], color="0.2", ls="", marker="x",
                          label="did not fit (at epochs trained)"))
    ax.legend(handles=handles, fontsize="x-small", loc="lower right")


_LAYER_METRICS = (("cosine", "mean cosine similarity"), ("polarization", "polarization"))
# Polarization is logged in two readings of the class c (memorization/metrics/polarization.py):
# the configured one as `polarization`, the other under a key naming its labelling
_OTHER_POLARIZATION = {"polarization_trainlabel": "c = training label",
                       "polarization_truelabel": "c = true class"}


def _polarization_readings(sw: _Sweep) -> tuple[str, list[tuple[str, str]]]:
    """The configured reading's name and the other readings the sweep has, (metric, name);
    a sweep without them (older runs) leaves the configured reading unnamed."""
    others = [(m, f"polarization, {c}") for m, c in _OTHER_POLARIZATION.items()
              if not sw.rows(m, "train").empty]
    if len(others) != 1:  # none, or both (jobs configured either way): no one name fits
        return "polarization" + ", as configured" * bool(others), others
    mine = "c = true class" if others[0][0] == "polarization_trainlabel" else "c = training label"
    return f"polarization, {mine}", others


def fig_cosine_polarization_vs_depth(sw: _Sweep) -> Figure | str:
    present = sw.present(_LAYER_METRICS, "train")
    if not present:
        return "no cosine or polarization values (metrics disabled?)"
    job_series, colours = sw.series()
    fig, axes = _figure(sw, "per-layer metrics (training set) vs depth at the last evaluated "
                        "epoch", len(present))
    every = pd.concat([sw.rows(m, "train") for m, _ in present])
    styles: Styles = []
    for ax, (metric, name) in zip(axes[0], present, strict=True):
        _vs_depth(ax, sw, metric, "train", job_series, colours, every)
        ax.set(ylabel=name, title=name)
        if metric != "polarization":
            continue
        configured, others = _polarization_readings(sw)
        for other, _ in others:  # dashed, in the series' colours
            sw.curve(ax, last_epoch(sw.rows(other, "train")), job_series, colours, "depth",
                     ls="--", marker="o")
        if others:
            other_name = others[0][1] if len(others) == 1 else "polarization, the other reading"
            styles = [(f"solid: {configured}", {}), (f"dashed: {other_name}", {"ls": "--"})]
    _legend(fig, sw, colours, styles)
    return fig


_HEATMAP_COLUMNS = 6  # more series than this wrap onto further rows, so the PNG stays legible


def fig_cosine_polarization_heatmap(sw: _Sweep) -> Figure | str:
    present = sw.present(_LAYER_METRICS, "train")
    if not present:
        return "no cosine or polarization values (metrics disabled?)"
    if any(m == "polarization" for m, _ in present):  # a block per reading of the class c
        configured, others = _polarization_readings(sw)
        present = [(m, configured if m == "polarization" else name) for m, name in present]
        present += others
    job_series, colours = sw.series()
    labels = list(colours)
    ncols = min(len(labels), _HEATMAP_COLUMNS)
    blocks = -(-len(labels) // ncols)
    fig, axes = _figure(sw, "per-layer metrics (training set), layer × epoch, mean over seeds",
                        ncols, len(present) * blocks, size=(3.0, 2.6), legend_w=1.0, sharey="row")
    for m, (metric, name) in enumerate(present):
        rows = sw.rows(metric, "train")
        mean = (rows.assign(series=rows["job"].map(job_series))
                .groupby(["series", "depth", "epoch"])["value"].mean())
        block = axes[m * blocks:(m + 1) * blocks]
        for i, ax in enumerate(block.flat):
            if i >= len(labels) or labels[i] not in mean.index.get_level_values("series"):
                ax.set_axis_off()
                continue
            _heatmap(ax, mean, labels[i], rows, first_column=i % ncols == 0)
            ax.set_ylabel(name if i % ncols == 0 else "")
        images = [a.images[0] for a in block.flat if a.images]
        fig.colorbar(images[0], ax=block, label=name, shrink=0.9)
    return fig


def _heatmap(ax: Axes, mean: pd.Series, label: str, rows: pd.DataFrame, first_column: bool):
    """One series' seed mean as layer × epoch cells, on the metric's colour scale (all series)."""
    grid = mean.xs(label, level="series").unstack("epoch").sort_index()
    ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="viridis",
              vmin=mean.min(), vmax=mean.max(), interpolation="nearest")
    names = rows.drop_duplicates("depth").set_index("depth")["layer"]
    ax.set_yticks(range(len(grid)), names.reindex(grid.index).fillna("?"))
    ax.tick_params(labelleft=first_column)  # the row shares its y axis: name the layers once
    ticks = np.unique(np.linspace(0, grid.shape[1] - 1, min(6, grid.shape[1])).round().astype(int))
    ax.set_xticks(ticks, grid.columns[ticks].astype(int))
    ax.set(xlabel="epoch", title=label)
    ax.title.set_fontsize("small")
    ax.grid(False)


_MASC = (("masc", "MASC, subspaces from training labels"),
         ("masc_true", "MASC, subspaces from true labels"))


def fig_masc_per_layer(sw: _Sweep) -> Figure | str:
    panels = sw.present(_MASC, "test")
    if not panels:
        return "no MASC values (metrics.masc.enabled=false?)"
    job_series, colours = sw.series()
    fig, axes = _figure(sw, "MASC test accuracy per layer at the last evaluated epoch",
                        len(panels))
    every = pd.concat([sw.rows(m, "test") for m, _ in panels])
    refs = [(c, ls) for c, ls in (("train/acc", ":"), ("test/acc", "--")) if c in sw.jobs.columns]
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        _vs_depth(ax, sw, metric, "test", job_series, colours, every)
        for col, ls in refs:  # the model's own accuracy, to compare each layer's MASC with
            means = sw.jobs.groupby(sw.jobs["job"].map(job_series))[col].mean().dropna()
            ax.hlines(means, 0, 1, colors=[colours[s] for s in means.index], linestyles=ls,
                      lw=1, transform=ax.get_yaxis_transform())
        _acc_axis(ax, "MASC test accuracy", "layer (by depth)")
        ax.set_title(title, fontsize="medium")
    styles = [(f"{'dotted' if ls == ':' else 'dashed'}: model {c.split('/')[0]} acc (final)",
               {"ls": ls}) for c, ls in refs]
    _legend(fig, sw, colours, styles)
    return fig


_STYLES = ("-", "--", ":", "-.")  # CSR splits: at most train, val, test


def fig_csr(sw: _Sweep) -> Figure | str:
    csr = sw.rows("csr")
    if csr.empty:
        return "no CSR values (metrics.csr disabled?)"
    job_series, colours = sw.series()
    fig, axes = _figure(sw, "critical sample ratio and accuracy over epochs", 2)
    ax = axes[0, 0]
    styles = dict(zip(sorted(csr["split"].unique()), cycle(_STYLES)))
    for split, rows in csr.groupby("split"):
        sw.curve(ax, rows, job_series, colours, "epoch", ls=styles[split], marker=".")
    ax.set(xlabel="epoch", ylabel=f"CSR ({', '.join(s or 'no split' for s in styles)})",
           ylim=(0, None), title="a) critical sample ratio")
    held_out = "val" if not sw.rows("acc", "val").empty else "test"
    ax = axes[0, 1]
    for split, ls in (("train", "-"), (held_out, "--")):
        sw.curve(ax, sw.rows("acc", split), job_series, colours, "epoch", ls=ls)
    _acc_axis(ax, "accuracy")
    ax.set_title(f"b) train and {held_out} accuracy")
    legend = [("b) solid: train acc", {}), (f"b) dashed: {held_out} acc", {"ls": "--"})]
    if len(styles) > 1:  # several CSR splits: panel a tells them apart by line style
        legend += [(f"a) CSR on {s}", {"ls": ls}) for s, ls in styles.items()]
    _legend(fig, sw, colours, legend)
    return fig


_SUBSETS = (("acc_clean", "clean subset\n(training labels = true labels)"),
            ("acc_corrupted", "corrupted subset\nvs training labels (memorized)"),
            ("acc_corrupted_true", "corrupted subset\nvs true labels"))


def fig_memorization_curve(sw: _Sweep) -> Figure | str:
    if sw.rows("acc_clean", "train").empty:
        return "no clean/corrupted subset accuracy (train/acc_clean)"
    job_series, colours = sw.series()
    panels = sw.present(_SUBSETS, "train")
    fig, axes = _figure(sw, "training-set accuracy by subset over epochs", len(panels))
    styles: Styles = []
    for ax, (metric, title) in zip(axes[0], panels, strict=True):
        # A series without a corrupted subset (p = 0) has no rows there: no line, as it should.
        sw.curve(ax, sw.rows(metric, "train"), job_series, colours, "epoch")
        if metric == "acc_clean" and not sw.rows("acc", "test").empty:
            sw.curve(ax, sw.rows("acc", "test"), job_series, colours, "epoch", ls="--")
            styles = [("solid: training subset acc", {}), ("dashed: test acc", {"ls": "--"})]
        _acc_axis(ax, "accuracy")
        ax.set_title(title)
    _legend(fig, sw, colours, styles)
    return fig


# Arpit et al. Fig. 6 (and Zhang et al. Fig. 1b along noise.p, training_loss.png's panel b)
# (swept key, axis label, the column of the x values: the run's own count of training samples
# rather than data.train_size's text, which may be a fraction or null)
_CAPACITY = (("model.width", "hidden units per layer", "model.width"),
             ("data.train_size", "training samples", "n_train"))


def fig_time_to_convergence(sw: _Sweep) -> Figure | str | None:
    """Epochs to fit against capacity and against training-set size, a line per noise level;
    None (no figure, no note) when the sweep varies neither."""
    swept = [(k, label, x if x in sw.jobs.columns else k) for k, label, x in _CAPACITY
             if k in sw.jobs.columns and sw.jobs[k].nunique(dropna=False) >= 2]
    if not swept:
        return None
    if "epochs_to_fit" not in sw.jobs.columns:
        return "no epochs_to_fit"
    fig, axes = _figure(sw, "time to convergence: epochs to fit the training set", len(swept))
    for ax, (key, label, x) in zip(axes[0], swept, strict=True):
        job_series, colours = sw.series(exclude=(key,))
        jobs = sw.jobs.assign(**{x: pd.to_numeric(sw.jobs[x], errors="coerce")})
        sw.curve(ax, jobs, job_series, colours, x, "epochs_to_fit", marker="o")
        values = jobs[x].dropna()
        if len(values) and values.min() > 0 and values.max() / values.min() >= 8:
            ax.set_xscale("log", base=2)
        ax.set(xlabel=label, ylabel="epochs to fit", ylim=(0, None))
        ax.legend(handles=[Line2D([], [], color=c, label=name) for name, c in colours.items()],
                  fontsize="x-small")
    return fig


FIGURES: dict[str, Callable[[_Sweep], Figure | str]] = {
    "test_acc_vs_noise.png": fig_test_acc_vs_noise,
    "training_loss.png": fig_training_loss,
    "cosine_polarization_vs_depth.png": fig_cosine_polarization_vs_depth,
    "cosine_polarization_heatmap.png": fig_cosine_polarization_heatmap,
    "masc_per_layer.png": fig_masc_per_layer,
    "csr.png": fig_csr,
    "memorization_curve.png": fig_memorization_curve,
}
# drawn only for sweeps along their parameters (no note otherwise)
SWEEP_FIGURES: dict[str, Callable[[_Sweep], Figure | str | None]] = {
    "time_to_convergence.png": fig_time_to_convergence,
}


def write_figures(jobs: pd.DataFrame, history: pd.DataFrame, swept: list[str], title: str,
                  out_dir: Path) -> tuple[list[Path], list[str]]:
    """Draw every figure the sweep has data for into ``out_dir`` (created if needed).

    Returns the PNG paths written and one human-readable line per figure (or panel) left out.
    """
    sw = _Sweep(numeric_columns(jobs.reset_index(drop=True)), history, list(swept), title)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, draw in {**FIGURES, **SWEEP_FIGURES}.items():
        sw.nseeds = 0
        fig = draw(sw)
        if fig is None:
            continue
        if isinstance(fig, str):
            sw.notes.append(f"skipped {name}: {fig}")
            continue
        # A bare Figure (no pyplot) is never registered globally: nothing to close afterwards.
        with atomic_path(out_dir / name) as tmp:  # a reader never sees half a PNG
            fig.savefig(tmp, dpi=DPI, format="png")
        written.append(out_dir / name)
    return written, sw.notes
