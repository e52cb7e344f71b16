"""Verdicts: a paper's claim against our numbers, as tests a reader can recompute.

A claim is judged by up to two tests:

- a **number** test: our value against the paper's, within a stated tolerance (``within``,
  ``at_least``). Passing it is *reproduced*.
- a **direction** test: the shape the paper describes (a sign, a slope with its fit, an
  ordering, monotonicity), stated in words such as "slope > 0, R² ≥ 0.9". Passing it (and not
  the number test, or a claim that has none) is *reproduced in direction*.

Failing both is *not reproduced*; a claim whose sweep has no finished job yet is *not run*. A
claim is never dropped: its row is written with the verdict it gets.

Seeds enter as several values per setting: :class:`Stat` keeps their mean and their min-max.
Fits (:func:`linear`) run on the per-level means, so R² measures the shape, not the seed noise.

**Per seed, and inconclusive.** A test on the seeds' means can pass by a hair that one seed
undoes. So a test is also run on each seed (or, for a paper that analyses the best-fitting of
its initializations, on each initialization by rank) on its own (:func:`by_seed`), and a
:class:`Check` keeps every seed's outcome and margin beside the pooled one. A test whose
outcomes disagree (between seeds, or between the seeds and the pooled value: the pooled margin
lies inside the seeds' spread) is *split*, and a claim that rests on a split test is
*inconclusive*, never *reproduced in direction* nor *not reproduced* (:func:`verdict`). A test
that has one seed only says so (``n=1``) and cannot be split.
Everything here is pure (numbers in, numbers out) and tested on fabricated values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

REPRODUCED = "reproduced"
DIRECTION = "reproduced in direction"
INCONCLUSIVE = "inconclusive"  # the seeds disagree: neither reproduced nor not
NOT_REPRODUCED = "not reproduced"
NOT_RUN = "not run"
FAILED = "check failed"  # the check itself raised: a bug or damaged results, never a verdict
VERDICTS = (REPRODUCED, DIRECTION, INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, FAILED)


@dataclass(frozen=True)
class Stat:
    """Seeds of one setting: mean and min-max of the finite values, and how many there were."""

    mean: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not vals:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(sum(vals) / len(vals), min(vals), max(vals), len(vals))

    def fmt(self, pct: bool = False, digits: int = 1) -> str:
        """``41.2% (39.0–43.1, n=3)``; one value without the range; ``–`` with none."""
        if self.n == 0:
            return "–"
        unit = "%" if pct else ""

        def f(v: float) -> str:
            return f"{100 * v if pct else v:.{digits}f}"

        if self.n == 1:
            return f"{f(self.mean)}{unit} (n=1)"
        return f"{f(self.mean)}{unit} ({f(self.lo)}–{f(self.hi)}, n={self.n})"


_MARK = {True: "holds", False: "fails", None: "n/a"}


@dataclass(frozen=True)
class Check:
    """One test of a claim: what it asks (``rule``), what we measured (``measured``) and whether
    it held. ``passed`` None: it could not be computed (too few values). ``seeds``: the same
    test on each seed alone, as (label, passed, measured) (empty: not run per seed)."""

    rule: str
    measured: str
    passed: bool | None
    seeds: tuple[tuple[str, bool | None, str], ...] = ()
    parts: tuple[Check, ...] = ()  # the tests an all_of joined, for a detailed listing
    pooled: str = "the seeds pooled"  # what the test without a seed label ran on

    @property
    def split(self) -> bool:
        """The pooled test and the per-seed ones do not all agree (n/a ones aside)."""
        outcomes = {p for p in (self.passed, *(s[1] for s in self.seeds)) if p is not None}
        return len(outcomes) > 1

    @property
    def mark(self) -> str:
        return "split: inconclusive" if self.split else _MARK[self.passed]

    def fmt(self, brief: bool = False) -> str:
        """``rule: measured (mark)`` and each seed's outcome: with its measured values, or
        (``brief``) its mark only."""
        text = f"{self.rule}: {self.measured} ({self.mark})"
        if self.seeds:
            text += "; per " + ", ".join(
                f"{label}: {_MARK[p]}" if brief else f"{label}: {measured} ({_MARK[p]})"
                for label, p, measured in self.seeds)
        return text

    def lines(self) -> list[str]:
        """Markdown list items: the test, then each part (of an all_of) with its own
        per-seed values, so every number stands beside the rule it is held to."""
        head = f"{self.rule} — {self.mark}"
        if not self.parts:
            return [head, *(f"  - {self.pooled}: {self.measured}" if self.seeds else
                            f"  - {self.measured}",),
                    *(f"  - {label}: {m} ({_MARK[p]})" for label, p, m in self.seeds)]
        out = [head]
        for part in self.parts:
            who = f" ({self.pooled})" if part.seeds else ""
            out.append(f"  - {part.rule}: {part.measured}{who} ({part.mark})")
            out += [f"    - {label}: {m} ({_MARK[p]})" for label, p, m in part.seeds]
        return out


def verdict(number: Check | None = None, direction: Check | None = None,
            ran: bool = True, error: str = "") -> str:
    """The claim's verdict from its tests (see the module docstring): a test counts only if
    it is not split; a claim whose deciding test is split is *inconclusive*."""
    if error:
        return FAILED
    if not ran:
        return NOT_RUN
    if number is not None and number.passed and not number.split:
        return REPRODUCED
    if direction is not None and direction.passed and not direction.split:
        return DIRECTION
    if direction is not None and direction.split:
        return INCONCLUSIVE
    if number is not None and number.split:  # reproduced on some seeds, not on others
        return INCONCLUSIVE
    return NOT_REPRODUCED


def by_seed(test: Callable[[object], Check], seeds: Sequence, label: str = "seed",
            pooled: str = "the seeds pooled") -> Check:
    """``test(None)`` (every seed pooled, or whatever ``pooled`` says it ran on) with
    ``test(s)`` for each seed ``s`` kept beside it. With a single seed there is nothing to
    compare: the pooled check alone."""
    whole = replace(test(None), pooled=pooled)
    if len(seeds) < 2:
        return whole
    per = {s: test(s) for s in seeds}
    # a seed's parts by their rule: a part one seed could not compute is absent there, so
    # matching by position would list another rule's values under this one
    by_rule = {s: {q.rule: q for q in c.parts} for s, c in per.items()}
    parts = tuple(replace(part, seeds=tuple(
        (f"{label} {s}", rules[part.rule].passed, rules[part.rule].measured)
        for s, rules in by_rule.items() if part.rule in rules)) for part in whole.parts)
    return replace(whole, parts=parts,
                   seeds=tuple((f"{label} {s}", c.passed, c.measured) for s, c in per.items()))


# ---- fits and shapes -------------------------------------------------------------------------

def linear(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line through (x, y): (slope, intercept, R²). R² is 1 for a perfect line
    and nan where y is constant or there are fewer than 3 points (a line through 2 points says
    nothing about linearity)."""
    pts = [(float(a), float(b)) for a, b in zip(x, y, strict=True)
           if math.isfinite(float(a)) and math.isfinite(float(b))]
    n = len(pts)
    if n < 2:
        return math.nan, math.nan, math.nan
    mx = sum(a for a, _ in pts) / n
    my = sum(b for _, b in pts) / n
    sxx = sum((a - mx) ** 2 for a, _ in pts)
    if sxx == 0:
        return math.nan, math.nan, math.nan
    slope = sum((a - mx) * (b - my) for a, b in pts) / sxx
    intercept = my - slope * mx
    syy = sum((b - my) ** 2 for _, b in pts)
    if n < 3 or syy == 0:
        return slope, intercept, math.nan
    ss_res = sum((b - (intercept + slope * a)) ** 2 for a, b in pts)
    return slope, intercept, 1 - ss_res / syy


