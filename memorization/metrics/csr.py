"""Critical sample ratio (CSR) by Langevin adversarial sample search (Arpit et al. 2017, Sec. 4.1).

With a classifier f: R^n -> R^K, a sample x is *critical* when some point x^ in the L-infinity box
of radius r around it is classified differently:

    argmax_i f_i(x) != argmax_j f_j(x^)   s.t.   ||x - x^||_inf <= r

and the CSR of a set D is  #critical samples / |D|  (only the *predicted* label of x matters, not
the true one). Whether x is critical is decided by LASS (Algorithm 1): starting from x~ = x,

    x~ <- x~ + alpha * sign(g) + beta * eta,     eta ~ N(0, I) per element,
    x~_i <- x_i + r * sign(x~_i - x_i)   where |x~_i - x_i| > r    (clip to the box),

and x is critical as soon as argmax f(x~) != argmax f(x), within ``max_iter`` steps.

Reading of Algorithm 1 used here. The paper writes g = d f_k(x) / dx, at the original point and
with a plus sign, which taken literally climbs the predicted class's score. We read it as FGSM
(which LASS is "applied to"): k = argmax f(x) is fixed once, at the start, and every step takes g
at the *current* point x~ as the gradient of the cross-entropy of label k, so ascending it moves
away from the predicted class. Since CE_k = softplus(m) with the margin
m = logsumexp_{j != k} f_j - f_k, and softplus' > 0, sign(dCE_k/dx~) = sign(dm/dx~) exactly; the
gradient of m is the one computed, because that of CE_k underflows to 0 on confidently classified
samples. The box is elementwise, so alpha, beta and r may differ per channel. x~ is not clipped to
the data range (the paper does not). A sample whose gradient is 0 moves only by the noise, which
is LASS's point over plain FGSM.

Units. The paper sets alpha = 0.25, beta = 0.2 (footnote 4) and r = 0.3 (footnote 6: "a box size
of 0.3, which is small enough in a 0-255 pixel scale"); all three are read on that 0-255 scale,
i.e. 0.25/255, 0.2/255 and 0.3/255 in [0, 1] pixel units (footnote 4 names no scale; with
alpha on the same scale as r a step is smaller than the box, as Langevin search needs). Inputs
here are normalized per channel, so :func:`to_input_units` divides a pixel-unit value by the
channel's std. The paper gives no iteration limit; :data:`DEFAULT_MAX_ITER` is our choice.

The model should be in eval mode (the caller's job; nothing here switches modes): in train mode
dropout makes the search random and batch norm would update its running statistics.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics import Metric

from memorization.base.errors import ConfigError, check_all, shown
from memorization.base.store import register_metric
from memorization.metrics.protocol import MetricConfig, ModelMetric, fixed_subset

PAPER_ALPHA, PAPER_BETA, PAPER_R, PAPER_PIXEL_SCALE = 0.25, 0.2, 0.3, 255.0
"""The paper's LASS step, noise scale and box radius, on its 0-255 pixel scale."""

DEFAULT_MAX_ITER = 20
"""Not in the paper: our default number of LASS steps."""

_MEANING = {
    "alpha": "the size of LASS's signed-gradient step",
    "beta": "the scale of LASS's Gaussian noise",
    "r": "the radius of the L-infinity box searched around each sample",
}


def to_input_units(value_in_unit_pixels: float, std, sample_ndim: int = 3) -> torch.Tensor:
    """A quantity in [0, 1] pixel units (e.g. ``PAPER_R / PAPER_PIXEL_SCALE``) in the units of
    inputs normalized per channel by ``std`` (shape [C]): value / std, shaped [C, 1, 1] to
    broadcast against a [C, H, W] sample (``sample_ndim`` dims in general), or a 0-d tensor when
    C == 1 (which broadcasts against any sample, flat [D] included)."""
    std = torch.as_tensor(std)
    if not std.is_floating_point():
        std = std.float()
    if std.dim() != 1 or std.numel() == 0:
        raise ValueError(f"std must have shape [C], got {list(std.shape)}")
    value = torch.as_tensor(value_in_unit_pixels, dtype=std.dtype, device=std.device) / std
    if value.numel() == 1:
        return value.reshape(())
    return value.reshape(-1, *([1] * (sample_ndim - 1)))


