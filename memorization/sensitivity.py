"""``python -m memorization.sensitivity [overrides]``: Arpit et al.'s loss sensitivity and its
Gini coefficient (memorization/studies/sensitivity.py); conf/sensitivity.yaml."""

from __future__ import annotations

import torch

from memorization.studies.common import study_entry
from memorization.studies.sensitivity import run

torch.set_flush_denormal(True)  # denormals slow small MLPs down on x86 CPUs
main = study_entry(run, "sensitivity")

if __name__ == "__main__":
    main()
