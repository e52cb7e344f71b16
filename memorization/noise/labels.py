"""Label corruptions: Zhang et al.'s partially corrupted / random labels, Theunissen's Alg. 1."""

from __future__ import annotations

import torch

from memorization.noise.base import Corruption, register


@register
class NoNoise(Corruption):
    """Identity. Samples are still selected with probability p (recorded as ``selected``) but
    nothing changes, so none is corrupted: a control with the same selection as the other types."""

    name = "none"
    kind = "label"

    def corrupt(self, x, y, num_classes, gen, stats):
        return x, y


@register
class LabelUniform(Corruption):
    """Zhang et al. "partially corrupted labels": with probability p a label is replaced by one
    drawn uniformly from all K classes, so a selected sample keeps its label with probability 1/K
    (recorded as selected, not corrupted)."""

    name = "label_uniform"
    kind = "label"

    def corrupt(self, x, y, num_classes, gen, stats):
        return x, torch.randint(0, num_classes, y.shape, generator=gen)


@register
class LabelFlip(Corruption):
    """Theunissen et al. Alg. 1: a selected label becomes y' ~ U[C \\ {y}], always different.

    Drawn as y' = (y + k) mod K with k ~ U{1, ..., K-1}, which is uniform over the K-1 others.
    """

    name = "label_flip"
    kind = "label"

    def corrupt(self, x, y, num_classes, gen, stats):
        offset = torch.randint(1, num_classes, y.shape, generator=gen)
        return x, (y + offset) % num_classes


@register
class RandomLabels(LabelUniform):
    """Zhang et al. "random labels": every label redrawn uniformly over K (p is fixed at 1)."""

    name = "random_labels"
    fixed_p = 1.0
