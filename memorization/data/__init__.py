"""Data: sources (one small file each) and the one DataModule that serves them as tensors.

Layer: parts; imports the base (errors, io, distributed) and noise, nothing above.
"""

# Importing the sources fills the registry.
from memorization.data import cifar, digits, idx, mnist1d, synthetic, tiny_imagenet  # noqa: E402,F401,I001
from memorization.data.datamodule import DataConfig, DataModule, EpochBatchSampler, NoiseConfig
from memorization.data.sources import SOURCES, RawData, load_source, register_source
from memorization.data import schema  # noqa: F401,I001  (registers the data and noise schemas)

__all__ = ["SOURCES", "DataConfig", "DataModule", "EpochBatchSampler", "NoiseConfig", "RawData",
           "load_source", "register_source"]
