"""Per-example memorization (Feldman & Zhang 2020) and consistency scores (C-scores, Jiang et
al. 2021) from many models trained on random subsets of the (corrupted) training set:
``python -m memorization.scores`` (conf/scores.yaml).

- estimator.py: the estimates from who trained on what and who got what right (pure tensors);
- masks.py: each model's subset, weights and batch order, drawn from (seed, model index);
- chunks.py: the models' results, landed atomically chunk by chunk (what a resumed job reads);
- job.py: the job (its folder's rules, chunks of models trained stacked by the engine);
- report.py: scores.csv, the summary and figures, from whatever chunks have landed.

Layer: jobs (estimator, masks and chunks import base/ only; the node is
memorization/config/scores.py, the command memorization/cli/study.py).
"""
