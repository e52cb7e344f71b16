"""The ``relabel`` config node: the MASC relabel-and-retrain stage (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from memorization.base.errors import ConfigError, check_bool, check_number, shown
from memorization.base.store import register

MONITORS = ("acc", "loss")


@dataclass
class RelabelConfig:
    enabled: bool = False  # run the stage after the fit
    split_seed: int = 0  # the permutation of the test set into its 20% and 80% parts
    # the held-out part of the test set (best layer, early stopping); the rest reports
    val_fraction: float = 0.2
    max_epochs: int = 30  # retraining epochs at most
    patience: int = 3  # epochs without improvement on the held-out part before stopping
    monitor: str = "acc"  # acc (higher is better) or loss (lower) on the held-out part
    variance: float = 0.99  # explained variance kept per class subspace (MASC)
    # probe layers to fit MASC on, by name or glob (e.g. [input, flatten, "fc*"]); null: all
    layers: list[str] | None = None
    control: bool = True  # MASC per layer of the untrained network (same seed) as well
    max_gram_gb: float = 2.0  # per layer, both labellings; a wider layer is skipped
    # training-set outputs kept for the float64 refit of classes float32 cannot settle
    max_cache_gb: float = 1.0

    def __post_init__(self) -> None:
        for key in ("enabled", "control"):
            check_bool(getattr(self, key), f"relabel.{key}")
        check_number(self.split_seed, "relabel.split_seed", integer=True, lo=0)
        f = check_number(self.val_fraction, "relabel.val_fraction", lo=0, hi=1,
                         what=" (the MASC paper holds out 0.2 of the test set)")
        if not 0 < f < 1:
            raise ConfigError(f"relabel.val_fraction={shown(f)} must be strictly between 0 and "
                              "1: both parts of the test set need samples")
        check_number(self.max_epochs, "relabel.max_epochs", integer=True, lo=1,
                     what=" (the MASC paper: 30)")
        check_number(self.patience, "relabel.patience", integer=True, lo=1,
                     what=" (the MASC paper: 3)")
        if self.monitor not in MONITORS:
            raise ConfigError(f"relabel.monitor={self.monitor!r} must be one of "
                              f"{', '.join(MONITORS)}")
        v = check_number(self.variance, "relabel.variance", lo=0, hi=1)
        if v == 0:
            raise ConfigError("relabel.variance=0 keeps no component; use a value in (0, 1] "
                              "(the MASC paper: 0.99)")
        for key in ("max_gram_gb", "max_cache_gb"):
            check_number(getattr(self, key), f"relabel.{key}", lo=0)
        if self.layers is not None and not all(isinstance(p, str) for p in self.layers):
            raise ConfigError(f"relabel.layers={self.layers} must be a list of layer names or "
                              "globs, or null")


register("relabel", RelabelConfig)
