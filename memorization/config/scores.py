"""The ``scores`` node of conf/scores.yaml (``python -m memorization.scores``); the meaning of
each key: there. Apart from the job so that the schemas import no job code."""

from __future__ import annotations

from dataclasses import dataclass, field

from memorization.base.accel import check_matmul, check_precision
from memorization.base.errors import ConfigError, check_number
from memorization.base.store import register

MODES = ("auto", "loop", "vmap")


@dataclass
class ScoresConfig:
    """How many models, on subsets of which ratios, trained how long."""

    models: int = 100
    ratios: list[float] = field(default_factory=lambda: [0.7])
    mem_ratio: float | None = None
    epochs: int = 30
    mode: str = "auto"
    device: str = "auto"
    top: int = 24
    precision: str = "32-true"
    matmul_precision: str | None = None

    def __post_init__(self):
        check_number(self.models, "scores.models", integer=True, lo=1,
                     what=" (models trained at each subset ratio)")
        self.ratios = [float(check_number(r, "scores.ratios", lo=0)) for r in self.ratios or []]
        if not self.ratios:
            raise ConfigError("scores.ratios=[] lists no subset ratio; give at least one, "
                              "e.g. scores.ratios=[0.7]")
        for r in self.ratios:
            if not 0 < r < 1:
                raise ConfigError(f"scores.ratios={self.ratios}: {r:g} is not in (0, 1); a "
                                  "model trains on that fraction of the training examples")
        if len(set(self.ratios)) != len(self.ratios):
            raise ConfigError(f"scores.ratios={self.ratios} lists a ratio twice; list each once")
        if self.mem_ratio is None:
            self.mem_ratio = self.ratios[0]
        check_number(self.mem_ratio, "scores.mem_ratio", lo=0, allow_none=True)
        if not any(abs(self.mem_ratio - r) < 1e-9 for r in self.ratios):
            raise ConfigError(f"scores.mem_ratio={self.mem_ratio:g} is not one of "
                              f"scores.ratios={self.ratios}; pick one of them (null: the first)")
        check_number(self.epochs, "scores.epochs", integer=True, lo=1)
        if self.mode not in MODES:
            raise ConfigError(f"scores.mode={self.mode} must be one of {', '.join(MODES)}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"scores.device={self.device} must be auto or a torch device")
        check_number(self.top, "scores.top", integer=True, lo=0,
                     what=" (how many of the most memorized examples the figure shows)")
        check_precision(self.precision, "scores.precision", "the weights stay float32")
        check_matmul(self.matmul_precision, "scores.matmul_precision")

    @property
    def total(self) -> int:
        """M: every model of every ratio."""
        return self.models * len(self.ratios)

    def ratio_of(self, model: int) -> float:
        """Model k's subset ratio: the ratios take turns, so raising ``models`` adds models
        without changing which ratio the earlier ones have."""
        return self.ratios[model % len(self.ratios)]


register("scores", ScoresConfig)
