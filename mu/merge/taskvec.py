"""``linear`` and the task-vector family (task arithmetic, TIES, DARE, breadcrumbs, DELLA, SCE), computed by
``mu`` chunk by chunk on any device, in bounded memory.

They compute what mergekit 0.1.5's ``linear`` and ``GeneralizedTaskArithmeticMerge``
compute (tests compare them), without its stacked copies of every task vector:

* ``linear``: θ = Σ w_i θ_i / Σ w_i, accumulated in place in float32.
* task vectors: δ_i = θ_i − θ_base is sparsified (``density``; optionally
  rescaled to its original L1 norm), multiplied by w_i and combined; with
  ``consensus`` (TIES) only the entries whose sign agrees with the sign of
  Σ w_i δ_i count, and the sum is divided by the weights of the agreeing
  sources (else by Σ w_i); then θ = θ_base + λ · that.

Per tensor, ``prepare`` (a first pass over each source) finds what its sparsification needs
for the whole tensor (magnitude ranks: a k-th-value threshold found by an
in-place ``numpy.partition`` on the CPU or a sort on a GPU; DARE: its random
mask; the L1 norms for ``rescale``); ``apply`` then merges every row chunk of at most ``chunk_elements`` elements
(``mu.merge.stream`` reads the inputs and writes the output). The scratch is the base tensor, one
magnitude buffer (or N one-byte DARE masks) and N chunks, so memory no longer
grows with N times the largest tensor. Results do not depend on the chunk
size (tested bit for bit) and equal mergekit's to float32 rounding except for
which entries *tied* at a magnitude threshold survive: ``mu`` keeps the lowest
indices among them, mergekit whichever its unstable sort puts first.
DARE's masks come from one seeded ``numpy`` PCG64 stream per (tensor,
source), drawn on the CPU whatever the device, so a merge is reproducible,
independent of chunking, of the order of the sources and of the device.

DELLA (``sparsify="magprune"``, mergekit's ``della_magprune``): within each row
(along dim 1; a vector is one row) the entry of ascending-|δ| rank r of d keeps
with probability p = density − ε + 2ε · r / (d − 1) (a one-entry row: p = density;
mergekit fails there), drawn as DARE's masks are (u < p, u from the same seeded
stream; equal magnitudes ranked by index), then rescaled to the tensor's L1 norm
as mergekit does (not the paper's 1/p per entry). Its first pass ranks the rows
chunk by chunk (on the CPU by one SIMD sort of packed (|δ| bits, index) keys per row,
``masks.row_ranks``; scratch: ~30 bytes per chunk element), so its peak per tensor is
DARE's: the base, one source and N one-byte masks.
SCE (``sparsify="variance"``, ``weighting="energy"``, mergekit's ``sce``): one mask
for all sources keeps the ``density`` fraction of the entries of non-zero variance
across the task vectors with the largest variance (mergekit's ``select_topk``);
each source's weight is the mean square of its masked task vector, normalised to
sum 1 (uniform when that sum is below 1e-6: the given weights are not used); the
sign is elected on the unweighted sum of the masked task vectors and the agreeing
sources' weights are the divisor (clamped at 1e-6). Three passes per tensor: the
variance (into a whole-tensor float32 buffer for its k-th-value threshold), the
mask (one byte per entry) with the weights, the merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mu.merge import masks, stream

StateDict = dict[str, torch.Tensor]
SPARSIFY = ("none", "magnitude", "random", "breadcrumbs", "magprune", "variance")
WEIGHTING = ("given", "energy")
SCE_EPS = 1e-6  # mergekit's sce: uniform weights below this sum; the divisor's clamp


def linear(xs: torch.Tensor, b: torch.Tensor | None, w: list[float], **_: Any) -> torch.Tensor:
    """Weighted mean of the parameters: θ = Σ w_i θ_i / Σ w_i (the base is not used).

    Computed in float32 (``out = w_0 θ_0``, then ``out.add_(θ_i, alpha=w_i)``); a test checks it equals
    mergekit's ``linear`` to 1e-6.
    """
    total = float(sum(w))
    acc = xs[0].mul_(w[0] / total)
    for i in range(1, len(w)):
        acc.add_(xs[i], alpha=w[i] / total)
    return acc


def setup(
    names: list[str],
    w: list[float],
    base: Any,
    *,
    sparsify: str = "none",
    weighting: str = "given",
    density: float = 1.0,
    epsilon: float = 0.15,
    **_: Any,
) -> dict[str, Any]:
    """Checks of a task-vector merge, and the weights as mergekit rounds them (float32) with their divisor."""
    if base is None:
        raise ValueError("task-vector methods need the base (pretrained) state dict")
    if sparsify not in SPARSIFY:
        raise ValueError(f"unknown sparsify {sparsify!r}; valid: {list(SPARSIFY)}")
    if weighting not in WEIGHTING:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {list(WEIGHTING)}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if (
        sparsify == "magprune"
        and density < 1.0
        and not (epsilon >= 0 and 0 < density - epsilon and density + epsilon < 1)
    ):
        raise ValueError(
            f"epsilon={epsilon} with density={density}: epsilon must be >= 0 and density ± epsilon in (0, 1)"
        )
    w32 = torch.tensor(w, dtype=torch.float32)  # mergekit's float32 weights
    w_sum = float(w32.sum())
    return {"names": names, "w32": w32.tolist(), "divisor": 1.0 if abs(w_sum) < 1e-8 else w_sum}


def _select_calculate(
    t: stream.Tensor, base_t: torch.Tensor, scratch: tuple[torch.Tensor, torch.Tensor], *, density: float, energy: bool
) -> tuple[torch.Tensor | None, list[float] | None]:
    """SCE's select and calculate steps for one tensor: the mask shared by all sources (None: keep all) and
    the energy weights (None unless ``energy``)."""
    n = t.n
    ranks = None
    if density < 1.0:  # pass 1: the variance across the task vectors, its k-th-value threshold
        var = torch.empty(base_t.numel(), device=t.device)
        for at, xs, b in t.chunks():
            var[at.flat] = torch.var(xs.sub_(b), dim=0, unbiased=False)
        ranks = masks.Ranks(var, 0, int(int(torch.count_nonzero(var)) * density))
        del var
    if ranks is None and not energy:
        return None, None
    keep = torch.empty(base_t.numel(), dtype=torch.bool) if ranks is not None else None
    sq = torch.zeros(n, dtype=torch.float64)
    for at, ds, b in t.chunks():  # pass 2: the mask (the same variance, recomputed), the masked squares
        ds.sub_(b)
        if ranks is not None:
            v = torch.var(ds, dim=0, unbiased=False)
            ranks.apply(v, scratch[0][: v.numel()], scratch[1][: v.numel()])
            kept = v > 0  # kept variances are at least the k-th largest, which is positive
            keep[at.flat] = kept.cpu()
            ds.mul_(kept)
        if energy:
            sq += torch.stack([torch.linalg.vecdot(d, d).double() for d in ds]).cpu()
    if not energy:
        return keep, None
    means = sq / max(base_t.numel(), 1)
    total = float(means.sum())
    return keep, [1.0 / n] * n if abs(total) < SCE_EPS else (means / total).tolist()


def prepare(
    t: stream.Tensor,
    w: list[float],
    *,
    names: list[str],
    w32: list[float],
    divisor: float,
    sparsify: str = "none",
    weighting: str = "given",
    density: float = 1.0,
    gamma: float = 0.01,
    epsilon: float = 0.15,
    rescale: bool = False,
    seed: int = 42,
    **_: Any,
) -> dict[str, Any]:
    """Per tensor, what each source's sparsification needs of the whole tensor (ranks, DARE / DELLA masks,
    rescale factors; SCE's shared mask and energy weights), the weights it is merged with, reused buffers."""
    dev, shape = t.device, t.shape
    base_t = t.whole(None, keep=True)  # read once; the chunks of the base are its views
    mixed, div, sign, mag, ind = (torch.empty(t.size, device=dev) for _ in range(5))
    bufs = {"mixed": mixed, "div": div, "sign": sign, "mag": mag, "ind": ind}
    wt, dv = w32, divisor
    energy = weighting == "energy"
    if sparsify == "variance" or energy:  # SCE: one mask for all sources, weights from the task vectors
        keep, energy_w = _select_calculate(
            t, base_t, (mag, ind), density=density if sparsify == "variance" else 1.0, energy=energy
        )
        states = [{"scale": 1.0, **({"keep": keep} if keep is not None else {})} for _ in names]
        if energy:
            wt, dv = energy_w, 1.0
    elif sparsify == "none":
        states = [{"scale": 1.0} for _ in names]
    else:  # each source read whole into one reused buffer (fresh multi-megabyte tensors cost page faults)
        theta_buf = (
            torch.empty(base_t.numel(), device=dev) if density < 1.0 and (sparsify != "random" or rescale) else None
        )
        states = [
            masks.prepare(
                sparsify,
                None if theta_buf is None else t.whole(i, out=theta_buf),
                base_t,
                shape,
                density=density,
                gamma=gamma,
                epsilon=epsilon,
                rescale=rescale,
                rng=masks.source_rng(seed, t.key, name),
                step=t.step,
                scratch=ind,
            )
            for i, name in enumerate(names)
        ]
        del theta_buf
    return {"states": states, "wt": wt, "dv": dv, "bufs": bufs}


