"""``python -m memorization.scores [overrides]``: per-example memorization and C-scores from
models trained on random subsets (memorization/scores/job.py); conf/scores.yaml."""

from __future__ import annotations

import torch

from memorization.scores.job import job, run, validate
from memorization.studies.common import study_entry

torch.set_flush_denormal(True)  # denormals slow small MLPs down on x86 CPUs
main = study_entry(run, "scores", job=job, validate=validate)

if __name__ == "__main__":
    main()
