"""One reproduction from start to end: the plan and its estimate, the sweeps, the verdicts, the
document, and the comparison printed last."""

from __future__ import annotations

from pathlib import Path

from memorization.base.io import say
from memorization.cli.reproduce.document import (
    COMMAND,
    summary_rows,
    table,
    tally,
    write_document,
    write_index,
)
from memorization.cli.reproduce.plan import Paper
from memorization.cli.reproduce.runner import done, load_results, run_sweeps, sweep_folder


def default_out(paper: Paper, scale: str, runs: Path) -> Path:
    return runs / paper.key / scale if scale == "smoke" else Path("docs/reproductions")


def plan_lines(paper: Paper, scale: str, runs: Path) -> list[str]:
    sc = paper.scales[scale]
    lines = [f"{paper.title}: scale {scale}, {len(sc.sweeps)} sweeps, {sc.n_jobs} jobs"]
    for spec in sc.sweeps:
        folder = sweep_folder(runs, paper, scale, spec)
        finished, failed = done(folder)
        lines.append(f"  {spec.name}: {finished}/{spec.n_jobs} finished"
                     + (f", {failed} failed" if failed else "") + f" ({spec.about})")
    return lines


def reproduce(paper: Paper, scale: str, runs: Path, out: Path | None,
              overrides: list[str], run: bool = True, plan_only: bool = False,
              tflops: float | None = None) -> int:
    """Returns 0 when every sweep ran to its end (verdicts of any kind) with no damaged job,
    1 otherwise, 2 when an override would be refused (checked before any sweep runs)."""
    for line in plan_lines(paper, scale, runs):
        say(line)
    from memorization.cli.reproduce.estimate import estimate_lines

    for line in estimate_lines(paper, scale, runs, tflops):
        say(line)
    if plan_only:
        return 0
    if run:
        from memorization.cli.reproduce.runner import check_sweeps

        errors = check_sweeps(paper, scale, overrides)
        if errors:
            for line in errors:
                say(f"error: {line}")
            say("nothing was run: fix the overrides above and rerun")
            return 2
    codes = run_sweeps(paper, scale, runs, overrides) if run else {}
    out = out if out is not None else default_out(paper, scale, runs)
    results = load_results(paper, scale, runs, out)
    if not run and not results.jobs:
        say(f"error: no finished job of {paper.key} at scale {scale}, neither in {runs} nor in "
            f"{out / 'data'}; run it first (without --document-only) or give --runs")
        return 1
    for line in results.problems:
        say(f"warning: {line}")
    if results.jobs:
        from memorization.cli.reproduce import data

        data.save(paper, scale, results, out)
    path = write_document(paper, scale, runs, out, results)
    if scale != "smoke":
        from memorization.cli.reproduce import papers

        write_index(papers(), runs, out)
    say("")
    say(f"=== {paper.key} ({scale}): {tally(paper, results)} ===")
    say("\n".join(table([{k: v for k, v in r.items() if k != "test"}
                         for r in summary_rows(paper, results)])))
    say(f"document: {path}   (rerun: {COMMAND.format(paper=paper.key, scale=scale)})")
    failed = [k for k, v in codes.items() if v]
    if failed:
        say(f"sweeps that did not finish cleanly: {', '.join(failed)} (rerun to resume)")
    if results.problems:
        say(f"error: {len(results.problems)} damaged file(s) (the warnings above): their jobs "
            f"are left out of the verdicts; rerun those jobs or restore the files")
    return 1 if failed or results.problems else 0