def apply(
    xs: torch.Tensor,
    b: torch.Tensor,
    w: list[float],
    *,
    at: stream.At,
    w32: list[float],
    divisor: float,
    states: list[dict] | None = None,
    wt: list[float] | None = None,
    dv: float | None = None,
    bufs: dict[str, torch.Tensor] | None = None,
    consensus: bool = False,
    weighting: str = "given",
    lambda_: float = 1.0,
    **_: Any,
) -> torch.Tensor:
    """θ_base + λ · (weighted, sparsified, optionally sign-elected) mean of the task vectors of one chunk;
    without ``prepare``'s state (``states``, ``wt``, ``dv``, ``bufs``): nothing dropped, setup's weights."""
    m = b.numel()
    if states is None:
        states, wt, dv = [{"scale": 1.0}] * len(xs), w32, divisor
    if bufs is None:
        bufs = {k: torch.empty(m, device=b.device) for k in ("mixed", "div", "sign", "mag", "ind")}
    where = at.flat
    mag, ind = bufs["mag"], bufs["ind"]
    energy = weighting == "energy"
    deltas = [masks.sparsified(xs[i].sub_(b), state, where, mag, ind) for i, state in enumerate(states)]
    if consensus and energy:  # SCE elects the sign on the unweighted sum
        sign = bufs["sign"][:m].copy_(deltas[0])
        for d in deltas[1:]:
            sign.add_(d)
        sign.sign_().add_(0.5).sign_()
    for i, d in enumerate(deltas):
        d.mul_(wt[i])
    mixed = (
        bufs["mixed"][:m].copy_(deltas[0])
        if len(deltas) == 1
        else torch.add(deltas[0], deltas[1], out=bufs["mixed"][:m])
    )
    for d in deltas[2:]:
        mixed.add_(d)
    if consensus:  # keep the entries whose sign agrees with sign(Σ w_i δ_i) (>= 0 counts as +)
        if not energy:
            sign = torch.sign(mixed, out=bufs["sign"][:m]).add_(0.5).sign_()  # +1 / -1, zero counted as +
        div, ind = bufs["div"][:m].zero_(), ind[:m]
        mixed.zero_()
        for i, d in enumerate(deltas):
            d.mul_(sign)  # > 0 where δ_i has the majority's sign (zeros never agree)
            div.add_(torch.gt(d, 0.0, out=ind), alpha=wt[i])  # 1.0 where it agrees: one float comparison
            mixed.add_(d.clamp_min_(0.0))
        if energy:
            div.clamp_min_(SCE_EPS)  # mergekit's sce
        else:
            div.add_(torch.sign(div, out=ind).neg_().add_(1.0))  # no agreeing source: divide by 1
        mixed.mul_(sign).div_(div)
    else:
        mixed.div_(dv)
    if lambda_ != 1:
        mixed.mul_(lambda_)
    return mixed.add_(b)


