"""Config checks the image networks share, as (ok, message) pairs for errors.check_all."""

from __future__ import annotations

from memorization.models.regularizers import check_input_regularizers


def image_model_checks(name: str, in_shape: tuple[int, ...], num_classes: int,
                       input_dropout: float, input_noise: float) -> list[tuple[bool, str]]:
    """(C, H, W) inputs of positive sizes, K >= 1, and valid input regularizers (checked first,
    raising on their own)."""
    check_input_regularizers(input_dropout, input_noise)
    return [
        (len(in_shape) == 3 and all(d >= 1 for d in in_shape),
         f"model.in_shape={list(in_shape)}: {name} needs image inputs (C, H, W) of positive "
         "sizes"),
        (num_classes >= 1, f"model.num_classes={num_classes} must be >= 1"),
    ]


def bool_check(key: str, value) -> tuple[bool, str]:
    return isinstance(value, bool), f"model.{key}={value!r} must be true or false"
