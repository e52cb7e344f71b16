"""What a reproduction is: a paper, its claims, and per scale the sweeps that test them.

A :class:`Paper` lists its :class:`Claim` s once; each :class:`Scale` (``smoke``, ``cpu``,
``cpu10k`` where a paper's effects need more data than ``cpu`` has, ``paper``) lists the
:class:`SweepSpec` s that produce the numbers, under the same names at every scale, so a
claim's check reads the same sweeps whatever their size. A check receives the finished jobs of
its sweeps (:class:`Results`) and returns an :class:`Outcome`: our numbers as text, the number
and direction tests (:mod:`memorization.cli.reproduce.verdicts`), and a note.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from memorization.cli.reproduce.verdicts import Check, Stat, verdict

SCALES = ("smoke", "cpu", "cpu10k", "paper")


@dataclass(frozen=True)
class SweepSpec:
    """One ``-m`` sweep: fixed ``overrides``, swept ``params`` (key -> comma list), the entry
    point that runs it, the report figures worth showing, and what it stands for."""

    name: str
    overrides: tuple[str, ...]
    params: dict[str, str] = field(default_factory=dict)
    entry: str = "memorization.run"
    figures: tuple[str, ...] = ()
    about: str = ""

    @property
    def n_jobs(self) -> int:
        return math.prod(len(v.split(",")) for v in self.params.values()) if self.params else 1

    def arguments(self) -> list[str]:
        """The command line after ``python -m ENTRY -m`` (the sweep folder not included)."""
        return [*self.overrides, *(f"{k}={v}" for k, v in self.params.items())]

    def command(self, folder: str) -> str:
        return " ".join(["python -m", self.entry, "-m", *self.arguments(),
                         f"hydra.sweep.dir={folder}"])


@dataclass
class Outcome:
    """A check's answer: ``ours`` in words, its tests, a note (the likely reason when it fails,
    or what the reduction changes), and optionally rows of per-level numbers."""

    ours: str
    number: Check | None = None
    direction: Check | None = None
    note: str = ""
    rows: list[dict] | None = None
    ran: bool = True
    error: str = ""

    @property
    def verdict(self) -> str:
        return verdict(self.number, self.direction, self.ran, self.error)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    source: str  # where the paper says it: "Table 1", "Fig. 2a"
    paper: str  # the paper's number or shape, in words
    sweeps: tuple[str, ...]
    check: Callable[[Results], Outcome]
    # why a test of this claim may fail at a reduced scale, printed only under a claim one of
    # whose tests failed; the text says what in it is measured and what is our reading, untested
    why_not: str = ""


@dataclass(frozen=True)
class Scale:
    name: str
    sweeps: tuple[SweepSpec, ...]
    reduction: str  # what differs from the paper's setting and why the shape should hold

    @property
    def n_jobs(self) -> int:
        return sum(s.n_jobs for s in self.sweeps)


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    file: str  # in ../shared/papers/
    claims: tuple[Claim, ...]
    scales: dict[str, Scale]


@dataclass
class Results:
    """The finished jobs of each sweep: ``jobs[name]`` one row per finished run (swept values,
    final values: the report's ``final.csv`` columns), ``history[name]`` their history rows,
    ``studies[name]`` for study sweeps (one row per job: its ``metrics.json`` and overrides)."""

    jobs: dict[str, pd.DataFrame] = field(default_factory=dict)
    history: dict[str, pd.DataFrame] = field(default_factory=dict)
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # (finished, planned)
    records: dict[str, dict] = field(default_factory=dict)  # wall_s, command, machine
    problems: list[str] = field(default_factory=list)  # damaged files: PATH: what is wrong

    def has(self, *names: str) -> bool:
        return all(n in self.jobs and len(self.jobs[n]) for n in names)


def evaluate(claim: Claim, results: Results) -> Outcome:
    """The claim's outcome; *not run* when one of its sweeps has no finished job."""
    missing = [s for s in claim.sweeps if not results.has(s)]
    if missing:
        return Outcome(f"no finished job in {', '.join(missing)}", ran=False)
    try:
        return claim.check(results)
    except Exception as e:  # shown as "check failed" with the error: the other claims go on
        return Outcome(f"the check raised {type(e).__name__}: {e}", error=f"{type(e).__name__}")


# ---- helpers for the checks -----------------------------------------------------------------

def levels(df: pd.DataFrame, x: str, y: str, **where) -> list[tuple[float, Stat]]:
    """``y`` over the seeds at each value of ``x`` (sorted), among rows matching ``where``."""
    for k, v in where.items():
        df = df[df[k] == v]
    if y not in df.columns or x not in df.columns:
        return []
    out = []
    for xv, group in df.groupby(x, sort=True):
        out.append((float(xv), Stat.of(group[y].tolist())))
    return out


def stat(df: pd.DataFrame, y: str, **where) -> Stat:
    for k, v in where.items():
        df = df[_eq(df[k], v)]
    return Stat.of(df[y].tolist()) if y in df.columns else Stat.of([])


def _eq(col: pd.Series, v) -> pd.Series:
    if isinstance(v, float):
        return (col.astype(float) - v).abs() < 1e-9
    return col == v


def level_rows(pts: list[tuple[float, Stat]], x: str, y: str, pct: bool = True,
               digits: int = 1) -> list[dict]:
    return [{x: f"{xv:g}", y: s.fmt(pct=pct, digits=digits)} for xv, s in pts]


def means(pts: list[tuple[float, Stat]]) -> tuple[list[float], list[float]]:
    return [x for x, _ in pts], [s.mean for _, s in pts]


# ---- seeds and initializations --------------------------------------------------------------

def seeds_of(*frames: pd.DataFrame, key: str = "seed") -> list:
    """The seeds (or other ``key`` values) present in any of ``frames``, sorted."""
    vals = {v for df in frames if key in df.columns for v in df[key].dropna().tolist()}
    return sorted(vals)


def of_seed(df: pd.DataFrame, seed, key: str = "seed") -> pd.DataFrame:
    """The rows of one seed; every row for ``seed`` None (the pooled test)."""
    return df if seed is None or key not in df.columns else df[df[key] == seed]


def rank_inits(df: pd.DataFrame, setting: tuple[str, ...], fit: str = "train/acc",
               tie: str = "train/loss") -> pd.DataFrame:
    """``df`` with an ``init`` column: per ``setting`` (e.g. noise type and level), its runs
    ranked by how well they fit the training data, 1 the best (highest ``fit``, then lowest
    ``tie``, then lowest seed). Theunissen et al. (Appendix A): "this is repeated for at least 2
    random uniform parameter initialization and the model that best fits the training data is
    selected to be analysed"."""
    df = df.copy()
    keys = [k for k in setting if k in df.columns]
    order = [c for c in (fit, tie, "seed") if c in df.columns]
    asc = [c != fit for c in order]
    df = df.sort_values(order, ascending=asc, kind="mergesort")
    df["init"] = df.groupby(keys, sort=False, dropna=False).cumcount() + 1 if keys else \
        range(1, len(df) + 1)
    return df.sort_index()
