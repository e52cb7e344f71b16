"""scikit-learn's bundled handwritten digits (UCI optdigits test part): 1797 images of 8x8.

Embedded in scikit-learn, so it needs no download: the default dataset. It has no official test
split, so a fixed seeded one is used: a random permutation drawn from ``split_seed`` (default 0,
independent of the training and noise seeds) puts ``test_fraction`` (default 0.2, i.e. 359
images) in the test set and the other 1438 in the training set.
"""

from __future__ import annotations

import torch

from memorization.base.errors import ConfigError
from memorization.data.sources import RawData, register_source


@register_source("digits")
def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> RawData:
    from sklearn.datasets import load_digits as sk_load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.source_options.test_fraction={test_fraction} must be in (0, 1)")
    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixels 0..16
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_test = round(test_fraction * len(y))
    test, train = perm[:n_test], perm[n_test:]
    return RawData(x[train], y[train], x[test], y[test], num_classes=10)
