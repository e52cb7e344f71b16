"""Every feature whose config schema the configs compose: importing this module registers them
all in Hydra's ConfigStore (each feature registers its own, in its own file:
memorization/base/store.py), with the primary config's (memorization/config/schemas.py). A new
group's feature is one import line here when its package is not imported already.

:func:`compose` is the one way the package (the help, the reproductions' estimates) and its
tests compose a config outside a Hydra run.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

import memorization.config.relabel  # noqa: F401  (relabel)
import memorization.config.replicas  # noqa: F401  (replicas)
import memorization.config.schemas  # noqa: F401  (the top-level keys)
import memorization.config.scores  # noqa: F401  (scores)
import memorization.config.studies  # noqa: F401  (sensitivity, easy_hard)
import memorization.data  # noqa: F401  (data/schema.py: data, noise)
import memorization.engine.module  # noqa: F401  (module)
import memorization.engine.optim  # noqa: F401  (optim)
import memorization.metrics.config  # noqa: F401  (metrics, and each metric's own file)
import memorization.metrics.cosine  # noqa: F401
import memorization.metrics.csr  # noqa: F401
import memorization.metrics.masc_probe  # noqa: F401
import memorization.metrics.polarization  # noqa: F401
import memorization.models  # noqa: F401  (each network registers its schema: model)


def compose(config_name: str = "config", overrides: list[str] = (),
            conf: str | Path | None = None) -> DictConfig:
    """``config_name`` (conf/<config_name>.yaml) with ``overrides``, composed as Hydra's run of
    ``python -m memorization.<command>`` would (its job named as the command: ``run`` for the
    main config), Hydra's own node included; ``conf``: the config folder (default: the
    package's conf/)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from memorization.base.io import conf_dir

    GlobalHydra.instance().clear()
    try:
        job = "run" if config_name == "config" else config_name
        with initialize_config_dir(config_dir=str(conf or conf_dir()), version_base="1.3",
                                   job_name=job):
            return hydra_compose(config_name, overrides=list(overrides),
                                 return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
