"""Fully connected networks: Zhang's 1x512 and 3x512, Theunissen's 10x512, Arpit's 2x4096, the
MASC paper's MLP (hidden widths listed per layer)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from memorization.base.errors import ConfigError, check_all, check_number
from memorization.models.probes import ProbedModel, ProbeLayer
from memorization.models.registry import register_model
from memorization.models.regularizers import InputNoise, check_input_regularizers

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
               "leaky_relu": nn.LeakyReLU}
BIAS_MODES = ("all", "first", "none")
INITS = ("default", "he")


@dataclass
class MLPConfig:
    in_shape: tuple[int, ...] = (1, 8, 8)
    num_classes: int = 10
    depth: int = 3  # hidden layers
    width: int | list[int] = 512  # every hidden layer's, or one per hidden layer (depth of them)
    activation: str = "relu"
    # "all": every linear layer has a bias; "first": only the first hidden layer (Theunissen:
    # "a single bias node at the first layer", so the output layer has none either); "none";
    # or one boolean per linear layer, depth + 1 of them (the output layer last).
    bias: str | list[bool] = "all"
    # PyTorch's default, or "he": Kaiming normal with the ReLU gain (fan-in) for every linear
    # layer, the output layer included, and zero biases
    init: str = "default"
    dropout: float = 0.0  # after every hidden activation; off as in the papers
    # Arpit et al.'s regularizers on the input, training only: dropout, additive N(0, std^2)
    input_dropout: float = 0.0
    input_noise: float = 0.0

    def __post_init__(self):
        self.in_shape = tuple(self.in_shape)
        # a union type: the schema leaves it unchecked (model.width=abc), so check it here
        check_number(self.depth, "model.depth", integer=True, lo=1)
        if isinstance(self.width, (list, tuple)):
            self.width = [check_number(w, f"model.width[{i}]", integer=True, lo=1)
                          for i, w in enumerate(self.width)]
            if len(self.width) != self.depth:
                raise ConfigError(f"model.width lists {len(self.width)} widths but model.depth="
                                  f"{self.depth}; give one width per hidden layer")
        else:
            check_number(self.width, "model.width", integer=True, lo=1,
                         what=" (or a list of them, one per hidden layer)")
        checks = [
            (self.num_classes >= 1, f"model.num_classes={self.num_classes} must be >= 1"),
            (len(self.in_shape) >= 1 and all(d >= 1 for d in self.in_shape),
             f"model.in_shape={list(self.in_shape)} must be positive sizes"),
            (self.depth >= 1, f"model.depth={self.depth} must be >= 1"),
            (min(self.widths(), default=1) >= 1, f"model.width={self.width} must be >= 1"),
            (self.activation in ACTIVATIONS, f"model.activation={self.activation!r} is not one "
                                             f"of {', '.join(ACTIVATIONS)}"),
            (self.bias in BIAS_MODES if isinstance(self.bias, str) else
             isinstance(self.bias, (list, tuple)) and len(self.bias) == self.depth + 1
             and all(isinstance(b, bool) for b in self.bias),
             f"model.bias={self.bias!r} must be one of {', '.join(BIAS_MODES)} or a list of "
             f"{self.depth + 1} booleans (one per linear layer, the output last)"),
            (self.init in INITS, f"model.init={self.init!r} is not one of {', '.join(INITS)}"),
            (0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout} must be in [0, 1)"),
        ]
        check_all(checks)
        check_input_regularizers(self.input_dropout, self.input_noise)

    def widths(self) -> list[int]:
        """The width of each hidden layer."""
        return list(self.width) if isinstance(self.width, list) else [self.width] * self.depth

    def layer_biases(self) -> list[bool]:
        """Whether each linear layer has a bias: the depth hidden layers, then the output."""
        if not isinstance(self.bias, str):
            return list(self.bias)
        n = self.depth + 1
        return {"all": [True] * n, "none": [False] * n, "first": [True] + [False] * (n - 1)}[
            self.bias]


# width and bias take a number or string, or a list: OmegaConf has no union of those
@register_model("mlp", MLPConfig, width=(Any, 512), bias=(Any, "all"))
class MLP(ProbedModel):
    """Flatten (-> input noise, input dropout) -> depth x [Linear -> activation (-> dropout)] ->
    Linear to K logits.

    Probe layers: ``input`` (the flattened input), then ``fc1`` ... ``fc{depth}`` with their
    post-activation outputs. The output layer ``out`` is not a probe layer.
    """

    def __init__(self, **cfg):
        super().__init__()
        self.cfg = c = MLPConfig(**cfg)
        self.flatten = nn.Flatten()
        self.fcs, self.acts = nn.ModuleList(), nn.ModuleList()
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.input_reg = InputNoise(c.input_dropout, c.input_noise)
        fan_in = math.prod(c.in_shape)
        for i, width in enumerate(c.widths()):
            self.fcs.append(nn.Linear(fan_in, width, bias=c.layer_biases()[i]))
            self.acts.append(ACTIVATIONS[c.activation]())
            fan_in = width
        self.out = nn.Linear(fan_in, c.num_classes, bias=c.layer_biases()[-1])
        if c.init == "he":
            for lin in [*self.fcs, self.out]:
                nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)

    def forward(self, x):
        h = self.input_reg(self.flatten(x))
        for fc, act in zip(self.fcs, self.acts, strict=False):
            h = self.drop(act(fc(h)))
        return self.out(h)

    def probe_layers(self) -> list[ProbeLayer]:
        layers = [ProbeLayer("input", None, self.flatten)]
        layers += [ProbeLayer(f"fc{i + 1}", fc, act)
                   for i, (fc, act) in enumerate(zip(self.fcs, self.acts, strict=False))]
        return layers
