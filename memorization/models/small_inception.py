"""Zhang et al.'s small Inception for 28x28 CIFAR-10 crops (Zhang et al. 2017, Fig. 3).

conv 3x3 96 -> Inception(32,32) -> Inception(32,48) -> Downsample(80) -> Inception(112,48) ->
Inception(96,64) -> Inception(80,80) -> Inception(48,96) -> Downsample(96) -> Inception(176,160) ->
Inception(176,160) -> global mean pool -> linear to K classes. Inception(a, b) concatenates a 1x1
conv with a channels and a 3x3 conv with b channels, both on the module input; Downsample(c)
concatenates a 3x3 stride-2 conv with c channels and a 3x3 stride-2 max-pool of the module input.
Every conv is conv (with bias) -> BatchNorm -> ReLU, or conv -> ReLU for Zhang's "Inception w/o
BatchNorm". On 28x28x3 inputs it has 1,649,402 parameters not counting BatchNorm's own (Zhang et
al., Table 1, which lists the same count with and without BatchNorm).

Padding is 1 for every 3x3 conv and for the pool, so both Downsample branches give ceil(H/2)
like TensorFlow's "SAME" (28 -> 14 -> 7); for even sizes TensorFlow pads only the bottom/right,
PyTorch both sides, which shifts the sampling grid by one pixel but not any shape or count.

Probe layers: the input, every conv unit in forward order (weight: the nn.Conv2d, whose output is
the pre-BatchNorm product w.x + b; output: the unit's own ReLU), then the pooled features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memorization.base.errors import check_all
from memorization.models.checks import bool_check, image_model_checks
from memorization.models.probes import ProbedModel, ProbeLayer
from memorization.models.registry import register_model
from memorization.models.regularizers import InputNoise

# ("inc", 1x1 channels, 3x3 channels) or ("down", conv channels), after the stem (Fig. 3)
BLOCKS = (("inc", 32, 32), ("inc", 32, 48), ("down", 80),
          ("inc", 112, 48), ("inc", 96, 64), ("inc", 80, 80), ("inc", 48, 96), ("down", 96),
          ("inc", 176, 160), ("inc", 176, 160))


@dataclass
class SmallInceptionConfig:
    in_shape: tuple[int, ...] = (3, 28, 28)
    num_classes: int = 10
    batchnorm: bool = True  # False: Zhang's "Inception w/o BatchNorm" (the convs keep a bias)
    stem: int = 96  # channels of the first 3x3 conv
    # Arpit et al.'s input regularizers, training only (models/regularizers.py); off by default
    input_dropout: float = 0.0
    input_noise: float = 0.0

    def __post_init__(self):
        self.in_shape = tuple(self.in_shape)
        check_all([
            *image_model_checks("small_inception", self.in_shape, self.num_classes,
                                self.input_dropout, self.input_noise),
            (self.stem >= 1, f"model.stem={self.stem} must be >= 1"),
            bool_check("batchnorm", self.batchnorm),
        ])


class ConvUnit(nn.Module):
    """conv -> (BatchNorm) -> ReLU, each with its own ReLU so a hook names exactly one unit."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, batchnorm: bool):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.bn = nn.BatchNorm2d(cout) if batchnorm else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, cin: int, a: int, b: int, batchnorm: bool):
        super().__init__()
        self.b1x1 = ConvUnit(cin, a, 1, 1, batchnorm)
        self.b3x3 = ConvUnit(cin, b, 3, 1, batchnorm)

    def units(self) -> dict[str, ConvUnit]:
        return {"1x1": self.b1x1, "3x3": self.b3x3}

    def forward(self, x):
        return torch.cat([self.b1x1(x), self.b3x3(x)], dim=1)


class Downsample(nn.Module):
    def __init__(self, cin: int, c: int, batchnorm: bool):
        super().__init__()
        self.b3x3 = ConvUnit(cin, c, 3, 2, batchnorm)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def units(self) -> dict[str, ConvUnit]:
        return {"3x3": self.b3x3}

    def forward(self, x):
        return torch.cat([self.b3x3(x), self.pool(x)], dim=1)


@register_model("small_inception", SmallInceptionConfig)
class SmallInception(ProbedModel):
    def __init__(self, **cfg):
        super().__init__()
        self.cfg = c = SmallInceptionConfig(**cfg)
        self.inp = nn.Identity()
        self.input_reg = InputNoise(c.input_dropout, c.input_noise)
        self.conv1 = ConvUnit(c.in_shape[0], c.stem, 3, 1, c.batchnorm)
        blocks, names, ch, counts = [], [], c.stem, {"inc": 0, "down": 0}
        for kind, *widths in BLOCKS:
            counts[kind] += 1
            names.append(f"{kind}{counts[kind]}")
            if kind == "inc":
                blocks.append(Inception(ch, *widths, c.batchnorm))
                ch = sum(widths)
            else:
                blocks.append(Downsample(ch, widths[0], c.batchnorm))
                ch += widths[0]  # the pooled input passes through beside the conv
        self.blocks = nn.ModuleList(blocks)
        self.block_names = names
        self.gap = nn.AdaptiveAvgPool2d(1)  # any input size, not only Fig. 3's 7x7
        self.flatten = nn.Flatten()
        self.out = nn.Linear(ch, c.num_classes)

    def forward(self, x):
        h = self.conv1(self.input_reg(self.inp(x)))
        for block in self.blocks:
            h = block(h)
        return self.out(self.flatten(self.gap(h)))

    def probe_layers(self) -> list[ProbeLayer]:
        layers = [ProbeLayer("input", None, self.inp),
                  ProbeLayer("conv1", self.conv1.conv, self.conv1.act)]
        for name, block in zip(self.block_names, self.blocks, strict=True):
            layers += [ProbeLayer(f"{name}_{k}", u.conv, u.act) for k, u in block.units().items()]
        return layers + [ProbeLayer("pool", None, self.flatten)]
