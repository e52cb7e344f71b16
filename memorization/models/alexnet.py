"""The MASC paper's AlexNet (Decoding Generalization from Memorization, Sec. 3.2; Krizhevsky et
al., 2012) for CIFAR-100 (32x32) and Tiny ImageNet (64x64).

Five convolutions with 64, 192, 384, 256, 256 channels, each followed by a ReLU, with a max-pool
3 stride 2 (no padding, as in torchvision) after the first, the second and the fifth; flatten;
two fully connected ReLU layers of 4096; a linear layer to K classes. Two stems:

- ``3x3`` (32x32 inputs): conv1 3x3 stride 2 pad 1, conv2 3x3 pad 1, so 32 -> 16 -> pool 7 ->
  pool 3 -> pool 1 and the flatten is 256*1*1 = 256 (the paper's "Flat (256)").
- ``11x11`` (64x64 inputs): torchvision's conv1 11x11 stride 4 pad 2 and conv2 5x5 pad 2, so
  64 -> 15 -> pool 7 -> pool 3 -> pool 1 and the flatten is again 256. torchvision's adaptive
  average pool to 6x6 is left out: on a 1x1 map it would only copy each value 36 times.

conv3 ... conv5 are 3x3 pad 1 in both. ``stem: auto`` picks the stem from the input size; an
explicit stem accepts any size its five convolutions and three pools leave at least 1x1 of.

Dropout, when on, sits where torchvision puts it: on the inputs of fc1 and fc2. It is off by
default: the paper trains "without explicit regularizers such as Dropout or batchnorm ... unless
otherwise mentioned".

Probe layers: ``input``, ``conv1`` ... ``conv5``, ``flatten`` (no weight, no ReLU: the paper's
"Flat"), ``fc1``, ``fc2``. The output layer is not probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from memorization.base.errors import ConfigError, check_all
from memorization.models.checks import image_model_checks
from memorization.models.probes import ProbedModel, ProbeLayer
from memorization.models.registry import register_model
from memorization.models.regularizers import InputNoise

CHANNELS = (64, 192, 384, 256, 256)
POOL_AFTER = (0, 1, 4)  # conv indices followed by a max-pool
# (kernel, stride, padding) of conv1 and conv2; conv3 ... conv5 are (3, 1, 1) in both stems
STEMS = {"3x3": ((3, 2, 1), (3, 1, 1)), "11x11": ((11, 4, 2), (5, 1, 2))}
AUTO_STEMS = {32: "3x3", 64: "11x11"}  # square input side -> stem


def _spatial(size: int, stem: str) -> int:
    """Side length after the features, 0 if a convolution or pool would get too small."""
    for i, (k, s, p) in enumerate([*STEMS[stem], *[(3, 1, 1)] * 3]):
        size = (size + 2 * p - k) // s + 1
        if i in POOL_AFTER and size >= 1:
            size = (size - 3) // 2 + 1
        if size < 1:
            return 0
    return size


@dataclass
class AlexNetConfig:
    in_shape: tuple[int, ...] = (3, 32, 32)
    num_classes: int = 100
    stem: str = "auto"  # auto (from in_shape), 3x3 or 11x11
    fc: tuple[int, int] = (4096, 4096)
    dropout: float = 0.0  # on the inputs of fc1 and fc2; off as in the paper
    # Arpit et al.'s input regularizers, training only (models/regularizers.py); off by default
    input_dropout: float = 0.0
    input_noise: float = 0.0

    def __post_init__(self):
        self.in_shape, self.fc = tuple(self.in_shape), tuple(self.fc)
        shape = list(self.in_shape)
        check_all(image_model_checks("alexnet", self.in_shape, self.num_classes,
                                     self.input_dropout, self.input_noise))
        if self.stem != "auto" and self.stem not in STEMS:
            raise ConfigError(f"model.stem={self.stem!r} is not one of auto, {', '.join(STEMS)}")
        _, h, w = self.in_shape
        if self.stem == "auto" and (h != w or h not in AUTO_STEMS):
            raise ConfigError(f"model.in_shape={shape}: alexnet with stem=auto takes 32x32 (3x3 "
                              f"stem) or 64x64 (11x11 stem) inputs; set model.stem explicitly "
                              f"for other sizes")
        if min(self.feature_size()) < 1:
            raise ConfigError(f"model.in_shape={shape} is too small for alexnet's "
                              f"{self.variant()} stem")
        if len(self.fc) != 2 or min(self.fc) < 1:
            raise ConfigError(f"model.fc={list(self.fc)} must be two positive widths")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")

    def variant(self) -> str:
        return AUTO_STEMS[self.in_shape[1]] if self.stem == "auto" else self.stem

    def feature_size(self) -> tuple[int, int]:
        return _spatial(self.in_shape[1], self.variant()), _spatial(self.in_shape[2],
                                                                    self.variant())

    def flat_size(self) -> int:
        h, w = self.feature_size()
        return CHANNELS[-1] * h * w


@register_model("alexnet", AlexNetConfig)
class AlexNet(ProbedModel):
    def __init__(self, **cfg):
        super().__init__()
        self.cfg = c = AlexNetConfig(**cfg)
        self.inp = nn.Identity()
        self.input_reg = InputNoise(c.input_dropout, c.input_noise)
        self.convs, self.conv_acts = nn.ModuleList(), nn.ModuleList()
        geometry = [*STEMS[c.variant()], *[(3, 1, 1)] * 3]
        ch = c.in_shape[0]
        for out_ch, (k, s, p) in zip(CHANNELS, geometry, strict=True):
            self.convs.append(nn.Conv2d(ch, out_ch, k, stride=s, padding=p))
            self.conv_acts.append(nn.ReLU())
            ch = out_ch
        self.pool = nn.MaxPool2d(3, stride=2)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.fc1 = nn.Linear(c.flat_size(), c.fc[0])
        self.act_fc1 = nn.ReLU()
        self.fc2 = nn.Linear(c.fc[0], c.fc[1])
        self.act_fc2 = nn.ReLU()
        self.out = nn.Linear(c.fc[1], c.num_classes)

    def forward(self, x):
        h = self.input_reg(self.inp(x))
        for i, (conv, act) in enumerate(zip(self.convs, self.conv_acts, strict=True)):
            h = act(conv(h))
            if i in POOL_AFTER:
                h = self.pool(h)
        h = self.act_fc1(self.fc1(self.drop(self.flatten(h))))
        h = self.act_fc2(self.fc2(self.drop(h)))
        return self.out(h)

    def probe_layers(self) -> list[ProbeLayer]:
        return [ProbeLayer("input", None, self.inp),
                *(ProbeLayer(f"conv{i + 1}", conv, act)
                  for i, (conv, act) in enumerate(zip(self.convs, self.conv_acts, strict=True))),
                ProbeLayer("flatten", None, self.flatten),
                ProbeLayer("fc1", self.fc1, self.act_fc1),
                ProbeLayer("fc2", self.fc2, self.act_fc2)]
