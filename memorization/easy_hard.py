"""``python -m memorization.easy_hard [overrides]``: Arpit et al.'s easy and hard examples
(memorization/studies/easy_hard.py); conf/easy_hard.yaml."""

from __future__ import annotations

import torch

from memorization.studies.common import study_entry
from memorization.studies.easy_hard import run

torch.set_flush_denormal(True)  # denormals slow small MLPs down on x86 CPUs
main = study_entry(run, "easy_hard")

if __name__ == "__main__":
    main()
