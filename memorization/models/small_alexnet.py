"""Zhang et al.'s and Arpit et al.'s small AlexNet: the TensorFlow CIFAR-10 tutorial network.

Two blocks of [conv 5x5, 64 channels, ReLU -> max-pool 3x3 stride 2 -> local response
normalization], then FC 384 and FC 192 with ReLU, then a linear layer to K classes. Padding is
TensorFlow's "SAME" (2 for the 5x5 convolutions, 1 for the pools), so 28x28 inputs become 14x14
and then 7x7. The LRN is the tutorial's (depth_radius 4, bias 1, alpha 0.001/9, beta 0.75), which
in PyTorch's parametrization (alpha divided by the window size) is size 9, alpha 0.001. On 28x28x3
inputs it has 1,387,786 parameters (Zhang et al., Table 1).

Probe layers: the input, each convolution's ReLU output, each fully connected ReLU output.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from memorization.base.errors import ConfigError, check_all
from memorization.models.checks import image_model_checks
from memorization.models.probes import ProbedModel, ProbeLayer
from memorization.models.registry import register_model
from memorization.models.regularizers import InputNoise


@dataclass
class SmallAlexNetConfig:
    in_shape: tuple[int, ...] = (3, 28, 28)
    num_classes: int = 10
    channels: int = 64
    fc: tuple[int, int] = (384, 192)
    dropout: float = 0.0  # after each fully connected ReLU; off as in the papers
    # Arpit et al.'s input regularizers, training only (models/regularizers.py); off by default
    input_dropout: float = 0.0
    input_noise: float = 0.0

    def __post_init__(self):
        self.in_shape, self.fc = tuple(self.in_shape), tuple(self.fc)
        check_all(image_model_checks("small_alexnet", self.in_shape, self.num_classes,
                                     self.input_dropout, self.input_noise))
        if self.channels < 1 or len(self.fc) != 2 or min(self.fc) < 1:
            raise ConfigError("small_alexnet: channels and the two fc widths must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")


def _pooled(size: int) -> int:
    return (size + 2 * 1 - 3) // 2 + 1  # max-pool 3, stride 2, padding 1


@register_model("small_alexnet", SmallAlexNetConfig)
class SmallAlexNet(ProbedModel):
    def __init__(self, **cfg):
        super().__init__()
        self.cfg = c = SmallAlexNetConfig(**cfg)
        ch, h, w = c.in_shape
        self.inp = nn.Identity()
        self.input_reg = InputNoise(c.input_dropout, c.input_noise)
        self.conv1 = nn.Conv2d(ch, c.channels, 5, padding=2)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c.channels, c.channels, 5, padding=2)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.lrn = nn.LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0)
        flat = c.channels * _pooled(_pooled(h)) * _pooled(_pooled(w))
        self.fc1 = nn.Linear(flat, c.fc[0])
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(c.fc[0], c.fc[1])
        self.act4 = nn.ReLU()
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.out = nn.Linear(c.fc[1], c.num_classes)

    def forward(self, x):
        h = self.lrn(self.pool(self.act1(self.conv1(self.input_reg(self.inp(x))))))
        h = self.lrn(self.pool(self.act2(self.conv2(h))))
        h = self.drop(self.act3(self.fc1(h.flatten(1))))
        h = self.drop(self.act4(self.fc2(h)))
        return self.out(h)

    def probe_layers(self) -> list[ProbeLayer]:
        return [ProbeLayer("input", None, self.inp),
                ProbeLayer("conv1", self.conv1, self.act1),
                ProbeLayer("conv2", self.conv2, self.act2),
                ProbeLayer("fc1", self.fc1, self.act3),
                ProbeLayer("fc2", self.fc2, self.act4)]
