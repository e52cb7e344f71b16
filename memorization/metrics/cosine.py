"""Per-layer mean cosine similarity between nodes' weight vectors and their active samples.

Theunissen et al., eq. (4): for layer l with nodes N_l, node i with weight row w_i, and A_i the
samples on which node i is active (post-activation a_il > 0),

    mu_cosine(l) = 1/|N_l| sum_{i in N_l} 1/|A_i| sum_{x in A_i} a_il(x) / (||w_i|| ||a_{l-1}(x)||)

Reading chosen: the summand is cos(w_i, a_{l-1}(x)) = w_i . a_{l-1}(x) / (||w_i|| ||a_{l-1}(x)||),
the angle of their eq. (3). For a ReLU layer without bias this *is* eq. (4) (a_il = w_i . a_{l-1}
when active); with a bias b_i, eq. (4) literally adds b_i / (||w_i|| ||a_{l-1}||), which is not
an angle, so the bias is left out. Dead nodes (active on no sample) are omitted from the mean
over nodes, as the paper does, and their fraction is reported as ``dead``. An input vector of
norm 0 (or a weight row of norm 0) has no angle and contributes a cosine of 0. Linear layers
only (a node is a row of the weight matrix).
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def cosine_sums(weight: torch.Tensor, inputs: torch.Tensor, outputs: torch.Tensor,
                dots: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per node: the sum of cos(w_i, a_{l-1}(x)) over its active samples, and their count.

    weight [H, D] (rows w_i), inputs [N, D] (a_{l-1}), outputs [N, H] (a_l, post-activation).
    ``dots`` [N, H]: ``inputs @ weight.T`` when the caller has it already (a Linear layer's
    pre-activation minus its bias), which saves the layer's matrix product.
    """
    inputs = inputs.reshape(inputs.shape[0], -1)
    outputs = outputs.reshape(outputs.shape[0], -1)
    active = outputs > 0
    if dots is None:
        dots = inputs @ weight.t()
    norms = inputs.norm(dim=1, keepdim=True) * weight.norm(dim=1)
    cos = torch.where(norms > 0, dots / norms.clamp_min(torch.finfo(dots.dtype).tiny), 0.0)
    return (cos * active).sum(dim=0), active.sum(dim=0)


def _reduce(sum_cos: torch.Tensor, n_active: torch.Tensor) -> dict[str, torch.Tensor]:
    alive = n_active > 0
    per_node = sum_cos.double() / n_active.clamp_min(1)
    return {"cosine": (per_node * alive).sum() / alive.sum(),  # NaN if every node is dead
            "dead": 1.0 - alive.double().mean()}


def mean_cosine(weight: torch.Tensor, inputs: torch.Tensor,
                outputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """One-shot eq. (4): ``{"cosine": mu_cosine(l), "dead": fraction of dead nodes}``."""
    return _reduce(*cosine_sums(weight, inputs, outputs))


class MeanCosine(Metric):
    """Streaming :func:`mean_cosine`: per-node sums of cosines and of active counts."""

    full_state_update = False

    def __init__(self, num_nodes: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("sum_cos", torch.zeros(num_nodes, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("n_active", torch.zeros(num_nodes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, weight: torch.Tensor, inputs: torch.Tensor, outputs: torch.Tensor,
               dots: torch.Tensor | None = None) -> None:
        s, n = cosine_sums(weight, inputs, outputs, dots)
        self.sum_cos += s.to(self.sum_cos.dtype)
        self.n_active += n

    def compute(self) -> dict[str, torch.Tensor]:
        return _reduce(self.sum_cos, self.n_active)
