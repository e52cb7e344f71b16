"""What a process of this package sets once, before any config is composed or network trained:
:func:`setup_process`, called by every entry point's ``main`` and by every job's Hydra task
function (a launcher's worker process imports the task's module but runs no ``main``). Nothing
else in the package changes process-wide state when it is imported.
"""

from __future__ import annotations

import warnings

_done = False


def setup_process() -> None:
    """Idempotent: the ``${mem.*}`` resolvers, denormals flushed, known-harmless warnings off."""
    global _done
    if _done:
        return
    import torch

    from memorization.base import resolvers

    resolvers.register()
    # denormals make the deep MLPs twice as slow on x86 CPUs after a few epochs
    torch.set_flush_denormal(True)
    # Lightning 2.6 with torch 2.13 warns this on every fit; it is harmless
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # Lightning suggests sync_dist=True for epoch-level logs under DDP; ours are already reduced
    # over ranks by the metrics' all-reduced sums, so a second reduction would only cost a
    # collective
    warnings.filterwarnings("ignore",
                            message=r"It is recommended to use `self\.log\('(train|val|test|gap)")
    # conf/hydra/launcher/ray.yaml shares its name with the plugin's own config, so Hydra
    # validates it against that schema (it is complete and valid) and warns each time
    warnings.filterwarnings("ignore", message=r"(?s).*'hydra/launcher/ray' is validated "
                                              "against ConfigStore schema")
    _done = True
