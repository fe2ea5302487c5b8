"""Methods that choose, entry by entry, how much of each source's change to keep: ``nearswap``, ``ram``,
``ramplus_tl`` and ``arcee_fusion``, computed by ``mu`` chunk by chunk as mergekit 0.1.5 defines them.

* ``ram`` (Reinforced Agent Merging): task vectors δ_i = θ_i − θ_base; an entry
  counts for source i when |δ_i| > ``epsilon``; θ = θ_base + Σ_i (counted δ_i) / the
  number of sources counted there (an entry changed by one source keeps its change
  whole, a shared one is averaged). One pass; the weights are not used.
* ``ramplus_tl`` (RAM+, tensor-local): per tensor and source, ρ_i = (entries it
  shares with another source) / (entries only it changes, clamped at ``epsilon``),
  λ_i = 1 + ``r`` · clamp(ρ_i, 0, ``alpha``); its unique entries are scaled by λ_i,
  shared ones averaged as in ``ram``. Two passes (the counts, then the merge); the
  weights are not used.
* ``nearswap`` and ``arcee_fusion`` merge exactly two sources: the one with the larger
  weight (the first in the weights' order on a tie) plays mergekit's ``base`` a, the
  other b; the pretrained base is not used. ``nearswap``: θ = a + w (b − a) with
  w = clamp(``t`` / max(|a − b|, 1e-6), 0, 1) per entry (entries closer than ``t``
  are swapped to b). One pass.
* ``arcee_fusion``: importance = |b − a| · KL(softmax(b) ‖ softmax(a)) along the last
  dim (a vector is one row; softmax + 1e-8); keep b's change where the importance is
  at least median + 1.5 · IQR of the tensor's importances (quantiles as mergekit takes
  them: sorted values at ⌊q (n − 1)⌋, over a sample of 1M entries drawn with
  replacement when the tensor is larger: a seeded ``torch`` generator per tensor,
  from ``seed`` and the tensor's name). Two passes; scratch: at most 1M importances
  (and their 1M int64 sample positions).

All are given the inputs in row chunks of ``chunk_elements`` by ``mu.merge.stream`` (``arcee_fusion``:
whole rows of the last dim; a vector whole), their passes before the merge in ``prepare``: peak per tensor = the
output + (N + 1) chunks (``ram`` / ``ramplus_tl``: 2N + 5, the sources' chunks and their
masks as one block each), plus the scratch above (``arcee_fusion``: also one float per row
of the last dim, each row's KL kept from the first pass for the second).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch

from mu.merge import stream

StateDict = dict[str, torch.Tensor]
SAMPLE = 1_000_000  # mergekit arcee_fusion's _QUANTILE_SAMPLE_SIZE
KL_EPS = 1e-8


def ram_setup(names: list[str], w: list[float], base: Any, *, epsilon: float = 1e-5, **_: Any) -> dict[str, Any]:
    if base is None:
        raise ValueError("ram / ramplus_tl need the base (pretrained) state dict")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    return {}


def _counted(xs: torch.Tensor, b: torch.Tensor, bufs: dict[str, torch.Tensor], epsilon: float):
    """RAM's first step on one chunk, all sources at once: (the task vectors as the rows of the (N, m) block
    ``xs`` with the entries ≤ ε zeroed, their 1.0 / 0.0 "counted" masks, the counts per entry)."""
    n, m = xs.shape
    mk = bufs["marks"][: n * m].view(n, m)
    xs.sub_(b)
    torch.gt(torch.abs(xs, out=mk), epsilon, out=mk)  # |δ| > ε as 1.0 / 0.0 (float32 comparison)
    return xs.mul_(mk), mk, torch.sum(mk, 0, out=bufs["count"][:m])


def ram_prepare(
    t: stream.Tensor,
    w: list[float],
    *,
    epsilon: float = 1e-5,
    r: float | None = None,
    alpha: float | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Reused buffers; for RAM+ (``r`` given) a first pass: per source, the entries it shares with another
    source and its own, and λ_i from them."""
    n, dev = t.n, t.device
    # the sources' 1.0 / 0.0 "counted" masks as one block, the counts: every step is one operation over all sources
    bufs = {"marks": torch.empty(n * t.size, device=dev)}
    bufs.update({k: torch.empty(t.size, device=dev) for k in ("count", "one", "fac", "acc")})
    if r is None:
        return {"bufs": bufs, "lam": None}
    shared = torch.zeros(n, dtype=torch.float64, device=dev)
    unique = torch.zeros_like(shared)
    for _, xs, b in t.chunks():
        _, mk, counts = _counted(xs, b, bufs, epsilon)
        one = torch.eq(counts, 1.0, out=bufs["one"][: counts.numel()])
        exact = torch.float32 if counts.numel() < 2**24 else torch.float64  # sums of 1.0s stay exact
        total_i, unique_i = mk.to(exact).sum(1), torch.mv(mk.to(exact), one.to(exact))
        unique += unique_i.double()
        shared += (total_i - unique_i).double()
    # int64 counts divided as mergekit divides them (float32)
    rho = shared.cpu().round().long() / unique.cpu().round().long().clamp(min=epsilon)
    return {"bufs": bufs, "lam": (1 + r * rho.clamp(min=0, max=alpha)).tolist()}


