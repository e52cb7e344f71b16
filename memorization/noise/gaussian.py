"""Gaussian input corruptions: the dataset's moments (Zhang, Arpit's randX) or the sample's own
(Theunissen Alg. 2)."""

from __future__ import annotations

import torch

from memorization.noise.base import Corruption, register


@register
class Gaussian(Corruption):
    """Zhang et al. "Gaussian" / Arpit et al. randX: the input is replaced by i.i.d. N(mu, sigma^2)
    noise, mu and sigma being the mean and standard deviation of the clean training inputs.

    Reading chosen: one scalar mu and sigma over all pixels of all clean training images (not per
    pixel), measured in the raw [0, 1] pixel scale before normalization.
    """

    name = "gaussian"
    kind = "input"

    def corrupt(self, x, y, num_classes, gen, stats):
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return stats["mean"] + stats["std"] * noise, y


@register
class GaussianSample(Corruption):
    """Theunissen et al. Alg. 2: x' = g with g ~ N[mu_x, sigma_x], the mean and standard deviation
    of that sample's own features.

    Reading chosen: sigma_x is the population standard deviation (divide by D) over all features
    of the sample, all channels together.
    """

    name = "gaussian_sample"
    kind = "input"

    def corrupt(self, x, y, num_classes, gen, stats):
        flat = x.reshape(x.shape[0], -1)
        mu = flat.mean(dim=1, keepdim=True)
        sigma = flat.std(dim=1, unbiased=False, keepdim=True)
        noise = torch.randn(flat.shape, generator=gen, dtype=x.dtype)
        return (mu + sigma * noise).reshape(x.shape), y
