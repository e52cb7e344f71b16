"""The commands around Hydra: every entry point's start (entry.py: the one-line pre-checks, the
folder lock, run_job), ``memorization.run`` (run.py), the studies' entry (study.py), a sweep's
checks and end (sweep.py), the help, the sweep report (report/) and the reproductions
(reproduce/). The ``python -m memorization.<command>`` modules at the package root hand over here.

Layer: commands; imports any layer below, never a root command module.
"""
