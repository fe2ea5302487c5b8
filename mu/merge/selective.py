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

All read the inputs in row chunks of ``chunk_elements`` (``arcee_fusion``: whole rows
of the last dim; a vector is read whole) into reused buffers: peak per tensor = the
output + (N + 1) chunks (``ram`` / ``ramplus_tl``: 2N + 5, the sources' chunks and their
masks as one block each), plus the scratch above (``arcee_fusion``: also one float per row
of the last dim, each row's KL kept from the first pass for the second).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np
import torch

from mu.merge import chunks

StateDict = dict[str, torch.Tensor]
SAMPLE = 1_000_000  # mergekit arcee_fusion's _QUANTILE_SAMPLE_SIZE
KL_EPS = 1e-8


def _chunked(state_dicts: Mapping[str, StateDict], base: StateDict | None, key: str, step: int, dev: torch.device):
    """(shape, dtype, spans, read): ``read(span)`` → the sources' flat float32 chunks and the base's (or None),
    in reused buffers."""
    first = next(iter(state_dicts.values()))
    shape, dtype = chunks.shape_dtype(first, key)
    spans = chunks.spans(shape, step)
    size = chunks.flat(shape, spans[0]).stop
    bufs = [torch.empty(size, device=dev) for _ in range(len(state_dicts) + 1)]

    def read(span: chunks.Span) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        xs = [chunks.read(sd, key, span, dev, out=buf) for sd, buf in zip(state_dicts.values(), bufs)]
        return xs, chunks.read(base, key, span, dev, out=bufs[-1]) if base is not None else None

    return shape, dtype, spans, read


def _counted(
    sds: list[StateDict],
    base: StateDict,
    key: str,
    span: chunks.Span,
    dev: torch.device,
    bufs: tuple[torch.Tensor, ...],
    epsilon: float,
) -> tuple[torch.Tensor, ...]:
    """RAM's first step on one chunk, all sources at once: (the base's chunk, the task vectors as the rows of
    an (N, m) block with the entries ≤ ε zeroed, their 1.0 / 0.0 "counted" masks, the counts per entry)."""
    stack, marks, base_buf, count_buf = bufs
    n = len(sds)
    b = chunks.read(base, key, span, dev, out=base_buf)
    m = b.numel()
    d, mk = stack[: n * m].view(n, m), marks[: n * m].view(n, m)
    for i, sd in enumerate(sds):
        chunks.read(sd, key, span, dev, out=d[i])
    d.sub_(b)
    torch.gt(torch.abs(d, out=mk), epsilon, out=mk)  # |δ| > ε as 1.0 / 0.0 (float32 comparison)
    return b, d.mul_(mk), mk, torch.sum(mk, 0, out=count_buf[:m])


@torch.no_grad()
def ram(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    epsilon: float = 1e-5,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """RAM: the base plus, per entry, the mean of the task vectors that change it by more than ``epsilon``."""
    return _ram(state_dicts, base, epsilon=epsilon, plus=None, device=device, chunk_elements=chunk_elements)


@torch.no_grad()
def ramplus_tl(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    r: float = 0.1,
    alpha: float = 0.2,
    epsilon: float = 1e-5,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """RAM+ (tensor-local): RAM with each source's unique entries scaled by 1 + r · clamp(shared / unique, 0,
    alpha)."""
    return _ram(state_dicts, base, epsilon=epsilon, plus=(r, alpha), device=device, chunk_elements=chunk_elements)


def _ram(
    state_dicts: Mapping[str, StateDict],
    base: StateDict | None,
    *,
    epsilon: float,
    plus: tuple[float, float] | None,
    device: str | torch.device | None,
    chunk_elements: int | None,
) -> StateDict:
    if base is None:
        raise ValueError("ram / ramplus_tl need the base (pretrained) state dict")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    sds = list(state_dicts.values())
    n = len(sds)
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in base:
            shape, dtype = chunks.shape_dtype(base, key)
            spans = chunks.spans(shape, step)
            size = chunks.flat(shape, spans[0]).stop
            # the sources' chunks as the rows of one (N, m) block, their 1.0 / 0.0 "counted" masks, the
            # base's chunk and the counts: every step below is one operation over all sources
            stack, marks = (torch.empty(n * size, device=dev) for _ in range(2))
            base_buf, count_buf, one_buf, fac_buf, acc_buf = (torch.empty(size, device=dev) for _ in range(5))
            bufs = (stack, marks, base_buf, count_buf)
            lam = None
            if plus is not None:  # pass 1: per source, entries shared with another source and its own
                shared = torch.zeros(n, dtype=torch.float64, device=dev)
                unique = torch.zeros_like(shared)
                for span in spans:
                    _, _, mk, counts = _counted(sds, base, key, span, dev, bufs, epsilon)
                    one = torch.eq(counts, 1.0, out=one_buf[: counts.numel()])
                    exact = torch.float32 if counts.numel() < 2**24 else torch.float64  # sums of 1.0s stay exact
                    total_i, unique_i = mk.to(exact).sum(1), torch.mv(mk.to(exact), one.to(exact))
                    unique += unique_i.double()
                    shared += (total_i - unique_i).double()
                r, alpha = plus
                # int64 counts divided as mergekit divides them (float32)
                rho = shared.cpu().round().long() / unique.cpu().round().long().clamp(min=epsilon)
                lam = (1 + r * rho.clamp(min=0, max=alpha)).tolist()
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # the unique entries (scaled by λ_i) plus the shared ones averaged
                b, d, _, counts = _counted(sds, base, key, span, dev, bufs, epsilon)
                m = b.numel()
                # mergekit's d·unique·λ_i + d·overlap / max(count, 1), term by term: a shared entry is d / count,
                # a unique one d / 1 · λ_i, an uncounted one 0 (d is zero there)
                d.div_(counts.clamp_(min=1.0))
                if lam is not None:
                    # (clamped, an uncounted entry reads as unique: its δ's are all 0, so × λ_i changes nothing)
                    one = torch.eq(counts, 1.0, out=one_buf[:m])
                    other = torch.ne(counts, 1.0, out=counts)  # the counts are not needed any more
                    for i in range(n):  # × λ_i where unique, × 1 elsewhere (exact: one of the two terms is 0)
                        d[i].mul_(torch.mul(one, lam[i], out=fac_buf[:m]).add_(other))
                merged = d[0] if n == 1 else torch.add(d[0], d[1], out=acc_buf[:m])
                for i in range(2, n):
                    merged.add_(d[i])
                dst[chunks.flat(shape, span)] = merged.add_(b)
            out[key] = res
    return out


def _pair(
    state_dicts: Mapping[str, StateDict], weights: Mapping[str, float], method: str
) -> tuple[str, str, dict[str, StateDict]]:
    """(a, b, {a: .., b: ..}): mergekit's base (the larger weight; the first on a tie) and the other of exactly
    two sources."""
    if len(state_dicts) != 2:
        raise ValueError(f"{method} merges exactly 2 sources, got {len(state_dicts)}: {list(state_dicts)}")
    first, second = list(state_dicts)
    a, b = (second, first) if float(weights[second]) > float(weights[first]) else (first, second)
    return a, b, {a: state_dicts[a], b: state_dicts[b]}


@torch.no_grad()
def nearswap(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    t: float = 1e-4,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """NearSwap: the larger-weighted source a, moved to the other b where they differ by less than ~``t``."""
    if not t >= 0:
        raise ValueError(f"nearswap: t must be >= 0, got {t}")
    a_name, b_name, pair = _pair(state_dicts, weights, "nearswap")
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in state_dicts[a_name]:
            shape, dtype, spans, read = _chunked(pair, None, key, step, dev)
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:
                (a, b), _ = read(span)
                w = torch.sub(a, b).abs_().clamp_(min=1e-6).reciprocal_().mul_(t).clamp_(0, 1)  # t / |a - b|
                dst[chunks.flat(shape, span)] = b.mul_(w).add_(a.mul_(w.neg_().add_(1)))
            out[key] = res
    return out


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


@torch.no_grad()
def arcee_fusion(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    seed: int = 42,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """Arcee Fusion: the larger-weighted source a plus the other's changes b − a where they are important
    (importance ≥ median + 1.5 IQR)."""
    a_name, b_name, pair = _pair(state_dicts, weights, "arcee_fusion")
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in state_dicts[a_name]:
            shape, dtype = chunks.shape_dtype(state_dicts[a_name], key)
            n = math.prod(shape)
            last = shape[-1] if shape else 1
            # whole rows of the last dim: a vector (or scalar) is one chunk
            span_step = step if len(shape) >= 2 else max(step, n)
            _, _, spans, read = _chunked(pair, None, key, span_step, dev)
            if n == 0:
                out[key] = torch.empty(shape, dtype=dtype)
                continue
            size = chunks.flat(shape, spans[0]).stop
            diff_buf, imp_buf = torch.empty(size, device=dev), torch.empty(size, device=dev)
            # one KL per row of the last dim, kept from pass 1 for pass 2: the softmaxes and the log are
            # most of the work, and a row's KL is a float (250002 floats for the largest embedding)
            kl = torch.empty(n // last, device=dev)
            pos = order = None
            if n > SAMPLE:  # mergekit samples with replacement; here from a seeded generator per tensor
                pos = torch.randint(n, (SAMPLE,), generator=_generator(seed, key))
                # in index order, to fill the sample chunk by chunk; a repeated position gives each of its
                # slots the same importance, so any order of repeats does (numpy's SIMD argsort: ~10x torch.sort)
                order = torch.from_numpy(np.argsort(pos.numpy()))
                sorted_pos = pos[order]
                sample = torch.empty(SAMPLE, device=dev)
            else:
                sample = torch.empty(n, device=dev)
            for span in spans:  # pass 1: each row's KL, the importances (of the sampled entries)
                (a, b), _ = read(span)
                where = chunks.flat(shape, span)
                k = _kl_rows(b.view(-1, last), a.view(-1, last))
                kl[where.start // last : where.stop // last] = k.view(-1)
                if pos is None:  # every importance: |b − a| · KL of its row (mergekit's _compute_importance)
                    sample[where] = torch.sub(b, a, out=diff_buf[: b.numel()]).abs_().view(-1, last).mul_(k).view(-1)
                else:
                    lo, hi = (int(torch.searchsorted(sorted_pos, v)) for v in (where.start, where.stop))
                    at = (sorted_pos[lo:hi] - where.start).to(dev)
                    sample[order[lo:hi].to(dev)] = (b[at] - a[at]).abs_().mul_(k.view(-1)[at // last])
            q = torch.tensor([0.25, 0.5, 0.75])
            idx = (q * (sample.numel() - 1)).long()  # mergekit's quantile positions
            q1, median, q3 = _order_statistics(sample, idx)
            threshold = median + 1.5 * (q3 - q1)
            del sample
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # pass 2: a + (b − a) where important
                (a, b), _ = read(span)
                where = chunks.flat(shape, span)
                m = b.numel()
                diff = torch.sub(b, a, out=diff_buf[:m])
                imp = (
                    torch.abs(diff, out=imp_buf[:m])
                    .view(-1, last)
                    .mul_(kl[where.start // last : where.stop // last].view(-1, 1))
                    .view(-1)
                )
                dst[where] = a.add_(diff.mul_(torch.ge(imp, threshold, out=imp)))  # as a + (b − a) · mask
            out[key] = res
    return out
