"""Arpit et al.'s input regularizers (Sec. 5, Fig. 10): input dropout and additive Gaussian input
noise, applied in training mode only, after the probe layer "input" has seen the clean input (so
the metrics, which probe in eval mode, are unaffected either way)."""

from __future__ import annotations

import torch
from torch import nn

from memorization.base.errors import ConfigError


def check_input_regularizers(input_dropout: float, input_noise: float) -> None:
    if not 0.0 <= input_dropout < 1.0:
        raise ConfigError(f"model.input_dropout={input_dropout} must be in [0, 1)")
    if not input_noise >= 0.0:
        raise ConfigError(f"model.input_noise={input_noise} must be >= 0")


class InputNoise(nn.Module):
    """x -> dropout_p(x + std * N(0, 1)) in training mode; the identity in eval mode."""

    def __init__(self, dropout: float = 0.0, std: float = 0.0):
        super().__init__()
        check_input_regularizers(dropout, std)
        self.std = std
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            x = x + self.std * torch.randn_like(x)
        return self.drop(x)
