"""The layer-probe contract every metric uses.

A model lists its probe layers in order, the input first as layer 0. For each layer:

- ``weight``: the module whose weight rows (``weight[i]``) define the layer's nodes; ``None`` for
  the input layer. Its forward-hook *input* is the layer's input a_{l-1}.
- ``output``: the module whose forward-hook *output* is the layer's post-activation output a_l
  (for the input layer: the input as the network sees it, flattened for an MLP).

Layer 0, the input, must depend on the data only (in eval mode): the metrics compute its values
once per run and reuse them. Other layers without weights (e.g. a pooling or flatten layer) may
have ``weight=None`` too; cosine skips them.

Hooks only read: a metric never changes what the network computes. Metrics probe in eval mode;
in train mode with dropout, a layer's recorded output is taken before the dropout its successor
sees.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ProbeLayer:
    name: str
    weight: nn.Module | None
    output: nn.Module


class ProbedModel(nn.Module):
    """Base class: subclasses implement ``probe_layers``."""

    def probe_layers(self) -> list[ProbeLayer]:
        raise NotImplementedError


@contextmanager
def capture(model: ProbedModel, inputs: bool = False, names: list[str] | None = None):
    """Record the probe layers' outputs during forward passes; with ``inputs``, also each weight
    module's input (``"in"``, a_{l-1}) and output (``"pre"``, its pre-activation, e.g.
    a_{l-1} W^T + b for a Linear layer).

    Yields ``{"out": {name: tensor}, "in": {...}, "pre": {...}}``, refreshed by each forward
    pass; the hooks are removed on exit, also when the body raises.
    """
    store: dict[str, dict[str, torch.Tensor]] = {"out": {}, "in": {}, "pre": {}}
    handles = []
    for layer in model.probe_layers():
        if names is not None and layer.name not in names:
            continue

        def on_output(_m, _args, out, name=layer.name):
            store["out"][name] = out

        handles.append(layer.output.register_forward_hook(on_output))
        if inputs and layer.weight is not None:
            def on_input(_m, args, name=layer.name):
                store["in"][name] = args[0]

            def on_weight_output(_m, _args, out, name=layer.name):
                store["pre"][name] = out

            handles.append(layer.weight.register_forward_pre_hook(on_input))
            handles.append(layer.weight.register_forward_hook(on_weight_output))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
