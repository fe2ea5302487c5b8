"""Which entries of a task vector are kept, as mergekit 0.1.5 keeps them: magnitude ranks (TIES, breadcrumbs
with its outlier window), random keeps (DARE), magnitude-ranked keep probabilities (DELLA) and the rescaling
of what is kept; ``mu.merge.taskvec`` applies them chunk by chunk.
"""

from __future__ import annotations

import math
import sys
import zlib

import numpy as np
import torch

RESCALE_EPS = 1e-7  # mergekit's rescaled_masked_tensor: no rescaling when either L1 norm is below this


class Ranks:
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
                vals[lo_at + 1 :].numpy().partition(hi_at - lo_at - 1)
        else:
            vals = torch.sort(mag).values
        b = float(vals[lo_at])
        a = float(vals[lo_at:].max()) if r0 <= 0 else float(vals[hi_at])
        self.kept = float(vals[lo_at : hi_at + 1].sum())
        above_a = count_above(vals[hi_at + 1 :], a)
        windows = {a: (r0 - above_a, r1 - above_a)}
        if b < a:
            above_b = count_above(vals[lo_at + 1 :], b)
            windows[b] = (r0 - above_b, r1 - above_b)
        for value, (first, stop) in windows.items():
            if value == a and r0 <= 0 and b < a:
                full = True  # the largest |δ| and its ties rank above b, the r1-th largest: all kept
            elif value == b and r0 <= 0 and b < a:  # ties of b above it are counted; below it, a max tells
                below = 0 if lo_at == 0 or float(vals[:lo_at].max()) < b else count_equal(vals[:lo_at], b)
                ties = below + r1 - above_b
                full = ties <= stop
            else:
                ties = count_equal(vals, value)
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
        ``mag`` and ``ind`` are scratch buffers of its size. Float masks only (a comparison written into
        a float32 buffer, 1.0 / 0.0): on the CPU a boolean mask and a multiply by it cost ~2.6 ns per
        element, the float comparison and multiply ~0.7 ns."""
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
            delta.mul_((torch.ge if full else torch.gt)(mag, value, out=ind))
        if self.hi is not None:  # keep |δ| ≤ hi (ties kept) or < hi
            value, full = self.hi
            delta.mul_((torch.le if full else torch.lt)(mag, value, out=ind))
        for idx, values in restore:
            delta[idx] = values


def count_above(vals: torch.Tensor, value: float) -> int:
    """How many of ``vals`` (all ≥ ``value``: the upper side of a partition) are > ``value``."""
    if vals.numel() == 0 or float(vals.min()) > value:  # no tie with the threshold: the usual case
        return vals.numel()
    return vals.numel() - count_equal(vals, value)


def count_equal(vals: torch.Tensor, value: float) -> int:
    """How many of ``vals`` equal ``value`` (numpy on the CPU: its comparison and count are ~4x torch's)."""
    if vals.device.type == "cpu":
        return int(np.count_nonzero(vals.numpy() == np.float32(value)))
    return int(torch.count_nonzero(vals == value))


def rank_window(sparsify: str, n: int, density: float, gamma: float) -> tuple[int, int] | None:
    """Descending-magnitude ranks [r0, r1) kept by mergekit's ``magnitude`` / ``magnitude_outliers``."""
    if density >= 1.0:
        return None
    if sparsify == "magnitude":
        return 0, max(1, int(density * n))
    target, top = int(density * n), int(gamma * n)  # breadcrumbs: drop the `gamma` largest, then the smallest
    bottom = max(0, n - target - top)
    return n - bottom - target, n - bottom


def source_rng(seed: int, key: str, name: str) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(key.encode()), zlib.crc32(name.encode())]))
    )


