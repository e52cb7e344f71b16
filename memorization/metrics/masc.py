"""MASC, the Minimum Angle Subspace Classifier (*Decoding Generalization from Memorization in
Deep Neural Networks*, Sec. 3.1, Algorithms 1-3), on the outputs x of one layer.

Fit (Algs. 2-3). Every training output x_i with label y_i is added together with its negation
-x_i, then each class's subspace S_k is the span of the leading principal components of its
samples. With the negations a class's data has mean exactly 0, so its (centered) PCA is the
eigendecomposition of the *uncentered* second-moment (Gram) matrix

    G_k = sum_{i: y_i = k} x_i x_i^T     (D x D; with the negations the PCA covariance is
                                          2 G_k / 2 n_k: the factor changes no eigenvector)

With eigenvalues l_1 >= l_2 >= ... >= 0 and eigenvectors u_1, u_2, ..., S_k keeps the first r_k,
the smallest r with  (l_1 + ... + l_r) / (l_1 + ... + l_D) >= variance  (the paper: 0.99), and
is represented by the orthonormal basis U_k = [u_1 ... u_{r_k}] (D x r_k).

Predict (Alg. 1). The projection of x onto S_k is P_k x = U_k U_k^T x, and the angle theta_k
between x and P_k x has  cos theta_k = <x, P_k x> / (||x|| ||P_k x||) = ||P_k x|| / ||x||  (P_k is
an orthogonal projector, so <x, P_k x> = ||P_k x||^2), and ||P_k x|| = ||U_k^T x||. Since cos is
decreasing on [0, pi/2], argmin_k theta_k = argmax_k ||U_k^T x|| / ||x||; the score returned is
its square, cos^2 theta_k = ||U_k^T x||^2 / ||x||^2 in [0, 1] (same argmax, no square root).

Readings and edge cases (not in the paper):

- A zero vector (||x|| = 0, e.g. every ReLU of the layer off) has no angle to anything. Its scores
  are all 0 and :func:`masc_predict` returns -1 for it, which equals no label, so accuracies
  count it as misclassified.
- A class without training samples (or whose samples are all 0) has G_k = 0 and an empty
  subspace: 0 components and score 0 for every x. It is predicted only when every score of x is
  0, e.g. x orthogonal to every subspace; ties go to the lowest class index (torch.argmax).
- The explained share is measured against the trace of G_k (its eigenvalue sum, exactly: summed
  in float64 from the diagonal), not against the sum of the computed eigenvalues, so a float32
  eigensolver's inaccuracy in the small eigenvalues cannot shrink the denominator (dropping them
  from it undercounted components on flat ReLU spectra: 60 instead of 85 of 512 at 99%).
- The count must not depend on the precision the Gram matrix is decomposed in: it equals the
  count of a float64 SVD of the class's samples (with their negations). float32 eigh settles
  most classes (its partial sums are within D * eps * l_1 of the exact ones, which the threshold
  must clear on both sides); the others are refitted in float64 (:func:`fit_subspaces`). An
  earlier reading capped the count at a float32 "numerical rank" (eigenvalues above
  l_1 * D * eps(float32)); that dropped real components: a 1024-wide layer with one dominant
  direction over a flat tail holding 1.5% of the variance kept 1 component instead of 55.
  Eigenvalues at or below  l_1 * D * eps(float64)  count as 0, so ``variance=1`` keeps the
  numerical rank.
- The threshold is compared with a relative slack of 1e-10, so a cumulative ratio that is meant
  to equal ``variance`` exactly (90/100 against 0.9) is not lost to float64 rounding.
- A class whose float32 eigh fails is refitted in float64 too, by the same path. On the late
  layers of a memorizing MLP a class's Gram matrix can be of rank about 1 (eigenvalues 1414.6,
  0.27, 0.026, ... over a tail that is float32 rounding, with the class's dead units as zero
  rows), and float32 ``eigh`` (MKL's, with one thread or two) raises "failed to converge" on it.
  The batched call stays the common path; only when it raises is each class retried alone, and a
  class that fails again, or whose eigenvalues are not finite, counts as unsettled: the other
  classes keep their float32 results. float64 decomposes these matrices; a class it fails on
  too (in practice only a Gram matrix holding inf or NaN) stops the fit with a one-line
  :class:`~memorization.base.errors.ConfigError` naming the layer and the class. The sample route
  (already float64) raises the same error.

Memory. The Gram route holds K * D^2 floats per layer and labelling (:func:`gram_bytes`; 3.5 GiB
for K = 100 classes of a 3072-wide layer, 2 * 1024**3 bytes allowed by default); torchmetrics
keeps a zero copy of every state for ``reset()``, so the metric's resident size is about twice
that, and ``fit_subspaces`` needs about as much again for ``eigh`` (in the Gram's dtype). For wide
layers, :func:`fit_subspaces_from_samples` is the dual (sample-space) PCA: for a class with
n_k < D samples, stacked as the rows of X_k, it eigendecomposes the n_k x n_k kernel
X_k X_k^T = V L V^T, which has the same nonzero eigenvalues as G_k = X_k^T X_k, and maps the
eigenvectors back, U_k = X_k^T V L^(-1/2) (then G_k U_k = U_k L and U_k^T U_k = I). It spans the
same subspace as the Gram route, with memory O(N * D + max_k min(n_k, D)^2) (a class with
n_k >= D uses its D x D Gram matrix instead), but needs the samples themselves, so it does not
stream: it fits a probe set held in memory.

Every function takes x as [N, D] (or [N, ...], flattened to [N, D]) and works on x's device.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Callable

import torch

from memorization.base.errors import ConfigError, shown

_log = logging.getLogger(__name__)

MAX_GRAM_BYTES = 2 * 1024**3
"""Default limit on one MASCSubspaces' Gram matrices (K * D^2 * bytes per element)."""

