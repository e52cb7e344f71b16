"""The config nodes of the jobs (the top-level keys, ``relabel``, ``replicas``, ``scores``, the
studies' nodes): dataclasses registered as Hydra schemas, each with its own checks. The parts keep
theirs beside them (data/schema.py, each network's file through models/registry.py,
metrics/config.py, engine/optim.py).

Layer: parts; imports only base/.
"""
