"""Stand-alone studies that train many small networks (engine.fit_network): Arpit et al.'s loss
sensitivity (``python -m memorization.sensitivity``) and easy and hard examples
(``python -m memorization.easy_hard``).

Layer: entry points (config.py and gradients.py: parts, so that the schemas and the engine may
import them).
"""
