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

Per tensor, a first pass over each source finds what its sparsification needs
for the whole tensor (magnitude ranks: a k-th-value threshold found by an
in-place ``numpy.partition`` on the CPU or a sort on a GPU; DARE: its random
mask; the L1 norms for ``rescale``); a second pass then reads every input in
row chunks of at most ``chunk_elements`` elements (``mu.merge.chunks``) and
writes the output chunk by chunk. The scratch is the base tensor, one
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
from typing import Literal

import torch

from mu.merge import chunks, masks

StateDict = dict[str, torch.Tensor]
SPARSIFY = ("none", "magnitude", "random", "breadcrumbs", "magprune", "variance")
WEIGHTING = ("given", "energy")
SCE_EPS = 1e-6  # mergekit's sce: uniform weights below this sum; the divisor's clamp


@torch.no_grad()
def linear(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """Weighted mean of the parameters: θ = Σ w_i θ_i / Σ w_i (the base is not used).

    Computed in float32, one chunk at a time (``out = w_0 θ_0``, then
    ``out.add_(θ_i, alpha=w_i)``); a test checks it equals mergekit's ``linear`` to 1e-6.
    """
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    total = float(sum(weights.values()))
    names = list(state_dicts)
    first = state_dicts[names[0]]
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in first:
            out[key] = _linear_tensor(state_dicts, weights, names, total, key, dev, step)
    return out


def _linear_tensor(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    names: list[str],
    total: float,
    key: str,
    dev: torch.device,
    step: int,
) -> torch.Tensor:
    first = state_dicts[names[0]]
    shape, dtype = chunks.shape_dtype(first, key)
    res = torch.empty(shape, dtype=dtype)
    dst = res.reshape(-1)
    spans = chunks.spans(shape, step)
    size = chunks.flat(shape, spans[0]).stop
    acc_buf, tmp_buf = (torch.empty(size, device=dev) for _ in range(2))
    for span in spans:
        acc = chunks.read(first, key, span, dev, out=acc_buf).mul_(weights[names[0]] / total)
        for name in names[1:]:
            acc.add_(chunks.read(state_dicts[name], key, span, dev, out=tmp_buf), alpha=weights[name] / total)
        dst[chunks.flat(shape, span)] = acc
    return res


@torch.no_grad()
def task_vectors(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    sparsify: Literal["none", "magnitude", "random", "breadcrumbs", "magprune", "variance"] = "none",
    consensus: bool = False,
    weighting: Literal["given", "energy"] = "given",
    density: float = 1.0,
    gamma: float = 0.01,
    epsilon: float = 0.15,
    lambda_: float = 1.0,
    rescale: bool = False,
    seed: int = 42,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """θ_base + λ · (weighted, optionally sparsified and sign-elected) mean of task vectors.

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
    ``device`` (None: CUDA when available) and ``chunk_elements`` set where and in
    what pieces it computes, not the result (to float32 rounding).
    """
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
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    names = list(state_dicts)
    w32 = torch.tensor([float(weights[name]) for name in names], dtype=torch.float32)  # mergekit's float32 weights
    w, w_sum = w32.tolist(), float(w32.sum())
    divisor = 1.0 if abs(w_sum) < 1e-8 else w_sum  # mergekit's divisor without consensus
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in base:
            out[key] = _task_vector_tensor(
                state_dicts,
                names,
                w,
                divisor,
                base,
                key,
                dev,
                step,
                sparsify=sparsify,
                consensus=consensus,
                weighting=weighting,
                density=density,
                gamma=gamma,
                epsilon=epsilon,
                lambda_=lambda_,
                rescale=rescale,
                seed=seed,
            )
    return out


def _select_calculate(
    state_dicts: Mapping[str, StateDict],
    names: list[str],
    key: str,
    base_t: torch.Tensor,
    shape: tuple[int, ...],
    spans: list,
    dev: torch.device,
    bufs: list[torch.Tensor],
    scratch: tuple[torch.Tensor, torch.Tensor],
    *,
    density: float,
    energy: bool,
) -> tuple[torch.Tensor | None, list[float] | None]:
    """SCE's select and calculate steps for one tensor: the mask shared by all sources (None: keep all) and
    the energy weights (None unless ``energy``)."""

    def deltas(span: chunks.Span) -> tuple[slice, list[torch.Tensor]]:
        where = chunks.flat(shape, span)
        return where, [
            chunks.read(state_dicts[name], key, span, dev, out=buf).sub_(base_t[where])
            for name, buf in zip(names, bufs)
        ]

    ranks = None
    if density < 1.0:  # pass 1: the variance across the task vectors, its k-th-value threshold
        var = torch.empty(base_t.numel(), device=dev)
        for span in spans:
            where, ds = deltas(span)
            var[where] = torch.var(torch.stack(ds), dim=0, unbiased=False)
        ranks = masks.Ranks(var, 0, int(int(torch.count_nonzero(var)) * density))
        del var
    if ranks is None and not energy:
        return None, None
    keep = torch.empty(base_t.numel(), dtype=torch.bool) if ranks is not None else None
    sq = torch.zeros(len(names), dtype=torch.float64)
    for span in spans:  # pass 2: the mask (the same variance, recomputed), the masked task vectors' squares
        where, ds = deltas(span)
        if ranks is not None:
            v = torch.var(torch.stack(ds), dim=0, unbiased=False)
            ranks.apply(v, scratch[0][: v.numel()], scratch[1][: v.numel()])
            kept = v > 0  # kept variances are at least the k-th largest, which is positive
            keep[where] = kept.cpu()
            ds = [d.mul_(kept) for d in ds]
        if energy:
            sq += torch.stack([torch.linalg.vecdot(d, d).double() for d in ds]).cpu()
    if not energy:
        return keep, None
    means = sq / max(base_t.numel(), 1)
    total = float(means.sum())
    return keep, [1.0 / len(names)] * len(names) if abs(total) < SCE_EPS else (means / total).tolist()


def _task_vector_tensor(
    state_dicts: Mapping[str, StateDict],
    names: list[str],
    w: list[float],
    divisor: float,
    base: StateDict,
    key: str,
    dev: torch.device,
    step: int,
    *,
    sparsify: str,
    consensus: bool,
    weighting: str,
    density: float,
    gamma: float,
    epsilon: float,
    lambda_: float,
    rescale: bool,
    seed: int,
) -> torch.Tensor:
    shape, dtype = chunks.shape_dtype(base, key)
    whole = None if not shape else (0, shape[0])
    base_t = chunks.read(base, key, whole, dev)
    spans = chunks.spans(shape, step)
    size = chunks.flat(shape, spans[0]).stop
    bufs = [torch.empty(size, device=dev) for _ in names]  # one chunk per source, reused: no allocation per chunk
    mixed_buf, div_buf, sign_buf, mag_buf, ind_buf = (torch.empty(size, device=dev) for _ in range(5))
    energy = weighting == "energy"
    if sparsify == "variance" or energy:  # SCE: one mask for all sources, weights from the task vectors
        keep, energy_w = _select_calculate(
            state_dicts,
            names,
            key,
            base_t,
            shape,
            spans,
            dev,
            bufs,
            (mag_buf, ind_buf),
            density=density if sparsify == "variance" else 1.0,
            energy=energy,
        )
        states = [{"scale": 1.0, **({"keep": keep} if keep is not None else {})} for _ in names]
        if energy:
            w, divisor = energy_w, 1.0
    elif sparsify == "none":
        states = [{"scale": 1.0} for _ in names]
    else:  # each source read whole into one reused buffer (fresh multi-megabyte tensors cost page faults)
        theta_buf = (
            torch.empty(base_t.numel(), device=dev) if density < 1.0 and (sparsify != "random" or rescale) else None
        )
        states = [
            masks.prepare(
                sparsify,
                None if theta_buf is None else chunks.read(state_dicts[name], key, whole, dev, out=theta_buf),
                base_t,
                shape,
                density=density,
                gamma=gamma,
                epsilon=epsilon,
                rescale=rescale,
                rng=masks.source_rng(seed, key, name),
                step=step,
                scratch=ind_buf,
            )
            for name in names
        ]
        del theta_buf
    res = torch.empty(shape, dtype=dtype)
    dst = res.reshape(-1)
    for span in spans:
        where = chunks.flat(shape, span)
        b = base_t[where]
        m = b.numel()
        deltas = [
            masks.sparsified(
                chunks.read(state_dicts[name], key, span, dev, out=buf).sub_(b), state, where, mag_buf, ind_buf
            )
            for name, state, buf in zip(names, states, bufs)
        ]
        if consensus and energy:  # SCE elects the sign on the unweighted sum
            sign = sign_buf[:m].copy_(deltas[0])
            for d in deltas[1:]:
                sign.add_(d)
            sign.sign_().add_(0.5).sign_()
        for i, d in enumerate(deltas):
            d.mul_(w[i])
        mixed = (
            mixed_buf[:m].copy_(deltas[0]) if len(deltas) == 1 else torch.add(deltas[0], deltas[1], out=mixed_buf[:m])
        )
        for d in deltas[2:]:
            mixed.add_(d)
        if consensus:  # keep the entries whose sign agrees with sign(Σ w_i δ_i) (>= 0 counts as +)
            if not energy:
                sign = torch.sign(mixed, out=sign_buf[:m]).add_(0.5).sign_()  # +1 / -1, zero counted as +
            div, ind = div_buf[:m].zero_(), ind_buf[:m]
            mixed.zero_()
            for i, d in enumerate(deltas):
                d.mul_(sign)  # > 0 where δ_i has the majority's sign (zeros never agree)
                div.add_(torch.gt(d, 0.0, out=ind), alpha=w[i])  # 1.0 where it agrees: one float comparison
                mixed.add_(d.clamp_min_(0.0))
            if energy:
                div.clamp_min_(SCE_EPS)  # mergekit's sce
            else:
                div.add_(torch.sign(div, out=ind).neg_().add_(1.0))  # no agreeing source: divide by 1
            mixed.mul_(sign).div_(div)
        else:
            mixed.div_(divisor)
        if lambda_ != 1:
            mixed.mul_(lambda_)
        dst[where] = mixed.add_(b)
    return res
