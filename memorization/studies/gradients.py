"""Arpit et al.'s loss sensitivity (Sec. 3.2) by backpropagation through unrolled SGD, its
cheap stand-in ``input_grad_norm``, and the Gini coefficient.

The paper: "we measure the norm of the loss gradient with respect to a previous example x after
t SGD updates. Let L_t be the loss after t updates; then the sensitivity measure is given by

    g_x^t = || dL_t / dx ||_1 .

The parameter update from training on x influences all future L_t indirectly by changing the
subsequent updates on different training examples. We denote the average over g_x^t after T
steps as g_x-bar [= 1/T sum_t g_x^t] ... We compute g_x^t by unrolling t SGD steps and applying
backpropagation over the unrolled computation graph, as done by Maclaurin et al. (2015)."

Our reading. "We measure the effect of each sample on the average loss": L_t is the mean
cross-entropy over the whole (1,000-example) training set at the parameters theta_t reached
after t updates, theta_t = theta_{t-1} - lr * grad_theta L_batch(t)(theta_{t-1}); x enters
theta_t through every update whose batch held it, and dL_t/dx is backpropagated through all t
updates (second derivatives included). L_t also holds x itself (x is one of the training
examples it averages over); that direct term, (1/n) d loss(theta_t; x) / dx, is *not* part of
the measure by default (``direct=False``): the paper's point is the influence through the
updates, and the direct term is what the cheap ``input_grad_norm`` measures. ``direct=True``
adds it. An example no update has used yet has g_x^t = 0.

Class x class (Fig. 4): g_{i,j} = E_(x,y) 1/T sum_t |dL_t(y=i) / dx_{y=j}|, "where L_t(y=i) is
the term in the cross-entropy sum corresponding to class i". Our reading: L_t(y=i) =
(1/n) sum over the training examples labelled i of their cross-entropy (so sum_i L_t(y=i) = L_t),
and cell (i, j) is the mean over the training examples x of label j of 1/T sum_t
||dL_t(y=i)/dx||_1, labels being the training labels (random ones under randY).

Gini (Gini, 1913) of non-negative values v_1..v_n: G = sum_{k,l} |v_k - v_l| / (2 n^2 mean(v)),
computed from the ascending order statistics as G = 2 sum_k k v_(k) / (n sum v) - (n + 1) / n;
0 when all values are equal (all zero included), (n - 1) / n when one value holds everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

Params = dict[str, torch.Tensor]


def gini(values: torch.Tensor) -> torch.Tensor:
    """The Gini coefficient of the non-negative values in the last dimension (module
    docstring); 0 for values that are all zero."""
    v = values.sort(dim=-1).values.double()
    n = v.shape[-1]
    k = torch.arange(1, n + 1, dtype=v.dtype, device=v.device)
    total = v.sum(dim=-1)
    g = 2 * (k * v).sum(dim=-1) / (n * total) - (n + 1) / n
    return torch.where(total > 0, g, torch.zeros_like(g))


@dataclass
class SGD:
    """Plain SGD with momentum and weight decay as torch.optim.SGD does them (the momentum
    buffer starts at the first gradient), written functionally so updates stay in the graph."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


def batch_schedule(n: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """The indices of the batches of ``steps`` updates: each epoch a fresh permutation of the
    ``n`` examples from one generator seeded with ``seed``, cut into batches (the last one of
    an epoch may be smaller)."""
    gen = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    while len(out) < steps:
        out += list(torch.randperm(n, generator=gen).split(batch_size))
    return out[:steps]


def unrolled_steps(net: torch.nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                   batches: list[torch.Tensor], opt: SGD) -> Iterator[Params]:
    """theta_1, theta_2, ...: the parameters after each SGD update on ``batches`` of (x, y),
    kept differentiable with respect to ``x`` (and the starting ``params``) through every
    update: the graph of step t holds the gradient's own graph (``create_graph``)."""
    names = list(params)
    buf: list[torch.Tensor] | None = None
    for b in batches:
        b = b.to(x.device)
        loss = F.cross_entropy(functional_call(net, params, (x[b],)), y[b])
        grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=True)
        if opt.weight_decay:
            grads = [g + opt.weight_decay * params[k] for g, k in zip(grads, names, strict=True)]
        if opt.momentum:
            buf = list(grads) if buf is None else [
                opt.momentum * m + g for m, g in zip(buf, grads, strict=True)]
            grads = buf
        params = {k: params[k] - opt.lr * g for k, g in zip(names, grads, strict=True)}
        yield params


