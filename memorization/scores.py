"""``python -m memorization.scores [overrides]``: per-example memorization and C-scores from
models trained on random subsets (memorization/studies/scores/); conf/scores.yaml."""

from memorization.cli.study import study_entry
from memorization.studies.scores.job import RULES, job, run, validate

main = study_entry(run, "scores", job=job, validate=validate, rules=RULES)

if __name__ == "__main__":
    main()
