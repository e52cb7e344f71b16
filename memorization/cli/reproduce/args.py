"""``python -m memorization.reproduce PAPER [--scale cpu] [overrides…]``: see the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from memorization.cli.reproduce import papers
from memorization.cli.reproduce.plan import SCALES


def unwritable(path: Path) -> str | None:
    """Why the folder ``path`` cannot be made or written, or None (it is made, and a file
    written into it and removed): checked before any sweep starts, so that a read-only or
    mistyped path is one line, not a traceback later."""
    import contextlib
    import tempfile

    probe, made = Path(path), []
    while not probe.exists() and probe.parent != probe:
        made.append(probe)  # the folders the check makes, removed again after it
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return f"cannot write there ({e.strerror})"
    finally:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return None


def main(argv: list[str] | None = None) -> int:
    from memorization.base.process import setup_process

    setup_process()
    known = papers()
    parser = argparse.ArgumentParser(
        prog="python -m memorization.reproduce",
        description="Run a paper's sweeps (resuming finished work), judge each of its claims "
                    "against the paper's numbers, and write the document.")
    parser.add_argument("paper", choices=[*known, "all"])
    parser.add_argument("--scale", choices=SCALES, default="cpu",
                        help="smoke: a pipeline test on the digits; cpu: a reduced setting of "
                             "about an hour on a 2-core CPU; cpu10k: 10,000 training images "
                             "where the effects need them (theunissen, masc: estimated "
                             "3.5-4.6 hours each); paper: the paper's own (a GPU)")
    parser.add_argument("--runs", default="reproductions", type=Path,
                        help="where the sweeps' job folders go (default: reproductions/)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the document goes (default: docs/reproductions for the "
                             "cpu and paper scales, RUNS/<paper>/smoke for smoke)")
    parser.add_argument("--document-only", action="store_true",
                        help="write the document from what has finished; run nothing")
    parser.add_argument("--plan", action="store_true",
                        help="print the sweeps, their job counts and the estimate; run nothing")
    parser.add_argument("--tflops", type=float, default=None,
                        help="the speed to estimate the wall time at (e.g. a GPU's); default: "
                             "half of this machine's measured fp32 matmul peak")
    parser.add_argument("overrides", nargs="*",
                        help="extra overrides for every job (e.g. logger=none threads=2)")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    if args.tflops is not None and not args.tflops > 0:
        parser.error(f"--tflops {args.tflops:g}: give the speed to estimate at, in TFLOP/s "
                     "(> 0, e.g. --tflops 100)")
    bad = next((o for o in args.overrides if "=" not in o), None)
    if bad is not None:
        parser.error(f"{bad!r} is not an override (key=value); papers: {', '.join(known)}")
    for flag, path, needed in (("--runs", args.runs, not (args.document_only or args.plan)),
                               ("--out", args.out, not args.plan)):
        wrong = unwritable(path) if needed and path is not None else None
        if wrong:
            parser.error(f"{flag} {path}: {wrong}; choose another folder")
    chosen = list(known.values()) if args.paper == "all" else [known[args.paper]]
    chosen = [p for p in chosen if args.scale in p.scales]
    if not chosen:
        have = ", ".join(known[args.paper].scales)
        parser.error(f"{args.paper} has no scale {args.scale} (it has {have})")
    from memorization.cli.entry import interrupted, signal_of, sigterm_raises
    from memorization.cli.reproduce.command import reproduce

    try:
        with sigterm_raises():  # a scheduler's SIGTERM ends it as Ctrl-C does
            return max(reproduce(p, args.scale, args.runs, args.out, args.overrides,
                                 run=not args.document_only, plan_only=args.plan,
                                 tflops=args.tflops) for p in chosen)
    except (KeyboardInterrupt, SystemExit) as e:
        sig = signal_of(e)
        if sig is None:
            raise
        print(file=sys.stderr)  # past the progress bar's line
        interrupted(sig, f"the reproduction (its finished jobs under {args.runs} are kept)")


if __name__ == "__main__":
    sys.exit(main())
