"""Per-example memorization (Feldman & Zhang 2020) and consistency scores (C-scores, Jiang et
al. 2021) from many models trained on random subsets of the (corrupted) training set.

- estimator.py: the estimates from who trained on what and who got what right (pure tensors);
- masks.py: each model's subset, drawn from (seed, model index);
- chunks.py: the models' results, landed atomically chunk by chunk (what a resumed job reads).

Not built yet: the job that trains the models (stacked, in chunks) and writes scores.csv, its
figures and summary (``python -m memorization.scores``).

Layer: parts; imports the base only.
"""