def slope_test(x: Sequence[float], y: Sequence[float], sign: int, min_r2: float | None = None,
               what: str = "slope") -> Check:
    """``sign * slope > 0`` (and R² ≥ ``min_r2`` when given) of the line through (x, y)."""
    slope, _, r2 = linear(x, y)
    rule = f"{what} {'>' if sign > 0 else '<'} 0" + (f", R² ≥ {min_r2:g}" if min_r2 else "")
    if math.isnan(slope) or (min_r2 is not None and math.isnan(r2)):
        return Check(rule, f"{len(x)} point(s): no fit", None)
    ok = sign * slope > 0 and (min_r2 is None or r2 >= min_r2)
    measured = f"slope {slope:+.3g}" + (f", R² {r2:.3f}" if not math.isnan(r2) else "")
    return Check(rule, measured, ok)


def monotone(values: Sequence[float], sign: int, tol: float = 0.0,
             what: str = "values") -> Check:
    """Each value at least the one before (``sign`` +1; at most, -1), allowing ``tol`` of
    backsliding per step (seed noise)."""
    rule = f"{what} {'non-decreasing' if sign > 0 else 'non-increasing'}" + (
        f" (within {tol:g} a step)" if tol else "")
    vals = [float(v) for v in values]
    if len(vals) < 2 or any(math.isnan(v) for v in vals):
        return Check(rule, "fewer than 2 values", None)
    steps = [sign * (b - a) for a, b in zip(vals[:-1], vals[1:], strict=True)]
    worst = min(steps)
    return Check(rule, "steps " + ", ".join(f"{sign * s:+.3g}" for s in steps), worst >= -tol)