def mean_loss(net: torch.nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
              num_classes: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of (x, y) at ``params``; with ``num_classes``, the vector of the
    per-class terms L(y=i) = (1/n) sum over examples labelled i (summing to the mean)."""
    losses = F.cross_entropy(functional_call(net, params, (x,)), y, reduction="none")
    if num_classes is None:
        return losses.mean()
    return torch.zeros(num_classes, dtype=losses.dtype, device=losses.device).index_add(
        0, y, losses) / len(y)


def start_params(net: torch.nn.Module) -> Params:
    """theta_0: the network's parameters as leaves that take gradients (the updates need
    d loss / d theta), detached from the module."""
    return {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}


@dataclass
class Record:
    """What one recorded step gives: g_x^t per example, the per-class matrix (or None), and
    L_t with the training accuracy at theta_t."""

    step: int
    g: torch.Tensor  # [n]
    classes: torch.Tensor | None  # [K, K]: row i = loss class, column j = examples' class
    loss: float
    acc: float


def loss_sensitivity(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                     batches: list[torch.Tensor], opt: SGD, record: Callable[[int], bool],
                     *, direct: bool = False, num_classes: int | None = None,
                     with_classes: Callable[[int], bool] = lambda t: True) -> Iterator[Record]:
    """Train ``net`` (left untouched: a functional copy of its parameters is trained) on
    ``batches`` and yield a :class:`Record` after every update t (1-based) with
    ``record(t)``: g_x^t = ||dL_t/dx||_1 per training example through the unrolled updates
    (module docstring), and with ``num_classes`` the class x class matrix of that step when
    ``with_classes(t)`` (it costs a backward pass per class).
    Each record backpropagates through all t updates so far, so the cost grows with t."""
    x_train = x.detach().clone().requires_grad_(True)
    x_eval = x_train if direct else x.detach()  # without the direct term: x held fixed in L_t
    for t, params in enumerate(unrolled_steps(net, start_params(net), x_train, y, batches, opt),
                               start=1):
        if not record(t):
            continue
        with torch.no_grad():
            logits = functional_call(net, params, (x,))
            acc = float((logits.argmax(1) == y).float().mean())
        loss = mean_loss(net, params, x_eval, y)
        g = _l1_grad(loss, x_train)
        classes = None
        if num_classes is not None and with_classes(t):
            # one backward per class (batching them with is_grads_batched was slower here)
            per_class = mean_loss(net, params, x_eval, y, num_classes)
            counts = torch.bincount(y, minlength=num_classes).clamp_min(1).to(g.dtype)
            rows = []
            for i in range(num_classes):
                gi = _l1_grad(per_class[i], x_train) if (y == i).any() else torch.zeros_like(g)
                rows.append(torch.zeros_like(counts).index_add(0, y, gi) / counts)
            classes = torch.stack(rows)
        yield Record(t, g.detach(), classes, float(loss.detach()), acc)


def _l1_grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """||d loss / dx_k||_1 for every row x_k of x; the graph is kept for the next records."""
    (grad,) = torch.autograd.grad(loss, x, retain_graph=True, allow_unused=True)
    if grad is None:  # no update has touched x yet and the direct term is off
        return torch.zeros(len(x), dtype=x.dtype, device=x.device)
    return grad.abs().flatten(1).sum(1)


def input_grad_norm(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int = 1024) -> torch.Tensor:
    """The cheap stand-in, not the paper's measure: ||d loss(theta; x, y) / dx||_1 of each
    example's own cross-entropy at the current parameters (no unrolling: the "direct term"
    alone), in eval mode, in batches (the per-example gradients of a sum of per-example losses
    are the per-example losses' own)."""
    was = net.training
    net.eval()
    out = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        xb = xb.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(net(xb), yb, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb)
        out.append(grad.abs().flatten(1).sum(1))
    net.train(was)
    return torch.cat(out)
