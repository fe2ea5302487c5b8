"""``linear`` and the task-vector family (task arithmetic, TIES, DARE, breadcrumbs), computed by ``mu``
chunk by chunk on any device, in bounded memory.

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
"""

from __future__ import annotations

import zlib
from typing import Literal, Mapping

import numpy as np
import torch

from mu.merge import chunks

StateDict = dict[str, torch.Tensor]
SPARSIFY = ("none", "magnitude", "random", "breadcrumbs")
RESCALE_EPS = 1e-7  # mergekit's rescaled_masked_tensor: no rescaling when either L1 norm is below this


@torch.no_grad()
def linear(state_dicts: Mapping[str, StateDict], weights: Mapping[str, float], base: StateDict | None = None, *,
           device: str | torch.device | None = None, chunk_elements: int | None = None) -> StateDict:
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


def _linear_tensor(state_dicts: Mapping[str, StateDict], weights: Mapping[str, float], names: list[str], total: float,
                   key: str, dev: torch.device, step: int) -> torch.Tensor:
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


class _Ranks:
    """Which entries of one task vector a magnitude sparsification keeps: descending-|δ| ranks [r0, r1),
    entries of equal |δ| ranked by index. Found once per tensor, applied chunk by chunk in index order."""

    def __init__(self, mag: torch.Tensor, r0: int, r1: int):
        """``mag``: |δ| of the whole tensor, flat float32 (reordered in place)."""
        n = mag.numel()
        self.total = float(mag.sum())  # float32 sums, as mergekit's rescaling
        self.groups: list[list[float]] = []  # [value, first, stop, seen]: tie windows applied by index order
        self.lo = self.hi = None  # keep lo ≤/< |δ| ≤/< hi
        if r1 <= r0 or n == 0:
            self.nothing, self.kept = True, 0.0
            return
        self.nothing = False
        if r0 <= 0 and r1 >= n:
            self.kept = self.total
            return
        lo_at, hi_at = n - r1, n - 1 - r0  # ascending positions of the r1-th and (r0+1)-th largest
        if mag.device.type == "cpu":  # in place, linear time, no copy; one k per call (10x faster than two)
            vals = mag
            vals.numpy().partition(lo_at)
            if hi_at > lo_at and r0 > 0:
                vals[lo_at + 1:].numpy().partition(hi_at - lo_at - 1)
        else:
            vals = torch.sort(mag).values
        b = float(vals[lo_at])
        a = float(vals[lo_at:].max()) if r0 <= 0 else float(vals[hi_at])
        self.kept = float(vals[lo_at:hi_at + 1].sum())
        above_a = int(torch.count_nonzero(vals[hi_at + 1:] > a))
        windows = {a: (r0 - above_a, r1 - above_a)}
        if b < a:
            above_b = int(torch.count_nonzero(vals[lo_at + 1:] > b))
            windows[b] = (r0 - above_b, r1 - above_b)
        for value, (first, stop) in windows.items():
            if value == a and r0 <= 0 and b < a:
                full = True  # the largest |δ| and its ties rank above b, the r1-th largest: all kept
            elif value == b and r0 <= 0 and b < a:  # ties of b above it are counted; below it, a max tells
                below = 0 if lo_at == 0 or float(vals[:lo_at].max()) < b else \
                    int(torch.count_nonzero(vals[:lo_at] == b))
                ties = below + r1 - above_b
                full = ties <= stop
            else:
                ties = int(torch.count_nonzero(vals == value))
                full = first <= 0 and stop >= ties
            if value == b:
                self.lo = (b, full)
            if value == a and (r0 > 0 or not full):
                self.hi = (a, full)
            if not full and stop > 0 and first < ties:
                self.groups.append([value, first, stop, 0])
        if a == b:  # every kept entry has the same magnitude: only the tie window keeps anything
            self.lo = self.hi = (a, False) if self.groups else (a, True)

    def apply(self, delta: torch.Tensor, mag: torch.Tensor, ind: torch.Tensor) -> None:
        """Zero the entries of this chunk of δ (the next in index order) that are not kept, in place;
        ``mag`` and ``ind`` are scratch buffers of its size. Float arithmetic only (sign/clamp masks):
        on the CPU, boolean masks cost 10x more per element."""
        if self.nothing:
            delta.zero_()
            return
        if self.lo is None and self.hi is None:
            return
        torch.abs(delta, out=mag)
        restore = []
        for group in self.groups:  # rare: a tie window cuts through the entries equal to a threshold
            value, first, stop, seen = group
            tied = torch.nonzero(mag == value).squeeze(1)
            order = torch.arange(seen, seen + tied.numel(), device=mag.device)
            idx = tied[(order >= first) & (order < stop)]
            restore.append((idx, delta[idx].clone()))
            group[3] = seen + tied.numel()
        if self.lo is not None:  # keep |δ| ≥ lo (ties kept) or > lo
            value, full = self.lo
            bound = float(np.nextafter(np.float32(value), np.float32(-np.inf))) if full else value
            delta.mul_(torch.sub(mag, bound, out=ind).sign_().clamp_min_(0.0))
        if self.hi is not None:  # keep |δ| ≤ hi (ties kept) or < hi
            value, full = self.hi
            bound = float(np.nextafter(np.float32(value), np.float32(np.inf))) if full else value
            delta.mul_(torch.sub(mag, bound, out=ind).neg_().sign_().clamp_min_(0.0))
        for idx, values in restore:
            delta[idx] = values


