"""Every feature whose config schema the configs compose: importing this module registers them
all in Hydra's ConfigStore (each feature registers its own, in its own file:
memorization/base/store.py), with the primary config's (memorization/config/schemas.py). A new
group's feature is one import line here when its package is not imported already.
"""

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
