"""Dataset corruptions: one registry, one small class per type, one YAML per type in conf/noise.

Every type selects each *training* sample independently with probability ``p`` from a generator
seeded by ``noise.seed`` alone (independent of the training seed), then changes the selected
samples. Selection is always the first draw, so two types with the same seed and p select the same
samples. Validation and test sets are never touched (the one opt-in exception: Zhang et al.'s
``shuffled_pixels`` with ``apply_to_test``).

Layer: parts; imports the base only.
"""

from memorization.base.registry import import_all

import_all(__name__, __path__)  # every family's file fills the registry: a new one needs no edit

from memorization.noise.base import (  # noqa: E402
    CORRUPTIONS,
    Corruption,
    CorruptionResult,
    corrupt_dataset,
    get_corruption,
    register,
)
from memorization.noise.record import CorruptionRecord  # noqa: E402

__all__ = [
    "CORRUPTIONS",
    "Corruption",
    "CorruptionRecord",
    "CorruptionResult",
    "corrupt_dataset",
    "get_corruption",
    "register",
]