def within(ours: float, target: float, tol: float, what: str = "ours", pct: bool = False) -> Check:
    """``|ours - target| ≤ tol``."""
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3g}")
    rule = f"|{what} − {f(target)}| ≤ {f(tol)}"
    if ours is None or math.isnan(ours):
        return Check(rule, "no value", None)
    return Check(rule, f"{what} {f(ours)}", abs(ours - target) <= tol)


def at_least(ours: float, bound: float, what: str = "ours", pct: bool = False) -> Check:
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3g}")
    rule = f"{what} ≥ {f(bound)}"
    if ours is None or math.isnan(ours):
        return Check(rule, "no value", None)
    return Check(rule, f"{what} {f(ours)}", ours >= bound)


def greater(a: float, b: float, rule: str, measured: str | None = None) -> Check:
    """``a > b``, with the rule in words (e.g. "epochs to fit at p=1 > at p=0")."""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return Check(rule, "no value", None)
    return Check(rule, measured or f"{a:.3g} vs {b:.3g}", a > b)


def _conjunction(outcomes: Sequence[bool | None]) -> bool | None:
    if any(p is False for p in outcomes):
        return False
    if any(p is None for p in outcomes) or not outcomes:
        return None
    return True


def all_of(tests: Sequence[Check], rule: str | None = None) -> Check:
    """Every test holds; n/a if any is n/a and none fails, or if there is no test at all.
    Per seed likewise: a seed holds when it holds in every test, taking a test not run per
    seed at its pooled outcome (that outcome is every seed's, so it cannot split the claim)."""
    if not tests:
        return Check(rule or "every test holds", "nothing to test", None)
    labels = list(dict.fromkeys(lab for t in tests for lab, _, _ in t.seeds))
    seeds = []
    for lab in labels:
        mine = [(p, m) for t in tests for lb, p, m in t.seeds if lb == lab]
        shared = [t.passed for t in tests if not t.seeds]
        seeds.append((lab, _conjunction([p for p, _ in mine] + shared),
                      "; ".join(m for _, m in mine)))
    parts = tuple(q for t in tests for q in (t.parts or (t,)))
    return Check(rule or " and ".join(t.rule for t in tests),
                 "; ".join(t.measured for t in tests), _conjunction([t.passed for t in tests]),
                 tuple(seeds), parts)
