"""Series of a sweep report's figures: which jobs make one line, its label and colour, and the
aggregate over seeds (mean with a min–max band). The rules are in figures.py's docstring."""

from __future__ import annotations

import matplotlib as mpl
import pandas as pd

BAND_ALPHA = 0.2
# Sequential colour families, one per noise type: the shade then encodes the noise level.
_FAMILIES = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd")
Color = tuple[float, float, float, float]
Styles = list[tuple[str, dict]]  # extra legend entries: (label, Line2D keyword arguments)


def series_keys(jobs: pd.DataFrame, swept: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """The swept parameters that split jobs into series, in label order (type, others, level)."""
    keys = [k for k in dict.fromkeys(swept)
            if not k.endswith("seed") and k not in exclude and k in jobs.columns
            and jobs[k].nunique(dropna=False) > 1]
    rest = [k for k in keys if k not in ("noise", "noise.p")]
    return [k for k in keys if k == "noise"] + rest + [k for k in keys if k == "noise.p"]


def _sortable(values: pd.Series) -> pd.Series:
    # Config values mix types (None, ints, strings): numbers sort as numbers, anything else as text.
    num = pd.to_numeric(values, errors="coerce")
    return num if num.notna().sum() == values.notna().sum() else values.astype(str)


def _fmt(key: str, values: pd.Series) -> pd.Series:
    text = values.map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
    return {"noise": "", "noise.p": "p="}.get(key, f"{key}=") + text


def series_table(jobs: pd.DataFrame, swept: list[str],
                 exclude: tuple[str, ...] = ()) -> tuple[pd.Series, dict[str, Color]]:
    """Each job's series label (job -> label) and each series' colour, in legend order."""
    keys = series_keys(jobs, swept, exclude)
    combos = jobs.sort_values(keys, kind="stable", key=_sortable) if keys else jobs
    if not keys:  # one series: name it after the noise type when that is unambiguous
        types = jobs["noise"].unique() if "noise" in jobs.columns else []
        label = pd.Series(str(types[0]) if len(types) == 1 else "all jobs", index=combos.index)
    else:
        parts = [_fmt(k, combos[k]) for k in keys]
        if keys[0] == "noise" and len(parts) > 1:  # "label_flip p=0.4"
            label = parts[0] + " " + parts[1].str.cat(parts[2:], sep=", ")
        else:
            label = parts[0].str.cat(parts[1:], sep=", ")
    job_series = pd.Series(label.to_numpy(), index=combos["job"].to_numpy(), name="series")
    return job_series, _colours(combos.assign(_label=label.to_numpy()), keys)


def _colours(combos: pd.DataFrame, keys: list[str]) -> dict[str, Color]:
    first = combos.drop_duplicates("_label").set_index("_label")
    group_keys = ["noise"] if "noise" in keys else [k for k in keys if k != "noise.p"]
    if not group_keys and "noise.p" in keys:
        p = first["noise.p"].astype(float)
        span = (p.max() - p.min()) or 1.0
        return {label: mpl.colormaps["viridis"](0.85 * (v - p.min()) / span)
                for label, v in p.items()}
    if not group_keys:
        return {label: mpl.colors.to_rgba("C0") for label in first.index}
    groups = first[group_keys].astype(str).agg("|".join, axis=1)
    colours = {}
    for g, (_, members) in enumerate(groups.groupby(groups, sort=False)):
        family, n = mpl.colormaps[_FAMILIES[g % len(_FAMILIES)]], len(members)
        for rank, label in enumerate(members.index):
            colours[label] = family(0.75 if n == 1 else 0.45 + 0.5 * rank / (n - 1))
    return {label: colours[label] for label in first.index}


def aggregate(frame: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    """Mean, min, max and count (n) of ``value`` per ``by`` group, NaNs left out."""
    grouped = frame.groupby(by, sort=True)[value]
    out = grouped.agg(["mean", "min", "max", "count"]).rename(columns={"count": "n"})
    return out[out["n"] > 0].reset_index()


def last_epoch(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows at each job's last evaluated epoch (per-layer metrics skip epochs)."""
    return rows[rows["epoch"] == rows.groupby("job")["epoch"].transform("max")]


def numeric_columns(jobs: pd.DataFrame) -> pd.DataFrame:
    """Jobs with the value columns as floats: config and metrics.json values may be None."""
    cols = [c for c in jobs.columns
            if c in ("noise.p", "epochs", "epochs_to_fit", "gap") or "/" in str(c)]
    return jobs.assign(**{c: pd.to_numeric(jobs[c], errors="coerce") for c in cols})
