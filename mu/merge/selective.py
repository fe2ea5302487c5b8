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
output + (N + 1) chunks, plus the scratch above.
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
    xs: list[torch.Tensor], b: torch.Tensor, epsilon: float
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """RAM's task vectors with the entries at most ``epsilon`` zeroed, whether each counts, and the counts."""
    nonzero = torch.stack([x.sub_(b).abs() > epsilon for x in xs])
    return [x.mul_(nz) for x, nz in zip(xs, nonzero)], nonzero, nonzero.sum(0)


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
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in base:
            shape, dtype, spans, read = _chunked(state_dicts, base, key, step, dev)
            lam = [1.0] * len(state_dicts)
            if plus is not None:  # pass 1: per source, entries shared with another source and its own
                shared = torch.zeros(len(state_dicts), dtype=torch.int64, device=dev)
                unique = torch.zeros_like(shared)
                for span in spans:
                    _, nonzero, counts = _counted(*read(span), epsilon)
                    shared += (nonzero & (counts > 1)).sum(1)
                    unique += (nonzero & (counts == 1)).sum(1)
                r, alpha = plus
                rho = shared.cpu() / unique.cpu().clamp(min=epsilon)  # float32, as mergekit
                lam = (1 + r * rho.clamp(min=0, max=alpha)).tolist()
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # the unique entries (scaled by λ_i) plus the shared ones averaged
                xs, b = read(span)
                deltas, _, counts = _counted(xs, b, epsilon)
                unique, overlap, divisor = counts == 1, counts > 1, counts.clamp(min=1)
                merged = torch.zeros_like(b)
                for d, lam_i in zip(deltas, lam):  # mergekit's expression, term by term
                    merged.add_(
                        d * unique * lam_i + d * overlap / divisor
                        if plus is not None
                        else d * unique + d * overlap / divisor
                    )
                dst[chunks.flat(shape, span)] = b.add_(merged)
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


def _importance(params: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """mergekit's ``_compute_importance`` on rows (the last dim)."""
    p = torch.softmax(params, dim=-1) + KL_EPS
    q = torch.softmax(base, dim=-1) + KL_EPS
    return (params - base).abs() * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


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
            pos = order = None
            if n > SAMPLE:  # mergekit samples with replacement; here from a seeded generator per tensor
                pos = torch.randint(n, (SAMPLE,), generator=_generator(seed, key))
                sorted_pos, order = torch.sort(pos)
                sample = torch.empty(SAMPLE, device=dev)
            else:
                sample = torch.empty(n, device=dev)
            for span in spans:  # pass 1: the importances (of the sampled entries)
                (a, b), _ = read(span)
                imp = _importance(b.view(-1, last), a.view(-1, last)).reshape(-1)
                where = chunks.flat(shape, span)
                if pos is None:
                    sample[where] = imp
                else:
                    lo, hi = (int(torch.searchsorted(sorted_pos, v)) for v in (where.start, where.stop))
                    sample[order[lo:hi].to(dev)] = imp[(sorted_pos[lo:hi] - where.start).to(dev)]
            q = torch.tensor([0.25, 0.5, 0.75])
            idx = (q * (sample.numel() - 1)).long()  # mergekit's quantile positions
            q1, median, q3 = torch.sort(sample).values[idx.to(dev)]
            threshold = median + 1.5 * (q3 - q1)
            del sample
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # pass 2: a + (b − a) where important
                (a, b), _ = read(span)
                imp = _importance(b.view(-1, last), a.view(-1, last)).reshape(-1)
                dst[chunks.flat(shape, span)] = a + (b - a) * (imp >= threshold).float()
            out[key] = res
    return out
