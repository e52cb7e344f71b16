"""The studies' own config nodes: ``easy_hard`` (conf/easy_hard.yaml) and ``sensitivity``
(conf/sensitivity.yaml), apart from the studies so that the schemas import no study code."""

from __future__ import annotations

from dataclasses import dataclass

from memorization.base.errors import ConfigError, check_bool, check_number
from memorization.base.store import register

SPLITS = ("train", "test")
STUDY_KEYS = ("sensitivity", "easy_hard", "scores")
"""The top-level nodes of the stand-alone commands' primary configs (conf/sensitivity.yaml,
conf/easy_hard.yaml, conf/scores.yaml); a preset that sets one is that command's."""
METHODS = ("unrolled", "input_grad_norm")


@dataclass
class EasyHardConfig:
    """The ``easy_hard`` node of conf/easy_hard.yaml (the meaning of each key: there)."""

    n_seeds: int = 100
    epochs: int = 1
    split: str = "train"
    image_size: int | None = None
    device: str = "auto"

    def __post_init__(self):
        check_number(self.n_seeds, "easy_hard.n_seeds", integer=True, lo=1)
        check_number(self.epochs, "easy_hard.epochs", integer=True, lo=1)
        if self.split not in SPLITS:
            raise ConfigError(f"easy_hard.split={self.split} must be one of {', '.join(SPLITS)}")
        check_number(self.image_size, "easy_hard.image_size", integer=True, lo=1,
                     allow_none=True, what=" (null keeps the images' size)")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"easy_hard.device={self.device} must be auto or a torch device")


@dataclass
class SensitivityConfig:
    """The ``sensitivity`` node of conf/sensitivity.yaml (the meaning of each key: there)."""

    method: str = "unrolled"
    image_size: int | None = 14
    unique_labels: bool = False
    batch_size: int = 10
    steps: int = 1000
    every: int = 10
    class_every: int = 100
    direct: bool = False
    epochs: int = 20
    device: str = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"sensitivity.method={self.method} must be one of "
                              f"{', '.join(METHODS)}")
        check_number(self.image_size, "sensitivity.image_size", integer=True, lo=1,
                     allow_none=True, what=" (null keeps the images' size)")
        for key in ("unique_labels", "direct"):
            check_bool(getattr(self, key), f"sensitivity.{key}")
        for key in ("batch_size", "steps", "every", "epochs"):
            check_number(getattr(self, key), f"sensitivity.{key}", integer=True, lo=1)
        check_number(self.class_every, "sensitivity.class_every", integer=True, lo=0,
                     what=" (0: no class x class matrix)")
        if self.class_every and self.class_every % self.every:
            raise ConfigError(f"sensitivity.class_every={self.class_every} must be a multiple "
                              f"of sensitivity.every={self.every} (or 0)")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"sensitivity.device={self.device} must be auto or a torch device")


# the studies' own nodes (conf/sensitivity.yaml, conf/easy_hard.yaml)
register("sensitivity", SensitivityConfig)
register("easy_hard", EasyHardConfig)