def magprune_keep(
    mag: torch.Tensor, shape: tuple[int, ...], density: float, epsilon: float, rng: np.random.Generator, step: int
) -> torch.Tensor:
    """DELLA's MAGPRUNE mask of one task vector (``mag``: its |δ|, flat): per row along dim 1, keep
    probabilities rising linearly with the magnitude's rank; ranked and drawn chunk by chunk of rows."""
    keep = torch.empty(mag.numel(), dtype=torch.bool)
    if mag.numel() == 0:
        return keep
    rows, d1 = (shape[0], shape[1]) if len(shape) >= 2 else (1, mag.numel())
    view = mag.view(rows, d1, -1)
    per = max(1, step // view[0].numel())
    # the keep probability of each rank (mergekit's expression, in float32), looked up per entry below
    rank_norm = (
        (torch.arange(d1, device=mag.device).float() / (d1 - 1)).clamp(0, 1)
        if d1 > 1
        else torch.full((1,), 0.5, device=mag.device)
    )
    by_rank = (density - epsilon) + rank_norm * 2 * epsilon
    cpu = mag.device.type == "cpu"
    table, out = (by_rank.numpy(), keep.numpy()) if cpu else (by_rank, None)
    for r0 in range(0, rows, per):
        m = view[r0 : r0 + per]
        start = r0 * view[0].numel()
        u = rng.random(m.numel(), dtype=np.float32)  # one sequential stream, as DARE's
        if cpu:
            np.less(u, table[row_ranks(m).numpy()].reshape(-1), out=out[start : start + m.numel()])
        else:
            keep[start : start + m.numel()] = torch.from_numpy(u) < table[row_ranks_sorted(m)].cpu().reshape(-1)
    return keep


def row_ranks_sorted(m: torch.Tensor) -> torch.Tensor:
    """Ascending ranks along dim 1 of ``m`` (rows, d1, inner), equal values ranked by index: a stable
    argsort and its inverse permutation (on a GPU)."""
    order = torch.argsort(m, dim=1, stable=True)
    d1 = m.shape[1]
    return torch.empty_like(order).scatter_(1, order, torch.arange(d1, device=m.device).view(1, -1, 1).expand_as(order))


def row_ranks(m: torch.Tensor) -> torch.Tensor:
    """``row_ranks_sorted`` on the CPU, ~6x faster: each |δ| (≥ 0, so its float32 bits order as its value)
    and its index along dim 1 packed into one int64 key (bits high, index low: every key distinct, the
    order of equal values by index), sorted by numpy's SIMD sort, the index read back from the low word
    and scattered to its rank (int16 ranks when d1 allows: half the bytes to scatter and look up)."""
    rows, d1, inner = m.shape
    lo, hi = (0, 1) if sys.byteorder == "little" else (1, 0)
    keys = np.empty((rows, inner, d1), dtype=np.int64)
    words = keys.view(np.int32).reshape(rows, inner, d1, 2)
    words[..., lo] = np.arange(d1, dtype=np.int32)
    words[..., hi] = m.numpy().transpose(0, 2, 1).view(np.int32)
    keys.sort(axis=-1)
    keys &= 0xFFFFFFFF  # the index of each sorted position
    dtype = torch.int16 if d1 <= np.iinfo(np.int16).max else torch.int64
    order = torch.from_numpy(keys).view(rows * inner, d1)
    ranks = torch.empty(rows * inner, d1, dtype=dtype).scatter_(
        1, order, torch.arange(d1, dtype=dtype).expand(rows * inner, d1)
    )
    return ranks.view(rows, inner, d1).transpose(1, 2)


def prepare(
    sparsify: str,
    theta: torch.Tensor | None,
    base: torch.Tensor,
    shape: tuple[int, ...],
    *,
    density: float,
    gamma: float,
    epsilon: float,
    rescale: bool,
    rng: np.random.Generator,
    step: int,
    scratch: torch.Tensor,
) -> dict:
    """One source's whole-tensor sparsification state: ranks or DARE / DELLA drop mask, and its rescale factor.
    ``theta``: the source's whole tensor (changed in place; None where DARE without rescaling needs none);
    ``scratch``: a float32 chunk buffer on its device."""
    state: dict = {"scale": 1.0}
    n = math.prod(shape)
    if sparsify in ("magnitude", "breadcrumbs"):
        ranks = rank_window(sparsify, n, density, gamma)
        if ranks is None:
            return state
        sel = Ranks(theta.sub_(base).abs_(), *ranks)
        state["ranks"], total, kept = sel, sel.total, sel.kept
    elif sparsify in ("random", "magprune"):
        if density >= 1.0:
            return state
        if sparsify == "magprune":
            mag = theta.sub_(base).abs_()
            keep = magprune_keep(mag, shape, density, epsilon, rng, step)
        else:
            keep = dare_keep(n, density, rng, step)
        state["keep"] = keep
        if not rescale:
            return state
        mag = mag if sparsify == "magprune" else theta.sub_(base).abs_()
        total = float(mag.sum())
        kept = float(mask_(mag, keep, scratch).sum())
    else:
        return state
    if rescale and total >= RESCALE_EPS and kept >= RESCALE_EPS:
        state["scale"] = total / kept
    return state


def dare_keep(n: int, density: float, rng: np.random.Generator, step: int) -> torch.Tensor:
    """DARE's mask: u < density, u from one sequential stream (so the mask does not depend on ``step``), drawn
    chunk by chunk into one reused buffer and compared straight into the mask (no per-chunk allocation)."""
    keep = torch.empty(n, dtype=torch.bool)
    out = keep.numpy()
    u = np.empty(min(step, n), dtype=np.float32)
    for start in range(0, n, step):
        part = u[: min(step, n - start)]
        rng.random(dtype=np.float32, out=part)
        np.less(part, density, out=out[start : start + part.size])  # float32 comparison, as `u < density`
    return keep


def mask_(mag: torch.Tensor, keep: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``mag.mul_(keep)`` (zero where dropped), on the CPU through a float copy of the mask one chunk at a
    time: multiplying by a boolean tensor costs ~3x the copy and the float multiply together."""
    if mag.device.type != "cpu":
        return mag.mul_(keep.to(mag.device))
    step = max(1, scratch.numel())
    for start in range(0, mag.numel(), step):
        seg = mag[start : start + step]
        seg.mul_(scratch[: seg.numel()].copy_(keep[start : start + step]))
    return mag


def sparsified(
    delta: torch.Tensor, state: dict, span_flat: slice, mag: torch.Tensor, ind: torch.Tensor
) -> torch.Tensor:
    if "ranks" in state:
        state["ranks"].apply(delta, mag[: delta.numel()], ind[: delta.numel()])
    elif "keep" in state:
        delta.mul_(ind[: delta.numel()].copy_(state["keep"][span_flat]))
    if state["scale"] != 1.0:
        delta.mul_(state["scale"])
    return delta
