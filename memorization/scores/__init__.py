"""Per-example memorization (Feldman & Zhang 2020) and consistency scores (C-scores, Jiang et
al. 2021) from many models trained on random subsets of the (corrupted) training set:
``python -m memorization.scores`` (conf/scores.yaml).

- estimator.py: the estimates from who trained on what and who got what right (pure tensors);
- masks.py: each model's subset, weights and batch order, drawn from (seed, model index);
- chunks.py: the models' results, landed atomically chunk by chunk (what a resumed job reads);
- config.py: the ``scores`` node;
- job.py: the job (its folder's rules, chunks of models trained stacked by the engine);
- report.py: scores.csv, the summary and figures, from whatever chunks have landed.

Layer: parts (estimator, masks, chunks, config: they import the base only); job, report and
__main__ are an entry point's (they import the studies' shared helpers and the engine).
"""
