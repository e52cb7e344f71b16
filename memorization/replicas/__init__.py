"""Stacked seeds: ``trainer.replicas=S`` trains S runs of one config at once, in one process.

The replicas differ by the seeds ``replicas.vary`` lists (the training seed by default: initial
weights and batch order; ``noise.seed`` for a corruption each). Each is reported as its own run
in ``<job>/replicas/<k>/`` (config, corruption record, history, W&B run, metrics.json, final
weights) and is a row of the sweep report; replica k equals the single run with its seeds.

- config.py: the ``replicas`` node, replica k's config, what cannot be stacked;
- data.py: the replicas' data modules behind one, batches of every replica at once;
- module.py: the LightningModule over S networks (loop or vmap), per-replica stop;
- report.py: per-replica stop rule, epoch-end metrics, loggers, folders and summary;
- job.py: the job, composed from those.

Layer: engine (config.py: parts); imports parts, the base and the engine's module, callbacks and
jobs, never the config or an entry point.
"""
