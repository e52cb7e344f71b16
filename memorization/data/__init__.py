"""Data: sources (one small file each) and the one DataModule that serves them as tensors.

Layer: parts; imports the base (errors, io, distributed) and noise, nothing above.
"""

from memorization.base.registry import import_all

# every source's file fills the registry (a new one needs no edit), schema.py the data and noise
# schemas
import_all(__name__, __path__)

from memorization.data.datamodule import (  # noqa: E402
    DataConfig,
    DataModule,
    EpochBatchSampler,
    NoiseConfig,
)
from memorization.data.sources import SOURCES, RawData, load_source, register_source  # noqa: E402

__all__ = ["SOURCES", "DataConfig", "DataModule", "EpochBatchSampler", "NoiseConfig", "RawData",
           "load_source", "register_source"]
