"""The report's tables: every value of every job (tidy), final values per job, and the Markdown
summary (one row per job) that ``-m`` prints last."""

from __future__ import annotations

import math

import pandas as pd

from memorization.base.io import pct
from memorization.cli.report.data import STATUSES, Sweep


def tidy(sweep: Sweep) -> pd.DataFrame:
    """All jobs × epochs × splits × layers × metrics, one value a row, with the job's status and
    swept parameters as columns (``job, status, <swept…>, epoch, split, layer, depth, metric,
    value``)."""
    cols = ["job", "status", *sweep.swept]
    return sweep.history.merge(sweep.jobs[cols], on="job", how="left")[
        cols + [c for c in sweep.history.columns if c != "job"]]


def finals(sweep: Sweep) -> pd.DataFrame:
    """One row per job: status, swept parameters, noise, seeds, epochs, corruption counts, and
    every final logged value (empty for jobs that have not finished)."""
    return sweep.jobs



def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _test_acc_at_fit(sweep: Sweep, job: str, epochs_to_fit) -> float | None:
    h = sweep.history
    rows = h[(h["job"] == job) & (h["metric"] == "acc") & (h["split"] == "test")
             & (h["layer"] == "") & (h["epoch"] == epochs_to_fit)]
    return _num(rows["value"].iloc[-1]) if len(rows) else None


def best_masc_layer(row: pd.Series, prefix: str = "masc/test/") -> tuple[float, str] | None:
    """The highest final MASC test accuracy over the network's layers, with the layer's name
    (not the input: its MASC depends on the data only). Chosen on the test set itself, so it
    is an upper bound of what the MASC paper's selection on held-out data would give."""
    vals = {k[len(prefix):]: _num(v) for k, v in row.items()
            if isinstance(k, str) and k.startswith(prefix) and _num(v) is not None
            and k[len(prefix):] != "input"}
    if not vals:
        return None
    layer = max(vals, key=vals.get)
    return vals[layer], layer


def summary_rows(sweep: Sweep) -> list[dict[str, str]]:
    """The Markdown table's rows for the finished jobs, as display strings."""
    rows = []
    for _, r in sweep.finished.iterrows():
        fit = _num(r.get("epochs_to_fit"))
        n, n_train = _num(r.get("n_corrupted")), _num(r.get("n_train"))
        corrupted = (f"{int(n)} ({100 * n / n_train:.1f}%)" if n is not None and n_train
                     else "–")
        at_fit = _test_acc_at_fit(sweep, r["job"], fit) if fit is not None else None
        best = best_masc_layer(r)
        row = {"job": str(r["job"])}
        row |= {k: _cell(r.get(k)) for k in sweep.swept}
        row |= {
            "samples corrupted": corrupted,
            "epochs to fit": (str(int(fit)) if fit is not None
                              else f"not fit ({_cell(r['epochs'])})"),
            "train acc (training labels)": pct(_num(r.get("train/acc"))),
            "train acc (true labels)": pct(_num(r.get("train/acc_true"))),
            "test acc at fit": pct(at_fit) if fit is not None
            else f"{pct(_num(r.get('test/acc')))} (end)",
            "best test acc": pct(_num(r.get("test/acc_best"))),
            "best-layer MASC test acc": f"{pct(best[0])} ({best[1]})" if best else "–",
        }
        rows.append(row)
    return rows


# the relabel table's columns: (title, relabel/... key); per labelling (masc: subspaces of the
# training labels, masc_true: of the true labels), as the MASC paper's Fig. 4 and Tables 6-8
RELABEL_COLUMNS = [
    ("model test acc before", "model/test_acc_before"),
    ("MASC best layer", "masc/best_layer"),
    ("MASC test acc", "masc/masc_test_acc"),
    ("retrained test acc", "masc/test_acc_after"),
    ("MASC-true best layer", "masc_true/best_layer"),
    ("MASC-true test acc", "masc_true/masc_test_acc"),
    ("retrained (true) test acc", "masc_true/test_acc_after"),
    ("wrong labels before", "masc/wrong_before"),
    ("wrong after", "masc/wrong_after"),
    ("fixed", "masc/fixed"),
    ("broken", "masc/broken"),
    ("wrong after (true)", "masc_true/wrong_after"),
    ("fixed (true)", "masc_true/fixed"),
    ("broken (true)", "masc_true/broken"),
    ("init MASC test acc, same layer", None),
]


def relabel_rows(sweep: Sweep) -> list[dict[str, str]]:
    """One row per finished job with relabel results (the MASC paper's Fig. 4 and Tables 6-8:
    test accuracies on the reported 80% of the test set, wrong training labels before and after
    relabeling as fractions of the training set); [] when no job has any."""
    done = sweep.finished
    if "relabel/model/test_acc_before" not in done.columns:
        return []
    rows = []
    for _, r in done.iterrows():
        if _num(r.get("relabel/model/test_acc_before")) is None:
            continue
        row = {"job": str(r["job"])} | {k: _cell(r.get(k)) for k in sweep.swept}
        for title, key in RELABEL_COLUMNS:
            if key is None:  # the random-initialization control at the chosen layer
                layer = r.get("relabel/masc/best_layer")
                row[title] = pct(_num(r.get(f"relabel/init/masc/test/{layer}")))
            elif key.endswith("best_layer"):
                row[title] = _cell(r.get(f"relabel/{key}"))
            else:
                row[title] = pct(_num(r.get(f"relabel/{key}")))
        rows.append(row)
    return rows


def markdown_rows(rows: list[dict[str, str]]) -> list[str]:
    cols = list(rows[0])
    return (["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
            + ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows])


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def markdown(sweep: Sweep) -> str:
    """The summary table in Markdown, with a line on unfinished jobs below it."""
    rows = summary_rows(sweep)
    lines = []
    if rows:
        lines += markdown_rows(rows)
    else:
        lines.append("(no finished job yet)")
    counts = sweep.jobs["status"].value_counts()
    others = sweep.jobs[sweep.jobs["status"] != "finished"]
    if len(others):
        lines.append("")
        lines.append(f"not in the table: {len(others)} job(s) not finished: " + ", ".join(
            f"{j} ({s})" for j, s in zip(others["job"], others["status"], strict=True)))
    head = (f"{sweep.title}\n{len(sweep.jobs)} job(s): "
            + ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts))
    return head + "\n\n" + "\n".join(lines) + "\n"
