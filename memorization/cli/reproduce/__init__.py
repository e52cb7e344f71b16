"""The papers' results on real data, one command each: ``python -m memorization.reproduce PAPER``.

An entry point: it runs each sweep of the paper's plan (:mod:`.plan`, one module per paper) as
a ``memorization.run`` (or study) sweep in ``reproductions/<paper>/<scale>/<sweep>/``
(:mod:`.runner`),
reads the finished jobs back, judges every claim (:mod:`.verdicts`) and writes the document
(:mod:`.document`). It imports the report and job-folder layers below it, never the reverse.

Layer: commands; imports anything below.
"""

from __future__ import annotations

from memorization.cli.reproduce.plan import Paper


def papers() -> dict[str, Paper]:
    from memorization.cli.reproduce import arpit, masc, theunissen, zhang

    return {m.PAPER.key: m.PAPER for m in (zhang, arpit, theunissen, masc)}
