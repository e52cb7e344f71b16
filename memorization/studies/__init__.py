"""Stand-alone studies that train many small networks (engine.fit_network): Arpit et al.'s loss
sensitivity (``python -m memorization.sensitivity``) and easy and hard examples
(``python -m memorization.easy_hard``).

Layer: jobs; imports the engine, the parts and base/ (their nodes: memorization/config/studies.py;
their commands: memorization/cli/study.py).
"""
