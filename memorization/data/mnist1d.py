"""MNIST-1D (Greydanus, 2020): 1-D signals of length 40 made from ten digit-like templates by
random padding, translation, scaling, shear and noise; 10 classes.

Generated locally by the optional ``mnist1d`` package (``pip install -e '.[mnist1d]'``), calling
its generator, never its downloader, so no network is needed. Its defaults are the published
dataset's: 5000 samples (4000 train / 1000 test) from seed 42. The generator seeds NumPy's and
Python's global random states; they are restored afterwards so the run's own seeding is untouched.

Unlike the image sources, the signals are real-valued, standardized by the generator over the
whole dataset (mean 0, std 1), not pixels in [0, 1]; the DataModule's standardization with the
training statistics is then close to the identity. Shape (1, 40): one channel, 40 steps.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from memorization.base.errors import ConfigError
from memorization.data.sources import RawData, register_source


@register_source("mnist1d")
def load_mnist1d(num_samples: int = 5000, train_split: float = 0.8, seed: int = 42,
                 shuffle_seq: bool = False) -> RawData:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ConfigError("data=mnist1d needs the optional mnist1d package: "
                          "pip install -e '.[mnist1d]' (or pip install mnist1d)") from e
    if num_samples < 10 or not 0.0 < train_split < 1.0:
        raise ConfigError(f"data.source_options: num_samples={num_samples} must be >= 10 and "
                          f"train_split={train_split} in (0, 1)")
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    args.shuffle_seq = shuffle_seq
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    def x(a):
        return torch.as_tensor(a, dtype=torch.float32).unsqueeze(1)

    def y(a):
        return torch.as_tensor(a, dtype=torch.int64)

    return RawData(x(d["x"]), y(d["y"]), x(d["x_test"]), y(d["y_test"]), num_classes=10)
