"""The optimizer and its learning-rate schedule, named by ``_target_``: any torch optimizer and
any ``torch.optim.lr_scheduler`` class (or anything with their call signatures) from the command
line, e.g. ``optim._target_=torch.optim.RMSprop`` or
``optim.scheduler._target_=torch.optim.lr_scheduler.StepLR optim.scheduler.step_size=30``.

The keys given are the constructor's keyword arguments; a key left null is not passed, so the
class's own default applies (an optimizer that does not take ``momentum`` is fine while it is
null). A keyword this schema does not list is added with ``+optim.eps=1e-6``. The scheduler is
stepped once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import hydra.utils
import torch

from memorization.base.errors import ConfigError, check_number, shown
from memorization.base.store import register

# keys of ours, not arguments of the class they configure
_OWN = ("_target_", "_partial_", "scheduler")


@dataclass
class SchedulerConfig:
    _target_: str | None = None  # a torch.optim.lr_scheduler class; null: a constant lr
    _partial_: bool = True  # built with the optimizer by build()
    # the two arguments of the papers' schedules: ExponentialLR (gamma per epoch; Zhang et al.:
    # 0.95) and StepLR (gamma every step_size epochs; Arpit et al.: 0.5 every 15)
    gamma: float | None = None
    step_size: int | None = None

    def __post_init__(self):
        g = self.gamma
        if g is not None and (isinstance(g, bool) or not isinstance(g, int | float)
                              or not 0 < g <= 1):
            raise ConfigError(f"optim.scheduler.gamma={shown(g)} must be a number in (0, 1] or "
                              "null: the factor the lr is multiplied by")
        check_number(self.step_size, "optim.scheduler.step_size", integer=True, lo=1,
                     allow_none=True, what=" (epochs)")
        _importable(self._target_, "optim.scheduler._target_",
                    "torch.optim.lr_scheduler.ExponentialLR, or null for a constant lr")


@dataclass
class OptimConfig:
    _target_: str = "torch.optim.SGD"  # the optimizer class
    _partial_: bool = True  # instantiated by the module, with its parameters
    lr: float = 0.01
    # null: the class's default (0 for SGD and Adam: the papers use no weight decay)
    weight_decay: float | None = None
    momentum: float | None = None  # SGD, RMSprop
    nesterov: bool | None = None  # SGD
    betas: tuple[float, float] | None = None  # Adam and its kin
    # null: one fused kernel per step when the class has one (Adam, AdamW, SGD, ...) and the
    # parameters' device takes it, else the class's default; true/false: as given. Fused Adam
    # steps the 3x512 MLP in 0.48 ms instead of 1.38 on the CPU here (4.36 -> 1.21 for
    # 10x512); its results differ from the unfused ones by float rounding (7e-9 after 20 steps)
    fused: bool | None = None
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def __post_init__(self):
        if isinstance(self.scheduler, dict):
            self.scheduler = SchedulerConfig(**self.scheduler)
        _importable(self._target_, "optim._target_", "torch.optim.SGD")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ConfigError(f"optim.lr={shown(lr)} must be a number > 0")
        check_number(self.weight_decay, "optim.weight_decay", lo=0, allow_none=True)
        check_number(self.momentum, "optim.momentum", lo=0, allow_none=True)
        if self.betas is not None:
            self.betas = tuple(self.betas)
            if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
                raise ConfigError(f"optim.betas={list(self.betas)} must be two numbers in "
                                  "[0, 1), or null")

    @classmethod
    def from_dict(cls, options: dict) -> OptimConfig:
        """From plain options; keys this class does not declare are kept as attributes and
        passed to the optimizer too (as OmegaConf.to_object does with ``+optim.<key>``)."""
        names = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in options.items() if k in names})
        for key, value in options.items():
            if key not in names:
                setattr(cfg, key, value)
        return cfg

    def options(self) -> dict:
        """The optimizer's keyword arguments: every key but ours, nulls left out."""
        return {k: v for k, v in vars(self).items() if k not in _OWN and v is not None}

    def build(self, params) -> tuple[torch.optim.Optimizer, object | None]:
        """(optimizer, scheduler or None) for ``params``; one line naming the key when the
        class refuses an argument (``optim.momentum`` for Adam)."""
        params, options = list(params), self.options()
        opt = None
        if self.fused is None and _takes_fused(self._target_):
            try:
                opt = hydra.utils.get_object(self._target_)(params, fused=True, **options)
            except (RuntimeError, ValueError, TypeError):  # a device or dtype it cannot fuse
                opt = None
        if opt is None:
            opt = _call(self._target_, "optim", params, options)
        s = self.scheduler
        if s._target_ is None:
            return opt, None
        kwargs = {k: v for k, v in vars(s).items() if k not in _OWN and v is not None}
        return opt, _call(s._target_, "optim.scheduler", opt, kwargs)


def _takes_fused(target: str) -> bool:
    import inspect

    try:
        return "fused" in inspect.signature(hydra.utils.get_object(target)).parameters
    except (TypeError, ValueError):
        return False


def _importable(target: str | None, key: str, example: str) -> None:
    if target is None and key.endswith("scheduler._target_"):
        return
    try:
        hydra.utils.get_object(str(target))
    except Exception:
        raise ConfigError(f"{key}={target} cannot be imported; name a class by its module "
                          f"path, such as {example}") from None


def _call(target: str, key: str, first, kwargs: dict):
    build = hydra.utils.instantiate({"_target_": target, "_partial_": True, **kwargs},
                                    _convert_="all")
    try:
        return build(first)
    except TypeError as e:  # an argument the class does not take: name it
        bad = next((k for k in kwargs if f"'{k}'" in str(e)), None)
        fix = (f"; set {key}.{bad}=null (or ~{key}.{bad}) for {target}" if bad else "")
        raise ConfigError(f"{key}: {target} refused its arguments ({e}){fix}") from e
    except ValueError as e:  # torch's own range checks, e.g. "Invalid momentum value"
        raise ConfigError(f"{key}: {target}: {e}") from e


register("optim", OptimConfig)


def lightning_optimizers(built: tuple):
    """What every LightningModule's ``configure_optimizers`` returns, from ``OptimConfig.build``'s
    (optimizer, schedule or None): the schedule is stepped once per epoch."""
    opt, sched = built
    if sched is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
