"""``python -m memorization.easy_hard [overrides]``: Arpit et al.'s easy and hard examples
(memorization/studies/easy_hard.py); conf/easy_hard.yaml."""

from memorization.cli.study import study_entry
from memorization.studies.easy_hard import run

main = study_entry(run, "easy_hard")

if __name__ == "__main__":
    main()