def ram(
    xs: torch.Tensor,
    b: torch.Tensor,
    w: list[float],
    *,
    epsilon: float = 1e-5,
    lam: list[float] | None = None,
    bufs: dict[str, torch.Tensor],
    **_: Any,
) -> torch.Tensor:
    """RAM: the base plus, per entry, the mean of the task vectors that change it by more than ``epsilon``;
    RAM+ (``lam`` from ``ram_prepare``): each source's unique entries scaled by λ_i."""
    n, m = xs.shape
    d, _, counts = _counted(xs, b, bufs, epsilon)
    # mergekit's d·unique·λ_i + d·overlap / max(count, 1), term by term: a shared entry is d / count,
    # a unique one d / 1 · λ_i, an uncounted one 0 (d is zero there)
    d.div_(counts.clamp_(min=1.0))
    if lam is not None:
        # (clamped, an uncounted entry reads as unique: its δ's are all 0, so × λ_i changes nothing)
        one = torch.eq(counts, 1.0, out=bufs["one"][:m])
        other = torch.ne(counts, 1.0, out=counts)  # the counts are not needed any more
        for i in range(n):  # × λ_i where unique, × 1 elsewhere (exact: one of the two terms is 0)
            d[i].mul_(torch.mul(one, lam[i], out=bufs["fac"][:m]).add_(other))
    merged = d[0] if n == 1 else torch.add(d[0], d[1], out=bufs["acc"][:m])
    for i in range(2, n):
        merged.add_(d[i])
    return merged.add_(b)


def pair_setup(names: list[str], w: list[float], base: Any, *, method: str = "", t: float = 0.0, **_: Any):
    """(the index of mergekit's base a: the larger weight, the first on a tie; of the other b) of exactly
    two sources."""
    if len(names) != 2:
        raise ValueError(f"{method} merges exactly 2 sources, got {len(names)}: {names}")
    if not t >= 0:
        raise ValueError(f"nearswap: t must be >= 0, got {t}")
    return {"pair": (1, 0) if w[1] > w[0] else (0, 1)}


def nearswap(
    xs: torch.Tensor, b: torch.Tensor | None, w: list[float], *, pair: tuple[int, int], t: float = 1e-4, **_: Any
) -> torch.Tensor:
    """NearSwap: the larger-weighted source a, moved to the other b where they differ by less than ~``t``."""
    a, other = xs[pair[0]], xs[pair[1]]
    f = torch.sub(a, other).abs_().clamp_(min=1e-6).reciprocal_().mul_(t).clamp_(0, 1)  # t / |a - b|
    return other.mul_(f).add_(a.mul_(f.neg_().add_(1)))


