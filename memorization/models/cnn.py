"""The MASC paper's CNN (Decoding Generalization from Memorization, Sec. 3.2; "built along the
lines of (Tran et al., 2022)") for MNIST, Fashion-MNIST and CIFAR-10.

Three blocks of [conv 3x3 -> ReLU -> conv 3x3 -> ReLU -> max-pool 2] with 16, 32 and 64
channels, flatten, three fully connected ReLU layers of ``width`` (250), and a linear layer to K
classes without a bias. The convolutions pad by 1 ("same") and the pools round down, so 28x28
inputs go 28 -> 14 -> 7 -> 3 and flatten to 64*3*3 = 576 (the paper's "Flat (576)"), and 32x32
inputs go 32 -> 16 -> 8 -> 4 and flatten to 64*4*4 = 1024.

No batch norm by default: the paper trains "without explicit regularizers such as Dropout or
batchnorm ... unless otherwise mentioned". With ``batchnorm`` each convolution is followed by a
BatchNorm2d before its ReLU and loses its bias (BN's shift replaces it); the fully connected
layers never get one. The conv probe's ``weight`` module then outputs the value *before* the
norm, so a metric that reads pre-activations from it sees the unnormalized response.

Probe layers: ``input``, ``conv1`` ... ``conv6``, ``flatten`` (no weight, no ReLU: the paper's
"Flat"), ``fc1`` ... ``fc3``. The output layer is not probed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from memorization.base.errors import check_all
from memorization.models.checks import bool_check, image_model_checks
from memorization.models.probes import ProbedModel, ProbeLayer
from memorization.models.registry import register_model
from memorization.models.regularizers import InputNoise

CHANNELS = (16, 16, 32, 32, 64, 64)  # a max-pool follows every second convolution
FC_LAYERS = 3


@dataclass
class CNNConfig:
    in_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    width: int = 250  # each of the three hidden fully connected layers
    batchnorm: bool = False  # off as in the paper
    # Arpit et al.'s input regularizers, training only (models/regularizers.py); off by default
    input_dropout: float = 0.0
    input_noise: float = 0.0

    def __post_init__(self):
        self.in_shape = tuple(self.in_shape)
        check_all([
            *image_model_checks("cnn", self.in_shape, self.num_classes, self.input_dropout,
                                self.input_noise),
            # three floor-halving pools must leave at least one pixel
            (len(self.in_shape) != 3 or min(self.in_shape[1:]) >= 8,
             f"model.in_shape={list(self.in_shape)}: the cnn needs images of at least 8x8"),
            (self.width >= 1, f"model.width={self.width} must be >= 1"),
            bool_check("batchnorm", self.batchnorm),
        ])

    def flat_size(self) -> int:
        _, h, w = self.in_shape
        return CHANNELS[-1] * (h // 8) * (w // 8)


@register_model("cnn", CNNConfig)
class CNN(ProbedModel):
    def __init__(self, **cfg):
        super().__init__()
        self.cfg = c = CNNConfig(**cfg)
        self.inp = nn.Identity()
        self.input_reg = InputNoise(c.input_dropout, c.input_noise)
        self.convs, self.norms, self.conv_acts = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        ch = c.in_shape[0]
        for out_ch in CHANNELS:
            self.convs.append(nn.Conv2d(ch, out_ch, 3, padding=1, bias=not c.batchnorm))
            self.norms.append(nn.BatchNorm2d(out_ch) if c.batchnorm else nn.Identity())
            self.conv_acts.append(nn.ReLU())
            ch = out_ch
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fcs, self.fc_acts = nn.ModuleList(), nn.ModuleList()
        fan_in = c.flat_size()
        for _ in range(FC_LAYERS):
            self.fcs.append(nn.Linear(fan_in, c.width))
            self.fc_acts.append(nn.ReLU())
            fan_in = c.width
        self.out = nn.Linear(fan_in, c.num_classes, bias=False)

    def forward(self, x):
        h = self.input_reg(self.inp(x))
        for i, (conv, norm, act) in enumerate(zip(self.convs, self.norms, self.conv_acts,
                                                  strict=True)):
            h = act(norm(conv(h)))
            if i % 2 == 1:
                h = self.pool(h)
        h = self.flatten(h)
        for fc, act in zip(self.fcs, self.fc_acts, strict=True):
            h = act(fc(h))
        return self.out(h)

    def probe_layers(self) -> list[ProbeLayer]:
        return [ProbeLayer("input", None, self.inp),
                *(ProbeLayer(f"conv{i + 1}", conv, act)
                  for i, (conv, act) in enumerate(zip(self.convs, self.conv_acts, strict=True))),
                ProbeLayer("flatten", None, self.flatten),
                *(ProbeLayer(f"fc{i + 1}", fc, act)
                  for i, (fc, act) in enumerate(zip(self.fcs, self.fc_acts, strict=True)))]
