"""``python -m memorization.sensitivity [overrides]``: Arpit et al.'s loss sensitivity and its
Gini coefficient (memorization/studies/sensitivity.py); conf/sensitivity.yaml."""

from memorization.cli.study import study_entry
from memorization.studies.sensitivity import run

main = study_entry(run, "sensitivity")

if __name__ == "__main__":
    main()