def _kl_rows(params: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """mergekit's ``_compute_importance`` without its |params − base| factor: KL(softmax(params) ‖
    softmax(base)) of each row (the last dim), shape (rows, 1)."""
    p = torch.softmax(params, dim=-1) + KL_EPS
    q = torch.softmax(base, dim=-1) + KL_EPS
    return torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def _order_statistics(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``torch.sort(values).values[idx]`` (``values`` is reordered): on the CPU by numpy's partition around
    those positions, linear time (a 1M-element sort took ~0.1 s, the partition ~0.01 s)."""
    if values.device.type != "cpu":
        return torch.sort(values).values[idx.to(values.device)]
    at = idx.numpy()
    work = values.numpy()
    work.partition(at)
    return torch.from_numpy(work[at].copy())


def _generator(seed: int, key: str) -> torch.Generator:
    state = np.random.SeedSequence([seed, zlib.crc32(key.encode())]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def arcee_fusion_prepare(
    t: stream.Tensor, w: list[float], *, pair: tuple[int, int], seed: int = 42, **_: Any
) -> dict[str, Any]:
    """Pass 1 of Arcee Fusion: each row's KL, the importances (of the sampled entries), the threshold."""
    shape, dev, n = t.shape, t.device, t.numel
    last = shape[-1] if shape else 1
    if len(shape) < 2:  # whole rows of the last dim: a vector (or scalar) is one chunk
        t.respan(max(t.step, n))
    diff_buf, imp_buf = torch.empty(t.size, device=dev), torch.empty(t.size, device=dev)
    # one KL per row of the last dim, kept from pass 1 for pass 2: the softmaxes and the log are
    # most of the work, and a row's KL is a float (250002 floats for the largest embedding)
    kl = torch.empty(n // last, device=dev)
    pos = order = None
    if n > SAMPLE:  # mergekit samples with replacement; here from a seeded generator per tensor
        pos = torch.randint(n, (SAMPLE,), generator=_generator(seed, t.key))
        # in index order, to fill the sample chunk by chunk; a repeated position gives each of its
        # slots the same importance, so any order of repeats does (numpy's SIMD argsort: ~10x torch.sort)
        order = torch.from_numpy(np.argsort(pos.numpy()))
        sorted_pos = pos[order]
        sample = torch.empty(SAMPLE, device=dev)
    else:
        sample = torch.empty(n, device=dev)
    for at, xs, _ in t.chunks(base=False):
        a, b = xs[pair[0]], xs[pair[1]]
        where = at.flat
        k = _kl_rows(b.view(-1, last), a.view(-1, last))
        kl[where.start // last : where.stop // last] = k.view(-1)
        if pos is None:  # every importance: |b − a| · KL of its row (mergekit's _compute_importance)
            sample[where] = torch.sub(b, a, out=diff_buf[: b.numel()]).abs_().view(-1, last).mul_(k).view(-1)
        else:
            lo, hi = (int(torch.searchsorted(sorted_pos, v)) for v in (where.start, where.stop))
            at_ = (sorted_pos[lo:hi] - where.start).to(dev)
            sample[order[lo:hi].to(dev)] = (b[at_] - a[at_]).abs_().mul_(k.view(-1)[at_ // last])
    q = torch.tensor([0.25, 0.5, 0.75])
    idx = (q * (sample.numel() - 1)).long()  # mergekit's quantile positions
    q1, median, q3 = _order_statistics(sample, idx)
    return {"kl": kl, "threshold": median + 1.5 * (q3 - q1), "last": last, "bufs": (diff_buf, imp_buf)}


def arcee_fusion(
    xs: torch.Tensor,
    b: torch.Tensor | None,
    w: list[float],
    *,
    at: stream.At,
    pair: tuple[int, int],
    kl: torch.Tensor,
    threshold: torch.Tensor,
    last: int,
    bufs: tuple[torch.Tensor, torch.Tensor],
    **_: Any,
) -> torch.Tensor:
    """Arcee Fusion: the larger-weighted source a plus the other's changes b − a where they are important
    (importance ≥ median + 1.5 IQR, from ``arcee_fusion_prepare``)."""
    a, other = xs[pair[0]], xs[pair[1]]
    where = at.flat
    m = other.numel()
    diff = torch.sub(other, a, out=bufs[0][:m])
    imp = (
        torch.abs(diff, out=bufs[1][:m])
        .view(-1, last)
        .mul_(kl[where.start // last : where.stop // last].view(-1, 1))
        .view(-1)
    )
    return a.add_(diff.mul_(torch.ge(imp, threshold, out=imp)))  # as a + (b − a) · mask
