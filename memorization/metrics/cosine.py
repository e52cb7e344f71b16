"""Per-layer mean cosine similarity between nodes' weight vectors and their active samples.

Theunissen et al., eq. (4): for layer l with nodes N_l, node i with weight row w_i, and A_i the
samples on which node i is active (post-activation a_il > 0),

    mu_cosine(l) = 1/|N_l| sum_{i in N_l} 1/|A_i| sum_{x in A_i} a_il(x) / (||w_i|| ||a_{l-1}(x)||)

Reading chosen: the summand is cos(w_i, a_{l-1}(x)) = w_i . a_{l-1}(x) / (||w_i|| ||a_{l-1}(x)||),
the angle of their eq. (3). For a ReLU layer without bias this *is* eq. (4) (a_il = w_i . a_{l-1}
when active); with a bias b_i, eq. (4) literally adds b_i / (||w_i|| ||a_{l-1}||), which is not
an angle, so the bias is left out. Dead nodes (active on no sample) are omitted from the mean
over nodes, as the paper does, and their fraction is reported as ``dead``. An input vector of
norm 0 (or a weight row of norm 0) has no angle and contributes a cosine of 0.

Linear layers: a node is a row of the weight matrix. Convolutional layers (the extension the
issue allows; the paper has none): a node is a filter w_i (C x kh x kw), and its "samples" are
every (image, output position) pair, the input being the patch the filter sees there (zero
padding included), active where the filter's post-activation is > 0. So mu_cosine of a conv
layer is the mean over live filters of the mean cosine between the filter and the patches it
fires on. Patch norms come from one single-channel convolution of the squared input with a
ones kernel, and w . patch from the layer's own pre-activation when the caller passes it, so
the cost is about one extra 1-output-channel convolution. A patch whose norm is below 1e-3 of
the largest patch norm in its image counts as zero (no angle, cosine 0): on GPUs, fast
convolution algorithms leave rounding noise where a patch is exactly zero. Grouped convolutions
and padding modes other than zeros are not covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

from memorization.base.store import register_metric
from memorization.metrics.protocol import Context, LayerMetric, MetricConfig, Probe
from memorization.models.probes import ProbeLayer


@dataclass(frozen=True)
class ConvGeometry:
    """How a 2-D convolution slides over its input (the arguments of ``F.conv2d``)."""

    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] | str = 0
    dilation: int | tuple[int, int] = 1

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvGeometry:
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"cosine covers convolutions with groups=1 and zero padding, got "
                             f"groups={conv.groups}, padding_mode={conv.padding_mode!r}")
        return cls(conv.stride, conv.padding, conv.dilation)


def cosine_sums(weight: torch.Tensor, inputs: torch.Tensor, outputs: torch.Tensor,
                dots: torch.Tensor | None = None, conv: ConvGeometry | None = None,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per node: the sum of cos(w_i, a_{l-1}(x)) over its active samples, and their count.

    Linear: weight [H, D] (rows w_i), inputs [N, D] (a_{l-1}), outputs [N, H] (a_l,
    post-activation). Convolution: weight [H, C, kh, kw], inputs [N, C, Hin, Win], outputs
    [N, H, Ho, Wo], ``conv`` its geometry (default stride 1, no padding); samples are (image,
    position) pairs. ``dots``: the products w_i . a_{l-1} ([N, H] or [N, H, Ho, Wo]) when the
    caller has them already, which saves the layer's product; with ``bias`` [H], ``dots`` is
    the layer's pre-activation w_i . a_{l-1} + b_i, and the bias is taken off here.

    Taking the bias off cancels where |w_i . a_{l-1}| is far below |b_i|: the pre-activation
    carries float rounding of about eps |b_i|, so the cosine's error is about
    eps |b_i| / (||w_i|| ||a_{l-1}||). Where that could exceed 2 eps (an input of norm below
    2 |b_i| / ||w_i|| for some node, e.g. inputs of norm 1e-6 under a bias of 1), the batch's
    products are computed afresh instead, so every cosine is within a few eps of its exact
    value; ordinary layers (inputs far larger than bias / weight norm) pay one comparison and
    one host sync per batch.
    """
    n = inputs.shape[0]
    if weight.dim() == 4:
        g = conv or ConvGeometry()
        ones = weight.new_ones(1, *weight.shape[1:])
        patch_sq = F.conv2d(inputs.square(), ones, None, g.stride, g.padding, g.dilation)
        # a patch that is exactly zero has no angle; fast GPU convolutions (TF32, Winograd) can
        # leave rounding noise there, so norms below 1e-3 of the image's largest patch norm
        # count as zero
        floor = patch_sq.flatten(1).amax(1).reshape(-1, 1, 1, 1) * 1e-6
        patch_sq = torch.where(patch_sq > floor, patch_sq, torch.zeros_like(patch_sq))
        in_norm = patch_sq.clamp_min(0).sqrt().flatten(2)  # [N, 1, positions]
    else:
        inputs = inputs.flatten(1)
        in_norm = inputs.norm(dim=1).reshape(n, 1, 1)
    w_norm = weight.flatten(1).norm(dim=1)
    if dots is not None and bias is not None:
        if _cancels(bias, w_norm, in_norm):
            dots = None
        else:
            dots = dots - bias.reshape(-1, *[1] * (dots.dim() - 2))
    if dots is None:
        dots = (F.conv2d(inputs, weight, None, g.stride, g.padding, g.dilation)
                if weight.dim() == 4 else inputs @ weight.t())
    h = weight.shape[0]
    # [N, H, positions] (positions 1 for a linear layer); flatten, not reshape(n, h, -1), so an
    # empty batch (a DDP rank with no share of a small probe set) passes too
    dots = dots.reshape(n, h, 1) if dots.dim() == 2 else dots.flatten(2)
    active = (outputs.reshape(n, h, 1) if outputs.dim() == 2 else outputs.flatten(2)) > 0
    norms = in_norm * w_norm[:, None]
    cos = torch.where(norms > 0, dots / norms.clamp_min(torch.finfo(dots.dtype).tiny), 0.0)
    cos = cos.clamp(-1, 1)  # rounding (e.g. a fast convolution's) must not leave [-1, 1]
    return (cos * active).sum(dim=(0, 2)), active.sum(dim=(0, 2))


