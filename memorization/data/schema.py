"""The data and noise groups' schemas (memorization/base/store.py): DataConfig with the
DataModule's ``_target_``, NoiseConfig as it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import II

from memorization.base.store import register, with_target
from memorization.data.augment import AugmentConfig
from memorization.data.datamodule import DataConfig, NoiseConfig


@dataclass
class AugmentSchema(AugmentConfig):
    seed: int = II("seed")  # the training seed unless given


# the training seed orders the batches and seeds the augmentation, unless given their own
DataSchema = with_target(
    DataConfig, "memorization.data.DataModule", shuffle_seed=(int | None, II("seed")),
    augment=(AugmentSchema, field(default_factory=AugmentSchema)))
register("data", DataSchema)
register("noise", NoiseConfig)