_SLACK = 1e-10  # relative slack of the explained-variance comparison (float64 rounding)


def gram_bytes(num_classes: int, dim: int, dtype_bytes: int = 4) -> int:
    """Bytes of the K Gram matrices of a ``dim``-wide layer: K * D^2 * ``dtype_bytes``."""
    return int(num_classes) * int(dim) ** 2 * int(dtype_bytes)


def _check_variance(variance) -> float:
    if (isinstance(variance, bool) or not isinstance(variance, numbers.Real)
            or not 0 < variance <= 1):
        raise ConfigError(f"metrics.masc.variance={shown(variance)} is outside (0, 1]; it is "
                          "the fraction of each class's variance its kept principal components "
                          "explain (the paper uses 0.99)")
    return float(variance)


def _flat(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2:
        raise ValueError(f"MASC expects layer outputs [N, D] or [N, ...], got {tuple(x.shape)}")
    return x.flatten(1) if x.dim() > 2 else x


def _float_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The promoted dtype, at least float32 (half-precision activations are accumulated wider)."""
    out = torch.float32
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out


def _class_rows(labels: torch.Tensor, n: int, num_classes: int) -> list[torch.Tensor]:
    """Per class, the indices of its samples (one sort and one host sync, no per-sample loop)."""
    if labels.dim() != 1 or labels.numel() != n:
        raise ValueError(f"labels must be [N] with N={n}, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if n == 0:
        return [labels.new_empty(0, dtype=torch.long)] * num_classes
    lo, hi = (int(v) for v in labels.aminmax())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got values in [{lo}, {hi}]")
    counts = torch.bincount(labels, minlength=num_classes)
    order = torch.argsort(labels, stable=True)
    return list(order.split(counts.tolist()))


def _add_class_grams(out: torch.Tensor, x: torch.Tensor, labels: torch.Tensor) -> None:
    """out[k] += X_k^T X_k in place (a loop over the classes; no [N, D, D] temporary)."""
    for k, idx in enumerate(_class_rows(labels, x.shape[0], out.shape[0])):
        if idx.numel():
            xk = x.index_select(0, idx).to(out.dtype)
            out[k].addmm_(xk.T, xk)


def _add_labelled_grams(out: torch.Tensor, x: torch.Tensor, labels: torch.Tensor) -> None:
    """out[j, k] += X_jk^T X_jk for each labelling j (columns of ``labels`` [N, L]); the rows on
    which every labelling agrees (the clean samples, when the labellings are the training and the
    true labels) are multiplied once and added to every labelling."""
    if labels.shape[1] == 1:
        _add_class_grams(out[0], x, labels[:, 0])
        return
    agree = (labels == labels[:, :1]).all(dim=1)
    shared = agree.nonzero().squeeze(1)
    for k, idx in enumerate(_class_rows(labels[shared, 0], shared.numel(), out.shape[1])):
        if idx.numel():
            xk = x.index_select(0, shared[idx]).to(out.dtype)
            out[:, k] += xk.T @ xk
    rest = (~agree).nonzero().squeeze(1)
    if rest.numel():
        for j in range(labels.shape[1]):
            _add_class_grams(out[j], x.index_select(0, rest), labels[rest, j])


def class_grams(x: torch.Tensor, labels: torch.Tensor, num_classes: int,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """G_k = sum_{i: y_i = k} x_i x_i^T for every class, [K, D, D], in ``dtype`` (default: x's
    floating dtype, at least float32). A class without samples gets a zero matrix."""
    x = _flat(x)
    dtype = dtype or _float_dtype(x.dtype)
    out = torch.zeros(num_classes, x.shape[1], x.shape[1], dtype=dtype, device=x.device)
    _add_class_grams(out, x, labels)
    return out


def _eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh. On a 2-core CPU, 10 x 512^2 float32 takes 0.18 s with 2 threads on an
    idle machine, 0.30 s with 1, but 3.9 s with 2 threads when another process holds a core
    (thread contention); we keep torch's thread setting, as for the training itself."""
    return torch.linalg.eigh(a)


def _eigh_each(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_eigh` of a batch [K, M, M] in one call; only when that raises (LAPACK's or
    cuSOLVER's "failed to converge", e.g. on a float32 Gram matrix of rank about 1), each
    matrix is decomposed alone, and one that fails again gets NaN eigenvalues (and zero
    eigenvectors), which :func:`_fit_classes` flags for the float64 refit."""
    try:
        return _eigh(a)
    except torch.linalg.LinAlgError:
        pass
    lam = a.new_full(a.shape[:-1], float("nan"))
    vec = torch.zeros_like(a)
    for k in range(a.shape[0]):  # a few calls, once per fit: only where the batch failed
        with contextlib.suppress(torch.linalg.LinAlgError):
            lam[k], vec[k] = _eigh(a[k])
    return lam, vec


def _no_eigh(name: str | None, c: int, a: torch.Tensor, what: str, fix: str) -> ConfigError:
    """The one-line error for class ``c``, whose ``what`` (``a``, float64) eigh cannot decompose
    in float64 either; it says whether ``a`` holds inf or NaN, the only cause seen."""
    cause = ("" if bool(torch.isfinite(a).all()) else
             ", which holds inf or NaN (the layer's outputs overflow or are NaN)")
    return ConfigError(f"MASC{f' {name}' if name else ''}: eigh cannot decompose class {c}'s "
                       f"{what} in float64{cause}; {fix}, or leave this layer out of "
                       "metrics.masc.layers")


def _classes(cs: list[int]) -> str:
    """``class 3`` or ``classes 1, 4``, for a log line."""
    return f"class{'es' if len(cs) > 1 else ''} {', '.join(map(str, cs))}"


def _n_keep(eigvals: torch.Tensor, variance: float, rel_tol: float,
            total: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Components kept per row of descending eigenvalues [..., M] (float64), and whether that
    count is settled despite the eigenvalues' rounding.

    The count is the smallest r whose cumulative share of ``total`` (the trace of G, [...];
    default the eigenvalues' sum) reaches ``variance``, at most the numerical rank (the
    eigenvalues above ``tol = rel_tol * l_1``); 0 where every eigenvalue is 0. ``tol`` is also
    the allowance for the rounding of a partial sum l_1 + ... + l_r: the count is *settled*
    when both partial sums on either side of the threshold clear it by more than ``tol``, and
    the components it needs are all above the numerical rank's floor. An unsettled count is
    still returned; :func:`fit_subspaces` refits such classes in float64."""
    lam = eigvals.clamp_min(0)
    if lam.shape[-1] == 0:  # every unit dead: nothing to keep, nothing to doubt
        zeros = lam.new_zeros(lam.shape[:-1], dtype=torch.long)
        return zeros, zeros == 0
    tol = lam[..., :1] * rel_tol
    rank = (lam > tol).sum(-1)
    total = lam.sum(-1) if total is None else total.to(lam.dtype)
    total = torch.where(total > 0, total, torch.ones_like(total))[..., None]
    cum = lam.cumsum(-1)
    goal = total * variance * (1 - _SLACK)
    r = ((cum < goal).sum(-1) + 1).clamp_max(lam.shape[-1])
    above = cum.gather(-1, (r - 1).clamp_min(0)[..., None]) - goal  # share at r over the goal
    below = goal - torch.where(r[..., None] > 1, cum.gather(-1, (r - 2).clamp_min(0)[..., None]),
                               torch.zeros_like(goal))  # share at r - 1 under it
    settled = ((above >= tol) & (below > tol))[..., 0] & (r <= rank) | (rank == 0)
    return torch.minimum(r, rank), settled


def _fit_classes(grams: torch.Tensor, variance: float) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """eigh of every class's Gram matrix in its own dtype, restricted to the live units:
    (eigenvectors [K, D_live, D_live] descending, counts [K], settled [K], live unit indices,
    failed [K]: eigh raised on the class or gave eigenvalues that are not finite; such a class is
    not settled, and its eigenvectors and count are meaningless)."""
    d = grams.shape[-1]
    # A unit that is 0 on every sample (a dead ReLU; half of a deep layer's units can be) has a
    # zero row and column in every G_k (|G_ij|^2 <= G_ii G_jj), so no eigenvector with a nonzero
    # eigenvalue touches it: the eigendecomposition of the live units' block, padded with zero
    # rows, is exact, and eigh's cost falls with the cube of the live fraction.
    diag = torch.diagonal(grams, dim1=-2, dim2=-1)
    live = (diag > 0).any(0).nonzero().squeeze(1)
    sub = grams if live.numel() == d else grams[:, live][:, :, live]
    lam, vec = _eigh_each(sub)  # ascending; reads the lower triangle
    lam, vec = lam.flip(-1).double(), vec.flip(-1)
    failed = ~torch.isfinite(lam).all(-1)
    # the share is of the trace, summed exactly from the diagonal: small eigenvalues are real
    # variance even where eigh's relative accuracy is poor, and must stay in the denominator
    trace = diag.double().sum(-1)
    # Partial sums of eigh's eigenvalues carry rounding of about eps * l_1 per unit of size:
    # measured on flat-tailed, geometric, rank-deficient, near-duplicate and ReLU spectra (D up
    # to 1024), float32's error up to the 99% crossing stayed below 0.06 * D * eps * l_1, so the
    # allowance D * eps * l_1 leaves a factor of 17.
    n_comp, settled = _n_keep(lam, variance, max(live.numel(), 1) * torch.finfo(grams.dtype).eps,
                              trace)
    return vec, n_comp, settled & ~failed, live, failed


def fit_subspaces(grams: torch.Tensor, variance: float = 0.99, *,
                  samples: tuple[torch.Tensor, torch.Tensor] | None = None,
                  reduce: Callable[[torch.Tensor], object] | None = None,
                  name: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's subspace from its Gram matrix (Alg. 3 with the module's reading).

    Returns ``bases`` [K, D, R] in ``grams``' dtype, the orthonormal eigenvectors of G_k in
    decreasing order of eigenvalue, R = max_k r_k, with the columns from r_k on set to 0 (so a
    padded basis scores exactly as its first r_k columns), and ``n_components`` [K] (long, r_k).

    Exactness. The counts equal those of a float64 SVD of each class's samples (with their
    negations), whatever the spectrum: eigh runs in the Gram's dtype, and a class whose count
    that precision cannot settle (the explained share crosses ``variance`` within rounding, or
    needs eigenvalues below the numerical rank's floor: a long flat tail under one dominant
    direction, the spectrum of ReLU layers with a large common mean) is refitted in float64,
    with one log line naming ``name``'s classes. The refit uses a float64 Gram of ``samples``
    (the layer's outputs [N, D] and their labels [N]) when given, else the Gram itself in
    float64: then the float32 sums' own rounding (about 1e-7 of the trace, 50 times below
    eigh's) is the limit. Under DDP each rank holds its share of the samples: ``reduce`` sums
    the float64 Grams over ranks in place (every rank refits the same classes, since they all
    decide from the same all-reduced ``grams``).

    A class on which eigh fails in the Gram's dtype (see the module docstring) is refitted in
    float64 the same way, and named in the same log line; one on which float64 fails too (or a
    float64 ``grams`` one) raises a one-line :class:`ConfigError` naming ``name`` and the class.
    """
    variance = _check_variance(variance)
    if grams.dim() != 3 or grams.shape[1] != grams.shape[2] or not grams.is_floating_point():
        raise ValueError(f"grams must be a floating [K, D, D] tensor, got {grams.dtype} "
                         f"{tuple(grams.shape)}")
    k, d, _ = grams.shape
    vec, n_comp, settled, live, failed = _fit_classes(grams, variance)
    fix = "fit it by the sample route (metrics.masc.method=samples)"
    if grams.dtype == torch.float64:  # nothing wider to refit in
        redo, bad = [], failed.nonzero().squeeze(1).tolist()
        if bad:
            raise _no_eigh(name, bad[0], grams[bad[0]], "Gram matrix", fix)
    else:
        redo = (~settled).nonzero().squeeze(1).tolist()
    if redo:
        if samples is not None:
            x, labels = samples
            x = _flat(x)
            g64 = torch.zeros(len(redo), d, d, dtype=torch.float64, device=grams.device)
            rows = _class_rows(labels, x.shape[0], k)
            for i, c in enumerate(redo):
                xc = x.index_select(0, rows[c]).double()
                g64[i].addmm_(xc.T, xc)
            if reduce is not None:
                reduce(g64)
        else:
            g64 = grams[redo].double()
        vec64, n64, _, live64, failed64 = _fit_classes(g64, variance)
        bad = failed64.nonzero().squeeze(1).tolist()
        if bad:
            raise _no_eigh(name, redo[bad[0]], g64[bad[0]], "Gram matrix", fix)
        n_comp[redo] = n64
        broke = [c for c, f in zip(redo, failed[redo].tolist(), strict=True) if f]
        unsure = [c for c in redo if c not in broke]
        why = [f"float32 cannot settle the components of {_classes(unsure)} (the {variance:g} "
               "threshold lies within its rounding)"] if unsure else []
        why += [f"float32 eigh fails on {_classes(broke)} (e.g. a Gram matrix of rank about 1)"
                ] if broke else []
        _log.info("MASC%s: %s; refitted in float64%s", f" {name}" if name else "",
                  "; ".join(why), " from the layer's outputs" if samples is not None else "")
    r_max = int(n_comp.max()) if k else 0
    keep = torch.arange(r_max, device=grams.device) < n_comp[:, None]  # [K, R]
    bases = grams.new_zeros(k, d, r_max)
    r_live = min(r_max, vec.shape[-1])
    bases[:, live, :r_live] = (vec[..., :r_live] * keep[:, None, :r_live]).to(grams.dtype)
    for i, c in enumerate(redo):
        r = int(n64[i])
        bases[c] = 0
        bases[c, live64, :r] = vec64[i][:, :r].to(grams.dtype)
    return bases, n_comp


def fit_subspaces_from_samples(x: torch.Tensor, labels: torch.Tensor, num_classes: int,
                               variance: float = 0.99, name: str | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The same subspaces as ``fit_subspaces(class_grams(x, labels, K), variance)`` by the dual
    (sample-space) PCA, for layers too wide for K Gram matrices; see the module docstring.

    Works in float64; returns ``bases`` [K, D, R] in x's floating dtype (at least float32) and
    ``n_components`` [K], as :func:`fit_subspaces`. A class on which float64 eigh fails (or
    gives eigenvalues that are not finite) raises a one-line :class:`ConfigError` naming ``name``
    (the layer) and the class.
    """
    variance = _check_variance(variance)
    x = _flat(x)
    n, d = x.shape
    eps = torch.finfo(torch.float64).eps
    per_class: list[torch.Tensor] = []
    for c, idx in enumerate(_class_rows(labels, n, num_classes)):
        nk = idx.numel()
        if nk == 0:
            per_class.append(x.new_zeros(d, 0, dtype=torch.float64))
            continue
        xk = x.index_select(0, idx).double()
        small = nk < d
        try:
            lam, vec = _eigh(xk @ xk.T if small else xk.T @ xk)
        except torch.linalg.LinAlgError:  # reported below, as eigenvalues that are not finite
            lam, vec = xk.new_full((1,), float("nan")), xk.new_zeros(1, 1)
        lam, vec = lam.flip(-1), vec.flip(-1)
        r = _n_keep(lam, variance, max(nk, d) * eps, xk.square().sum())[0]
        r, finite = torch.stack([r, torch.isfinite(lam).all().long()]).tolist()  # one host sync
        if not finite:
            raise _no_eigh(name, c, xk, "samples", "fit it by its Gram matrices "
                           "(metrics.masc.method=gram)")
        u = xk.T @ (vec[:, :r] / lam[:r].sqrt()) if small else vec[:, :r]
        per_class.append(u)
    n_comp = torch.tensor([u.shape[1] for u in per_class], dtype=torch.long, device=x.device)
    r_max = int(n_comp.max()) if num_classes else 0
    bases = torch.zeros(num_classes, d, r_max, dtype=_float_dtype(x.dtype), device=x.device)
    for k, u in enumerate(per_class):
        bases[k, :, : u.shape[1]] = u
    return bases, n_comp


def flat_bases(bases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[K, D, R] -> (``flat`` [D, M], ``owner`` [M, K]): the basis vectors of every class side by
    side without the zero padding (M = sum_k r_k), and the 0/1 matrix that sums a class's
    squared projections. Compute once per fit and pass to :func:`masc_predict` when scoring
    many batches (one host sync, to find the padding)."""
    k, d, r = bases.shape
    flat = bases.permute(1, 0, 2).reshape(d, k * r)
    used = flat.abs().amax(0) > 0  # a basis vector has norm 1; padding columns are 0
    owner = torch.eye(k, dtype=bases.dtype, device=bases.device).repeat_interleave(r, dim=0)
    cols = used.nonzero().squeeze(1)
    return flat[:, cols].contiguous(), owner[cols]


def _projections(x: torch.Tensor, bases: torch.Tensor, flat=None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(||U_k^T x||^2 [N, K], ||x||^2 [N, 1], x == 0 [N]) in the promoted float dtype."""
    x = _flat(x)
    if bases.dim() != 3 or bases.shape[1] != x.shape[1]:
        raise ValueError(f"bases must be [K, D={x.shape[1]}, R], got {tuple(bases.shape)}")
    dtype = _float_dtype(x.dtype, bases.dtype)
    flat, owner = flat_bases(bases) if flat is None else flat
    x = x.to(dtype)
    sq_norm = x.square().sum(dim=1, keepdim=True)
    proj = (x @ flat.to(dtype)).square() @ owner.to(dtype)  # all classes in two products
    return proj, sq_norm, sq_norm[:, 0] == 0


def masc_scores(x: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """cos^2 of the angle between each x and its projection on each S_k: [N, K], in [0, 1]
    (= ||U_k^T x||^2 / ||x||^2; 0 for a zero x, never NaN)."""
    proj, sq_norm, zero = _projections(x, bases)
    return (proj / torch.where(zero[:, None], torch.ones_like(sq_norm), sq_norm)).clamp(0, 1)


def masc_predict(x: torch.Tensor, bases: torch.Tensor, flat=None) -> torch.Tensor:
    """Alg. 1: the class of the smallest angle, [N] long; -1 for a zero x (no angle).
    ``flat``: :func:`flat_bases` of ``bases``, if already computed. The argmax is taken over
    ||U_k^T x||^2, without dividing by the ||x||^2 that every class shares."""
    proj, _, zero = _projections(x, bases, flat)
    pred = proj.argmax(dim=1)
    return torch.where(zero, torch.full_like(pred, -1), pred)


def masc_accuracy(x: torch.Tensor, labels: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """Fraction of x whose MASC prediction is its label (float64; a zero x counts as wrong, an
    empty x gives NaN)."""
    hit = (masc_predict(x, bases) == labels).sum()
    return hit.double() / torch.tensor(labels.numel(), dtype=torch.float64, device=hit.device)
