"""The reproduction's comparison logic on fabricated sweeps (right answers worked out by hand),
its document, its command line, and (slow) `make reproduce PAPER=zhang SCALE=smoke` end to end."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from memorization.reproduce import papers
from memorization.reproduce.document import write_document
from memorization.reproduce.plan import Claim, Outcome, Results, evaluate, levels
from memorization.reproduce.verdicts import (
    DIRECTION,
    FAILED,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    Check,
    Stat,
    all_of,
    linear,
    monotone,
    slope_test,
    verdict,
    within,
)

ROOT = Path(__file__).resolve().parents[1]
PAPERS = papers()


# ---- verdicts -------------------------------------------------------------------------------

def test_linear_by_hand():
    slope, intercept, r2 = linear([0, 1, 2], [1, 3, 5])
    assert (slope, intercept, r2) == (2.0, 1.0, 1.0)
    # x=[0,1,2], y=[0,1,3]: slope 3/2, intercept -1/6, residuals 1/6, -1/3, 1/6:
    # SS_res = 1/6, SS_tot = 14/3, R² = 1 - 1/28
    slope, intercept, r2 = linear([0, 1, 2], [0, 1, 3])
    assert slope == pytest.approx(1.5) and intercept == pytest.approx(-1 / 6)
    assert r2 == pytest.approx(27 / 28)


def test_linear_degenerate():
    assert all(math.isnan(v) for v in linear([1], [2]))
    assert math.isnan(linear([0, 1], [0, 1])[2])  # two points say nothing about linearity
    assert math.isnan(linear([0, 1, 2], [3, 3, 3])[2])  # constant y
    assert linear([0, 1, float("nan"), 2], [0, 1, 5, 2])[2] == pytest.approx(1.0)


def test_slope_test():
    assert slope_test([0, 1, 2], [0, 1, 2], +1, 0.9).passed is True
    assert slope_test([0, 1, 2], [0, 1, 2], -1).passed is False
    assert slope_test([0, 1, 2], [0, 1, 3], +1, 0.99).passed is False  # R² 27/28 < 0.99
    assert slope_test([0, 1, 2], [0, 1, 3], +1, 0.96).passed is True
    assert slope_test([0, 1], [0, 1], +1, 0.9).passed is None


def test_monotone_with_tolerance():
    assert monotone([1, 2, 3], +1).passed is True
    assert monotone([1, 2, 1.95], +1).passed is False
    assert monotone([1, 2, 1.95], +1, tol=0.1).passed is True
    assert monotone([3, 2, 1], -1).passed is True
    assert monotone([1], +1).passed is None


def test_within_and_stat():
    assert within(0.095, 0.10, 0.01).passed is True
    assert within(0.115, 0.10, 0.01).passed is False
    assert within(float("nan"), 0.1, 0.01).passed is None
    s = Stat.of([0.5, None, float("nan"), 0.7, 0.6])
    assert (s.n, s.lo, s.hi) == (3, 0.5, 0.7) and s.mean == pytest.approx(0.6)
    assert s.fmt(pct=True) == "60.0% (50.0–70.0, n=3)"
    assert Stat.of([]).fmt() == "–" and Stat.of([2.0]).fmt() == "2.0 (n=1)"


def test_verdict_order():
    yes, no, na = Check("r", "m", True), Check("r", "m", False), Check("r", "m", None)
    assert verdict(yes, no) == REPRODUCED
    assert verdict(no, yes) == DIRECTION
    assert verdict(None, yes) == DIRECTION
    assert verdict(no, na) == NOT_REPRODUCED
    assert verdict(None, None) == NOT_REPRODUCED
    assert verdict(yes, yes, ran=False) == NOT_RUN
    assert verdict(yes, yes, error="KeyError") == FAILED
    assert all_of([yes, na]).passed is None and all_of([yes, no, na]).passed is False
    assert all_of([]).passed is None  # nothing tested is not a pass


# ---- claims on fabricated sweeps ------------------------------------------------------------

def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).assign(job=lambda d: [str(i) for i in range(len(d))])


def _labels(test_err, train=lambda p, s: 1.0, fit=lambda p, s: 50 + 60 * p):
    ps = (0, 0.2, 0.4, 0.6, 0.8, 1.0)
    return _frame([{"noise": "label_uniform", "noise.p": p, "seed": s,
                    "train/acc": train(p, s), "test/acc": 1 - test_err(p, s),
                    "epochs_to_fit": fit(p, s)} for p in ps for s in (0, 1, 2)])


def _claim(paper: str, cid: str) -> Claim:
    return next(c for c in PAPERS[paper].claims if c.id == cid)


def test_zhang_test_error_claim():
    z4 = _claim("zhang", "Z4")
    # test error 0.1 + 0.8 p (+-0.01 over seeds): a line reaching 90% at p = 1
    good = Results(jobs={"label_noise": _labels(lambda p, s: 0.1 + 0.8 * p + 0.01 * (s - 1))})
    o = evaluate(z4, good)
    assert o.verdict == REPRODUCED and o.direction.passed
    assert "p=1: 90.0% (89.0–91.0, n=3)" in o.ours
    # the same line stopping at 70% error: the shape holds, the number does not
    short = Results(jobs={"label_noise": _labels(lambda p, s: 0.1 + 0.6 * p)})
    assert evaluate(z4, short).verdict == DIRECTION
    flat = Results(jobs={"label_noise": _labels(lambda p, s: 0.5 - 0.1 * (p == 0.4))})
    assert evaluate(z4, flat).verdict == NOT_REPRODUCED


def test_zhang_fit_claims():
    z1, z3 = _claim("zhang", "Z1"), _claim("zhang", "Z3")
    ok = Results(jobs={"label_noise": _labels(lambda p, s: 0.5)})
    assert evaluate(z1, ok).verdict == REPRODUCED
    assert evaluate(z3, ok).verdict == DIRECTION
    one_short = _labels(lambda p, s: 0.5, train=lambda p, s: 0.98 if (p, s) == (1.0, 2) else 1)
    o = evaluate(z1, Results(jobs={"label_noise": one_short}))
    assert o.verdict == NOT_REPRODUCED and "98.0%" in o.number.measured
    faster = _labels(lambda p, s: 0.5, fit=lambda p, s: 100 - 40 * p)
    assert evaluate(z3, Results(jobs={"label_noise": faster})).verdict == NOT_REPRODUCED


def _theunissen(gap_label, gap_input) -> Results:
    lab = _frame([{"noise": "label_flip", "noise.p": p, "seed": s, "gap": gap_label(p),
                   "train/acc": 1.0} for p in (0, 0.2, 0.4, 0.6, 0.8) for s in (0, 1, 2)])
    ins = _frame([{"noise": n, "noise.p": p, "seed": s, "gap": gap_input(n, p), "train/acc": 1.0}
                  for n in ("gaussian_sample", "structured") for p in (0.25, 0.5, 1.0)
                  for s in (0, 1, 2)])
    return Results(jobs={"label_noise": lab, "input_noise": ins})


def test_theunissen_gap_claims():
    t2, t3, t4 = (_claim("theunissen", c) for c in ("T2", "T3", "T4"))
    # the paper's picture: gap 0.1 + 0.8 p for labels; 0.1 flat for inputs until p = 1 (0.9)
    r = _theunissen(lambda p: 0.1 + 0.8 * p, lambda n, p: 0.9 if p == 1.0 else 0.11)
    assert evaluate(t2, r).verdict == DIRECTION
    assert evaluate(t3, r).verdict == DIRECTION
    assert evaluate(t4, r).verdict == DIRECTION
    # input noise that raises the gap like label noise does: not flat
    linear_inputs = _theunissen(lambda p: 0.1 + 0.8 * p, lambda n, p: 0.1 + 0.8 * p)
    assert evaluate(t3, linear_inputs).verdict == NOT_REPRODUCED
    # Gaussian and structured 10 pp apart at p = 0.5: not alike
    apart = _theunissen(lambda p: 0.1 + 0.8 * p,
                        lambda n, p: 0.2 if (n, p) == ("structured", 0.5) else 0.1)
    assert evaluate(t4, apart).verdict == NOT_REPRODUCED


def test_masc_table1_gain():
    m1 = _claim("masc", "M1")
    paper = dict(zip((0.2, 0.4, 0.6, 0.8), (0.0749, 0.3350, 0.8493, 1.89), strict=True))
    # model test acc 0.5 and MASC (best layer fc2, chosen on the held-out 20%) 0.5 * (1 + gain):
    # ours equals the paper's
    rows = [{"noise.p": p, "seed": s, "relabel/model/test_acc_before": 0.5,
             "relabel/masc/masc_test_acc": 0.5 * (1 + g), "relabel/masc/best_layer": "fc2"}
            for p, g in paper.items() for s in (0, 1, 2)]
    o = evaluate(m1, Results(jobs={"cnn_fmnist": _frame(rows)}))
    assert o.verdict == REPRODUCED, o.number.fmt()
    assert all(r["best layer(s)"] == "fc2" for r in o.rows)
    assert "p=0.2: 7.5% (7.5–7.5, n=3)" in o.ours
    # gains of the right sign and order but a third of the paper's: in direction only
    third = [dict(r, **{"relabel/masc/masc_test_acc": 0.5 * (1 + paper[r["noise.p"]] / 3)})
             for r in rows]
    assert evaluate(m1, Results(jobs={"cnn_fmnist": _frame(third)})).verdict == DIRECTION
    worse = [dict(r, **{"relabel/masc/masc_test_acc": 0.45}) for r in rows]
    assert evaluate(m1, Results(jobs={"cnn_fmnist": _frame(worse)})).verdict == NOT_REPRODUCED


def test_not_run_and_failed_checks():
    def broken(r: Results) -> Outcome:
        raise KeyError("x")

    claim = Claim("X1", "text", "Fig. 0", "paper", ("a",), broken)
    assert evaluate(claim, Results()).verdict == NOT_RUN
    o = evaluate(claim, Results(jobs={"a": _frame([{"noise.p": 0}])}))
    assert o.verdict == FAILED and "KeyError" in o.ours


def test_levels_groups_seeds():
    df = _frame([{"noise.p": p, "y": p + s} for p in (0.4, 0.0) for s in (0, 1)])
    pts = levels(df, "noise.p", "y")
    assert [x for x, _ in pts] == [0.0, 0.4]
    assert pts[1][1].mean == pytest.approx(0.9) and pts[1][1].n == 2


def test_every_paper_has_every_scale_and_sweep_names_agree():
    assert set(PAPERS) == {"zhang", "arpit", "theunissen", "masc"}
    for paper in PAPERS.values():
        assert set(paper.scales) == {"smoke", "cpu", "paper"}
        names = {s: [sw.name for sw in paper.scales[s].sweeps] for s in paper.scales}
        assert names["smoke"] == names["cpu"] == names["paper"], paper.key
        used = {n for c in paper.claims for n in c.sweeps}
        assert used <= set(names["cpu"]), paper.key
        assert len({c.id for c in paper.claims}) == len(paper.claims)


# ---- the document and the command line ------------------------------------------------------

def test_document_keeps_every_claim(tmp_path):
    paper = PAPERS["zhang"]
    r = Results(jobs={"label_noise": _labels(lambda p, s: 0.1 + 0.8 * p)})
    path = write_document(paper, "cpu", tmp_path / "runs", tmp_path / "docs", r, figures=False)
    text = path.read_text()
    for c in paper.claims:
        assert f"| {c.id} |" in text and f"### {c.id}." in text
    assert "**not run**" in text  # Z5's input sweep has no job: listed, not dropped
    assert "**Verdicts: 3 reproduced, 1 reproduced in direction, 1 not run (of 5 claims).**" in text
    assert "python -m memorization.run -m data=fashion_mnist" in text  # every sweep's command


def test_document_gives_the_likely_reason_only_under_a_failed_test(tmp_path):
    import dataclasses

    def outcome(passed: bool):
        return lambda r: Outcome("ours", number=Check("rule", "measured", passed))

    base = PAPERS["zhang"]
    fails, holds = (dataclasses.replace(base.claims[0], id=i, check=outcome(ok),
                                        why_not=f"reason {i}") for i, ok in (("F", False),
                                                                              ("H", True)))
    paper = dataclasses.replace(base, claims=(fails, holds))
    r = Results(jobs={"label_noise": _labels(lambda p, s: 0.1 + 0.8 * p)})
    text = write_document(paper, "cpu", tmp_path / "runs", tmp_path / "docs", r,
                          figures=False).read_text()
    assert "(our reading, not tested): reason F" in text
    assert "reason H" not in text


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-m", "memorization.reproduce", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600, **kw)


@pytest.mark.slow
def test_cli_refuses_bad_input(tmp_path):
    res = _cli("nosuch")
    assert res.returncode == 2 and "invalid choice: 'nosuch'" in res.stderr
    res = _cli("zhang", "--runs", str(tmp_path), "seed")
    assert res.returncode == 2 and "'seed' is not an override" in res.stderr


def test_cli_plan_prints_jobs_and_estimate(tmp_path):
    res = _cli("theunissen", "--scale", "cpu", "--plan", "--runs", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "scale cpu, 2 sweeps, 33 jobs" in res.stdout
    assert "label_noise: 0/15 finished" in res.stdout
    assert "estimate: at most" in res.stdout and "PFLOP" in res.stdout
    assert not any(tmp_path.iterdir())  # a plan runs and writes nothing


@pytest.mark.slow
def test_make_reproduce_smoke_end_to_end_and_resume(tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = ["make", "-s", "reproduce", "PAPER=zhang", "SCALE=smoke", f"RUNS={runs}",
           f"PY={sys.executable}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    doc = runs / "zhang" / "smoke" / "zhang_smoke.md"
    text = doc.read_text()
    for cid in ("Z1", "Z2", "Z3", "Z4", "Z5"):
        assert f"| {cid} |" in text
    assert "=== zhang (smoke):" in res.stdout  # the comparison, printed last
    assert "| Z1 |" in res.stdout.split("=== zhang (smoke):")[1]
    folders = sorted((runs / "zhang" / "smoke").glob("*/[0-9]*/metrics.json"))
    assert len(folders) == 5  # 2 label levels, 2 input corruptions, 1 shuffled-pixels job
    stamps = [p.stat().st_mtime_ns for p in folders]
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0
    assert [p.stat().st_mtime_ns for p in folders] == stamps  # finished jobs are not rerun
    assert "label_noise: 2/2 finished" in again.stdout
    # the same verdicts from the same jobs
    assert doc.read_text().split("\n## Setting")[0] == text.split("\n## Setting")[0]