def mean(xs: torch.Tensor, b: torch.Tensor, w32: list[float], divisor: float, lambda_: float) -> torch.Tensor:
    """``apply`` without sparsification or consensus, in place in ``xs``: θ_base + λ · Σ w_i δ_i / divisor
    (the same operations, so the same numbers; the spectral methods' tensors that are not matrices)."""
    for i, x in enumerate(xs):
        x.sub_(b).mul_(w32[i])
    mixed = xs[0]
    for x in xs[1:]:
        mixed.add_(x)
    mixed.div_(divisor)
    if lambda_ != 1:
        mixed.mul_(lambda_)
    return mixed.add_(b)


def task_vectors(
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    weights: Mapping[str, float],
    base: Mapping[str, torch.Tensor] | None = None,
    **knobs: Any,
) -> dict[str, torch.Tensor]:
    """θ_base + λ · (weighted, optionally sparsified and sign-elected) mean of task vectors, any ``sparsify``
    and ``consensus`` (the catalog's methods fix them): ``knobs`` as ``prepare`` and ``apply`` take them,
    plus ``device`` and ``chunk_elements``.

    ``sparsify``: keep a ``density`` fraction of each task vector by magnitude
    (TIES), at random (DARE, seeded by ``seed``, the tensor and the source's
    name), by magnitude after dropping the top ``gamma`` outliers
    (breadcrumbs), at random with probabilities density ± ``epsilon`` by
    magnitude rank within each row (DELLA's MAGPRUNE, seeded as DARE), or one
    mask for all sources by the variance across them (SCE's select).
    ``consensus``: TIES sign election (sum rule). ``weighting``: ``"given"`` (the
    weights) or ``"energy"`` (SCE: per tensor, each masked task vector's mean
    square, the sign elected on the unweighted sum). ``rescale``: rescale each
    kept task vector to its original L1 norm (as mergekit does).
    """
    from mu.merge import catalog

    return stream.run(catalog.get("task_arithmetic"), state_dicts, weights, base, **knobs)
