"""What a job may ask of its device for speed, and what keeps the measurements exact meanwhile.

- ``trainer.precision`` (Lightning's own option): ``32-true`` (the default), ``bf16-mixed`` or
  ``16-mixed``. Mixed precision runs the training and evaluation steps under autocast; the
  weights and the optimizer state stay float32, the loss and accuracy sums float64
  (``module.MeanLoss``), and the epoch-end metrics and the relabel stage's subspaces run
  outside autocast on float32 activations (:func:`full_precision`). ``*-true`` precisions
  other than 32 would hand the metrics half-precision weights and are refused.
- ``trainer.matmul_precision`` (ours): how float32 matrix products run in the steps:
  ``highest`` (exact float32, torch's default), ``high`` (TF32 on Ampere and later GPUs),
  ``medium`` (bf16 products); null keeps torch's setting. The metrics always run at
  ``highest``.
- ``trainer.compile`` (ours): ``false``, ``true`` (``torch.compile`` with its default
  backend, inductor) or a backend's name (``aot_eager``, ...): the network's forward in the
  training and evaluation steps goes through ``torch.compile``, a stacked job's batched
  forward too; the metrics, the checkpoints and the relabel stage see the plain network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from memorization.base.errors import ConfigError

PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")
MATMUL = ("highest", "high", "medium")


def check_precision(value: Any, key: str = "trainer.precision",
                    why: str = "the metrics need float32 weights") -> None:
    """One line for a training-step precision this package cannot honour."""
    if str(value) not in PRECISIONS:
        raise ConfigError(f"{key}={value} is not one of {', '.join(PRECISIONS)} ({why}; "
                          "bf16-mixed is the fast one)")


def check_matmul(value: Any, key: str = "trainer.matmul_precision") -> None:
    """One line for a float32 matmul precision torch does not know (null: torch's own)."""
    if value is not None and value not in MATMUL:
        raise ConfigError(f"{key}={value} is not one of {', '.join(MATMUL)} or null (high: "
                          "TF32 on a GPU)")


def check(trainer: Any) -> None:
    """One line for a ``precision``, ``matmul_precision`` or ``compile`` value this package
    cannot honour."""
    check_precision(trainer.get("precision", "32-true") or "32-true")
    check_matmul(trainer.get("matmul_precision"))
    option = trainer.get("compile", False)
    if not (isinstance(option, bool) or (isinstance(option, str) and option)):
        raise ConfigError(f"trainer.compile={option!r} must be true, false or a torch.compile "
                          "backend's name (e.g. inductor, aot_eager)")
    if isinstance(option, str) and option not in torch._dynamo.list_backends(exclude_tags=()):
        raise ConfigError(f"trainer.compile={option}: no such torch.compile backend; choose "
                          f"among {', '.join(torch._dynamo.list_backends())}")


def apply_matmul_precision(value: str | None) -> None:
    """A job's float32 matmul precision, process-wide (a reused worker gets each job's)."""
    torch.set_float32_matmul_precision(value or "highest")


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Autocast off and float32 products exact inside: what the metrics run under, whatever
    precision the training steps use."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with contextlib.ExitStack() as stack:
            for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
                stack.enter_context(torch.autocast(device, enabled=False))
            yield
    finally:
        torch.set_float32_matmul_precision(before)


def compiled(fn: Callable, option: bool | str) -> Callable:
    """``fn`` through ``torch.compile`` (``option`` true: the default backend; a string: that
    backend), or ``fn`` itself when ``option`` is false."""
    if option is False or option is None:
        return fn
    return torch.compile(fn) if option is True else torch.compile(fn, backend=option)
