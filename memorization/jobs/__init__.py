"""A job in its folder: its state and what a rerun does (folder.py), its config checked and built
(validate.py, with every feature's schema registered by catalog.py), a run of
``memorization.run`` (train.py: one network, single.py, or S stacked ones, stacked.py) and the
relabel stage after a fit (relabel/).

Layer: jobs; imports the engine, the parts and base/, never a command.
"""