def _ranks(sparsify: str, n: int, density: float, gamma: float) -> tuple[int, int] | None:
    """Descending-magnitude ranks [r0, r1) kept by mergekit's ``magnitude`` / ``magnitude_outliers``."""
    if density >= 1.0:
        return None
    if sparsify == "magnitude":
        return 0, max(1, int(density * n))
    target, top = int(density * n), int(gamma * n)  # breadcrumbs: drop the `gamma` largest, then the smallest
    bottom = max(0, n - target - top)
    return n - bottom - target, n - bottom


def _rng(seed: int, key: str, name: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [seed, zlib.crc32(key.encode()), zlib.crc32(name.encode())])))


def _prepare(sparsify: str, theta: torch.Tensor, base: torch.Tensor, *, density: float, gamma: float,
             rescale: bool, rng: np.random.Generator, step: int) -> dict:
    """One source's whole-tensor sparsification state: ranks or DARE drop mask, and its rescale factor."""
    state: dict = {"scale": 1.0}
    n = theta.numel()
    if sparsify in ("magnitude", "breadcrumbs"):
        ranks = _ranks(sparsify, n, density, gamma)
        if ranks is None:
            return state
        sel = _Ranks(theta.sub_(base).abs_(), *ranks)
        state["ranks"], total, kept = sel, sel.total, sel.kept
    elif sparsify == "random":
        if density >= 1.0:
            return state
        keep = torch.empty(n, dtype=torch.bool)
        for start in range(0, n, step):  # one sequential stream: the mask does not depend on `step`
            keep[start:start + step] = torch.from_numpy(rng.random(min(step, n - start), dtype=np.float32)
                                                        < density)
        state["keep"] = keep
        if not rescale:
            return state
        mag = theta.sub_(base).abs_()
        total = float(mag.sum())
        kept = float(mag.mul_(keep.to(mag.device)).sum())
    else:
        return state
    if rescale and total >= RESCALE_EPS and kept >= RESCALE_EPS:
        state["scale"] = total / kept
    return state


def _sparsified(delta: torch.Tensor, state: dict, span_flat: slice, mag: torch.Tensor,
                ind: torch.Tensor) -> torch.Tensor:
    if "ranks" in state:
        state["ranks"].apply(delta, mag[:delta.numel()], ind[:delta.numel()])
    elif "keep" in state:
        delta.mul_(ind[:delta.numel()].copy_(state["keep"][span_flat]))
    if state["scale"] != 1.0:
        delta.mul_(state["scale"])
    return delta