def _check_param(name: str, value, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    sample_shape = x.shape[1:]
    try:
        ok_shape = torch.broadcast_shapes(t.shape, sample_shape) == sample_shape
    except RuntimeError:
        ok_shape = False
    if not ok_shape:
        raise ConfigError(f"metrics.csr.{name} has shape {list(t.shape)}, which does not "
                          f"broadcast to a sample of shape {list(sample_shape)}; give a number "
                          "or one value per channel")
    if not bool((torch.isfinite(t) & (t >= 0)).all()):
        shown = t.item() if t.numel() == 1 else t.flatten().tolist()
        raise ConfigError(f"metrics.csr.{name}={shown} must be finite and >= 0; it is "
                          f"{_MEANING[name]}")
    return t


def _check_max_iter(max_iter) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ConfigError(f"metrics.csr.max_iter={max_iter} must be an integer >= 1; it is the "
                          "number of LASS steps per sample")


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2:
        raise ConfigError(f"the critical sample ratio needs a classifier with logits [N, K], "
                          f"K >= 2; the model gave {list(out.shape)} for {x.shape[0]} inputs")
    return out


def _margin(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """m = logsumexp_{j != k} z_j - z_k per row; increasing in the cross-entropy of label k."""
    own = logits.gather(1, k[:, None]).squeeze(1)
    is_k = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, k[:, None], True)
    return logits.masked_fill(is_k, float("-inf")).logsumexp(dim=1) - own


def lass_critical(model: nn.Module, x: torch.Tensor, alpha, beta, r, max_iter: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Which samples of the batch ``x`` ([N, ...], in the model's input units) are critical: bool
    [N], by batched LASS (see the module docstring for the reading of Algorithm 1). The
    arguments are :func:`lass_search`'s."""
    return lass_search(model, x, alpha, beta, r, max_iter, generator)[0]


def lass_search(model: nn.Module, x: torch.Tensor, alpha, beta, r, max_iter: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched LASS on ``x`` ([N, ...], in the model's input units): ``(critical, found)``, with
    ``critical`` bool [N] and ``found`` [N, ...] the search's points: for a critical sample the
    first iterate whose predicted label differs from x's (an adversarial example), for the others
    the last iterate (in the box, same label). Arpit et al.'s adversarial training uses them.

    ``alpha``, ``beta``, ``r``: numbers or tensors broadcastable to ``x[0]`` (per channel, say).
    ``max_iter``: LASS steps at most; a sample stops moving once critical, and the search ends
    early when all are. ``generator`` draws the noise (on ``x``'s device; the global one if None;
    nothing is drawn when beta is 0). Runs on ``x``'s device, under grad mode even when called
    inside ``torch.no_grad()`` or ``torch.inference_mode()``; gradients are taken with respect to
    the input only, so the parameters neither change nor collect ``.grad``.
    """
    _check_max_iter(max_iter)
    alpha, beta, r = (_check_param(n, v, x) for n, v in (("alpha", alpha), ("beta", beta),
                                                            ("r", r)))
    n = x.shape[0]
    device = x.device
    with torch.inference_mode(False), torch.enable_grad():
        critical = torch.zeros(n, dtype=torch.bool, device=device)
        x0 = x.detach().clone()  # a normal tensor, even if x was made under inference mode
        found = x0.clone()
        if n == 0:
            return critical, found
        noisy = bool((beta != 0).any())
        lo, hi = x0 - r, x0 + r
        rows = torch.arange(n, device=device)  # the samples still searched, as indices into x
        point = x0.clone().requires_grad_(True)  # the current iterate; its rows `sel` are `rows`
        logits = _logits(model, point)
        k = logits.argmax(dim=1).detach()  # the predicted labels, fixed for the whole search
        sel = torch.ones(n, dtype=torch.bool, device=device)
        for step in range(max_iter):
            last = step == max_iter - 1
            (grad,) = torch.autograd.grad(_margin(logits[sel], k[rows]).sum(), point)
            with torch.no_grad():
                delta = alpha * grad[sel].sign()
                if noisy:  # the full batch's draw, so a sample's path ignores the others'
                    eta = torch.randn(x0.shape, generator=generator, device=device,
                                      dtype=x0.dtype)
                    delta = delta + beta * eta[rows]
                new = torch.clamp(point.detach()[sel] + delta, min=lo[rows], max=hi[rows])
                found[rows] = new  # a critical sample leaves `rows` at its flip: kept there
            point = new.requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                logits = _logits(model, point)
            flipped = logits.argmax(dim=1) != k[rows]
            critical[rows[flipped]] = True
            sel = ~flipped
            if last or not bool(sel.any()):
                break
            rows = rows[sel]
    return critical, found


class CriticalSampleRatio(Metric):
    """Streaming CSR: counts of critical and searched samples, summed over batches and ranks.

    ``update(model, x, alpha, beta, r, max_iter, generator=None)`` runs :func:`lass_critical` on a
    batch; ``compute()`` is critical / total as float64 (NaN before any sample)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("critical", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, model: nn.Module, x: torch.Tensor, alpha, beta, r, max_iter: int,
               generator: torch.Generator | None = None) -> None:
        crit = lass_critical(model, x, alpha, beta, r, max_iter, generator=generator)
        self.critical += crit.sum()
        self.total += crit.numel()  # a Python int: no host-to-device copy

    def compute(self) -> torch.Tensor:
        return self.critical.double() / self.total.double()  # 0 / 0 is NaN


@dataclass
class CSRConfig(MetricConfig):
    n: int = 1000  # samples searched, a fixed subset of `split`
    split: str = "test"  # or "train"
    # Arpit et al.: alpha 0.25, beta 0.2, box r 0.3, on the 0-255 pixel scale
    alpha: float = PAPER_ALPHA
    beta: float = PAPER_BETA
    r: float = PAPER_R
    pixel_scale: float = PAPER_PIXEL_SCALE  # alpha, beta, r are in units of 1/pixel_scale
    max_iter: int = DEFAULT_MAX_ITER
    seed: int = 0
    batch_size: int = 500

    def __post_init__(self) -> None:
        _check_max_iter(self.max_iter)
        for name in ("alpha", "beta", "r"):
            value = getattr(self, name)
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not real or not math.isfinite(value) or value < 0:
                raise ConfigError(f"metrics.csr.{name}={shown(value)} must be >= 0 and finite; "
                                  f"it is {_MEANING[name]}")
        check_all([
            (self.split in ("train", "test"),
             f"metrics.csr.split={self.split!r} must be train or test"),
            (isinstance(self.n, int) and self.n >= 1, f"metrics.csr.n={self.n} must be >= 1"),
            (self.pixel_scale > 0,
             f"metrics.csr.pixel_scale={shown(self.pixel_scale)} must be > 0"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1,
             f"metrics.csr.batch_size={self.batch_size} must be an integer >= 1"),
        ])


class CSRMetric(ModelMetric):
    """The critical sample ratio of ``n`` fixed samples of ``split``: ``csr/<split>``."""

    name = "csr"
    Config = CSRConfig

    def setup(self, dm, layers) -> None:
        self.idx = fixed_subset(len(dm.splits[self.cfg.split]), self.cfg.n, self.cfg.seed)

    def compute(self, net: nn.Module, dm) -> dict[str, torch.Tensor]:
        c, ctx = self.cfg, self.ctx
        std = dm.std.to(ctx.device)
        alpha, beta, r = (to_input_units(v / c.pixel_scale, std) for v in (c.alpha, c.beta, c.r))
        gen = torch.Generator(device=ctx.device).manual_seed(c.seed)
        metric = CriticalSampleRatio().to(ctx.device)
        for batch in ctx.batches(c.split, self.idx, c.batch_size):
            metric.update(net, batch["x"], alpha, beta, r, c.max_iter, generator=gen)
        return {f"csr/{c.split}": metric.compute()}


register_metric(CSRMetric)
