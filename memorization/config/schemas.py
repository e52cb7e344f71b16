"""The primary config's top-level keys (conf/config.yaml) as a Hydra structured config.

Each group's schema is registered by the feature that owns it, in its own file, with
memorization/base/store.py (data/schema.py, models/registry.py, engine/optim.py,
engine/module.py, metrics/*.py, and this folder's relabel.py, replicas.py, scores.py,
studies.py); memorization/jobs/catalog.py imports them all. This file holds only the keys no feature
owns, :class:`RunConfig`, stored as
``/schema/config``: conf/config.yaml names it first in its defaults list.

Imports base/ only.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from memorization.base.errors import ConfigError, check_bool, check_number
from memorization.base.store import GROUP


@dataclass
class RunConfig:
    """The top-level keys of conf/config.yaml (their meaning: the comments there)."""

    seed: int | None = 0
    stop_at_train_acc: float | None = 1.0
    ckpt_path: str | None = None
    resume: bool = True
    threads: int | None = None
    wait_for_lock: bool = False

    def __post_init__(self):
        check_number(self.seed, "seed", integer=True, lo=0, allow_none=True)
        stop = check_number(self.stop_at_train_acc, "stop_at_train_acc", lo=0, hi=1,
                            allow_none=True, what=" (null trains for trainer.max_epochs)")
        if stop == 0:
            raise ConfigError("stop_at_train_acc=0 would stop at once; use a value in (0, 1] "
                              "or null")
        check_bool(self.resume, "resume")
        check_bool(self.wait_for_lock, "wait_for_lock")
        check_number(self.threads, "threads", integer=True, lo=1, allow_none=True,
                     what=" (null: the launcher's share of the cores)")



def _register_root() -> None:
    from hydra.core.config_store import ConfigStore

    # open (struct off), so a key conf/config.yaml adds needs no schema first; Hydra turns
    # struct on once composed, so a misspelt override still fails
    root = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(root, False)
    ConfigStore.instance().store(group=GROUP, name="config", node=root)


_register_root()