@torch.no_grad()
def task_vectors(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    sparsify: Literal["none", "magnitude", "random", "breadcrumbs"] = "none",
    consensus: bool = False,
    density: float = 1.0,
    gamma: float = 0.01,
    lambda_: float = 1.0,
    rescale: bool = False,
    seed: int = 42,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """θ_base + λ · (weighted, optionally sparsified and sign-elected) mean of task vectors.

    ``sparsify``: keep a ``density`` fraction of each task vector by magnitude
    (TIES), at random (DARE, seeded by ``seed``, the tensor and the source's
    name) or by magnitude after dropping the top ``gamma`` outliers
    (breadcrumbs). ``consensus``: TIES sign election (sum rule). ``rescale``:
    rescale each kept task vector to its original L1 norm (as mergekit does).
    ``device`` (None: CUDA when available) and ``chunk_elements`` set where and in
    what pieces it computes, not the result (to float32 rounding).
    """
    if base is None:
        raise ValueError("task-vector methods need the base (pretrained) state dict")
    if sparsify not in SPARSIFY:
        raise ValueError(f"unknown sparsify {sparsify!r}; valid: {list(SPARSIFY)}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    names = list(state_dicts)
    w32 = torch.tensor([float(weights[name]) for name in names], dtype=torch.float32)  # mergekit's float32 weights
    w, w_sum = w32.tolist(), float(w32.sum())
    divisor = 1.0 if abs(w_sum) < 1e-8 else w_sum  # mergekit's divisor without consensus
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in base:
            out[key] = _task_vector_tensor(state_dicts, names, w, divisor, base, key, dev, step, sparsify=sparsify,
                                           consensus=consensus, density=density, gamma=gamma, lambda_=lambda_,
                                           rescale=rescale, seed=seed)
    return out


def _task_vector_tensor(state_dicts: Mapping[str, StateDict], names: list[str], w: list[float], divisor: float,
                        base: StateDict, key: str, dev: torch.device, step: int, *, sparsify: str, consensus: bool,
                        density: float, gamma: float, lambda_: float, rescale: bool, seed: int) -> torch.Tensor:
    shape, dtype = chunks.shape_dtype(base, key)
    whole = None if not shape else (0, shape[0])
    base_t = chunks.read(base, key, whole, dev)
    states = [_prepare(sparsify, chunks.read(state_dicts[name], key, whole, dev, copy=True), base_t,
                       density=density, gamma=gamma, rescale=rescale, rng=_rng(seed, key, name), step=step)
              if sparsify != "none" else {"scale": 1.0} for name in names]
    res = torch.empty(shape, dtype=dtype)
    dst = res.reshape(-1)
    spans = chunks.spans(shape, step)
    size = chunks.flat(shape, spans[0]).stop
    bufs = [torch.empty(size, device=dev) for _ in names]  # one chunk per source, reused: no allocation per chunk
    mixed_buf, div_buf, sign_buf, mag_buf, ind_buf = (torch.empty(size, device=dev) for _ in range(5))
    for span in spans:
        where = chunks.flat(shape, span)
        b = base_t[where]
        m = b.numel()
        deltas = [_sparsified(chunks.read(state_dicts[name], key, span, dev, out=buf).sub_(b), state, where,
                              mag_buf, ind_buf).mul_(w[i])
                  for i, (name, state, buf) in enumerate(zip(names, states, bufs))]
        mixed = mixed_buf[:m].copy_(deltas[0])
        for d in deltas[1:]:
            mixed.add_(d)
        if consensus:  # keep the entries whose sign agrees with sign(Σ w_i δ_i) (>= 0 counts as +)
            sign = torch.sign(mixed, out=sign_buf[:m]).add_(0.5).sign_()  # +1 / -1, zero counted as +
            div, ind = div_buf[:m].zero_(), ind_buf[:m]
            mixed.zero_()
            for i, d in enumerate(deltas):
                d.mul_(sign)  # > 0 where δ_i has the majority's sign (zeros never agree)
                div.add_(torch.sign(d, out=ind).clamp_min_(0.0), alpha=w[i])
                mixed.add_(d.clamp_min_(0.0))
            div.add_(torch.sign(div, out=ind).neg_().add_(1.0))  # no agreeing source: divide by 1
            mixed.mul_(sign).div_(div)
        else:
            mixed.div_(divisor)
        if lambda_ != 1:
            mixed.mul_(lambda_)
        dst[where] = mixed.add_(b)
    return res