def _cancels(bias: torch.Tensor, w_norm: torch.Tensor, in_norm: torch.Tensor) -> bool:
    """Whether pre-activation minus bias could lose more than 2 eps of a cosine: some nonzero
    input (patch) of norm below 2 |b_i| / ||w_i|| (nodes with zero weights have no angle)."""
    reach = torch.where(w_norm > 0, bias.abs() / w_norm.clamp_min(torch.finfo(w_norm.dtype).tiny),
                        torch.zeros_like(w_norm)).amax()
    return bool(((in_norm > 0) & (in_norm < 2 * reach)).any())


def layer_cosine_sums(module: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor,
                      pre: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`cosine_sums` of an ``nn.Linear`` or ``nn.Conv2d`` layer; ``pre`` is its own output
    (the pre-activation), from which the products are taken without recomputing them."""
    conv = ConvGeometry.of(module) if isinstance(module, nn.Conv2d) else None
    bias = module.bias if pre is not None else None
    return cosine_sums(module.weight, inputs, outputs, pre, conv, bias)


def has_cosine(module: nn.Module | None) -> bool:
    """Whether :func:`layer_cosine_sums` covers this weight module."""
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros")


def _reduce(sum_cos: torch.Tensor, n_active: torch.Tensor) -> dict[str, torch.Tensor]:
    alive = n_active > 0
    per_node = sum_cos.double() / n_active.clamp_min(1)
    return {"cosine": (per_node * alive).sum() / alive.sum(),  # NaN if every node is dead
            "dead": 1.0 - alive.double().mean()}


def mean_cosine(weight: torch.Tensor, inputs: torch.Tensor, outputs: torch.Tensor,
                conv: ConvGeometry | None = None) -> dict[str, torch.Tensor]:
    """One-shot eq. (4): ``{"cosine": mu_cosine(l), "dead": fraction of dead nodes}``."""
    return _reduce(*cosine_sums(weight, inputs, outputs, conv=conv))


class MeanCosine(Metric):
    """Streaming :func:`mean_cosine`: per-node sums of cosines and of active counts. ``update``
    takes the arguments of :func:`cosine_sums`, or ``sums=`` a result of it."""

    full_state_update = False

    def __init__(self, num_nodes: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("sum_cos", torch.zeros(num_nodes, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("n_active", torch.zeros(num_nodes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, *args, sums: tuple[torch.Tensor, torch.Tensor] | None = None,
               **kwargs) -> None:
        s, n = sums if sums is not None else cosine_sums(*args, **kwargs)
        self.sum_cos += s.to(self.sum_cos.dtype)
        self.n_active += n

    def compute(self) -> dict[str, torch.Tensor]:
        return _reduce(self.sum_cos, self.n_active)


@dataclass
class CosineConfig(MetricConfig):
    pass


class CosineMetric(LayerMetric):
    """Eq. (4) per weight layer on the training and test probe sets: ``cosine/<split>/<layer>``
    and the fraction of dead nodes, ``dead/<split>/<layer>``."""

    name = "cosine"
    Config = CosineConfig
    needs_pre = True  # w_i . a_{l-1} is the layer's own pre-activation: no product of our own

    def covers(self, layer: ProbeLayer) -> bool:
        return has_cosine(layer.weight)

    def begin(self, ctx: Context) -> None:
        self.device = ctx.device
        self.sums: dict[tuple[str, str], MeanCosine] = {}

    def update(self, split: str, probe: Probe) -> None:
        module = probe.layer.weight
        key = (split, probe.layer.name)
        if key not in self.sums:
            self.sums[key] = MeanCosine(module.weight.shape[0]).to(self.device)
        self.sums[key].update(sums=layer_cosine_sums(module, probe.inp, probe.out, probe.pre))

    def compute(self) -> dict[str, torch.Tensor]:
        logs = {}
        for (split, layer), m in self.sums.items():
            res = m.compute()
            logs[f"cosine/{split}/{layer}"] = res["cosine"]
            logs[f"dead/{split}/{layer}"] = res["dead"]
        self.sums = {}
        return logs


register_metric(CosineMetric)
