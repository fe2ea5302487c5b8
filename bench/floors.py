"""Each merge method's own floor: the I/O floor plus the least compute the method's definition implies.

The I/O floor (``bench.merging.floor``: reading the input files, writing one model) bounds every
method; some cannot avoid more work than that, and their distance from the I/O floor alone says
little about how well they are implemented. Per method (``kind``):

* ``"select"`` (magnitude and random sparsifiers: TIES, DARE, breadcrumbs, DELLA, SCE, RAM): one
  selection (the faster of ``torch.kthvalue`` and ``numpy.partition``, the k-th value of the
  flattened tensor, k = numel / 2; above ``KTHVALUE_MAX`` elements only the partition, ~10x the
  faster on the CPU) of every tensor, per source. RAM needs no ranking and DARE
  draws random numbers instead; both still touch every entry of every source once more than a
  weighted sum does, at about the cost of one selection, so they share this floor.
* ``"svd"`` (``tsv_m``, ``iso_cts``: one per source; ``iso_c``: one, of the summed task vectors,
  whatever N): a full-rank thin ``torch.linalg.svd`` (float32) of every matrix that
  ``mu.merge.spectral`` merges through its SVD (2-D, not an embedding; a wide one as its transpose),
  on the machine's thread count or on one thread, whichever is faster when measured (on a shared
  machine one thread beside a busy process can be several times faster than two).
* ``"io"``: every other method (linear, task arithmetic, the spherical ones, Model Stock,
  nearswap, arcee_fusion, widen, Fisher). Their arithmetic is elementwise or a few dot products
  per source and entry; ``karcher`` does not decompose anything (its iteration runs on the
  N × N Gram matrix of the sources), so its floor is the I/O floor too.

Which kind each method has is the catalog's ``floor`` field (``mu.merge.catalog``), not a list here.

The time of one operation is measured once per distinct shape (``measure``: random float32 data;
the fastest of a few runs within a small time budget per shape) and multiplied by how often the
method needs it (``ops``), so the floor costs a few seconds however many tensors and sources.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch

KINDS = ("select", "svd")

# Why a method may stay above twice its own floor: the work its definition needs that the floor does not
# count. The floor kinds count reading, writing and one selection or SVD; none counts an elementwise pass.
# One pass over a 278M-parameter model in float32 reads and writes ~2 GB, a sizeable share of a read of the
# model; the counts below are read from each kernel (mu.merge) per chunk and source. ``results.md`` names
# every method above the target with this sentence, or "no reason stated".
_TV_PASSES = "task vectors (N subtractions), the mask applied and the weights (2N passes)"
_ELECTION = "sign election: the sign of the sum, then per source an agreement test, a count and a masked sum (4N)"
BEYOND_FLOOR = {
    "linear": "fixed costs of every merge the I/O floor leaves out: every tensor read and written is checked "
    "finite, the output against the config's architecture, and config, tokenizer and merge details are written",
    "task_arithmetic": "N subtractions of the base, N scaled additions and the base added back: 2N + 1 "
    "elementwise passes and one more input (the base) than a weighted sum",
    "ties": f"beyond one selection per tensor and source: {_TV_PASSES}, {_ELECTION}",
    "dare_ties": f"one uniform random number per entry and source (the floor counts a selection instead), "
    f"{_TV_PASSES}, {_ELECTION}",
    "dare_linear": f"one uniform random number per entry and source, {_TV_PASSES}",
    "breadcrumbs": f"two selections per tensor and source (the smallest entries and the outliers), {_TV_PASSES}",
    "breadcrumbs_ties": f"two selections per tensor and source, {_TV_PASSES}, {_ELECTION}",
    "della": "the rank of every entry within its row (its drop probability is linear in that rank), a full sort "
    f"per row where the floor counts one partition; a random draw per entry; {_TV_PASSES}; {_ELECTION}",
    "della_linear": "the rank of every entry within its row, a full sort per row where the floor counts one "
    f"partition; a random draw per entry; {_TV_PASSES}",
    "sce": f"the variance of every entry across the sources (2N passes) before its selection, {_TV_PASSES}, "
    f"{_ELECTION}",
    "ram": f"an overlap count per entry over the sources (N passes), {_TV_PASSES}",
    "ramplus_tl": f"an overlap count and a per-row contribution statistic per entry over the sources, {_TV_PASSES}",
    "slerp": "norms, a dot product and the spherical weights per tensor, then the interpolation: 4 passes",
    "nuslerp": "task vectors against the base, their norms and dot product, the interpolation and the base "
    "added back: 6 passes over 3 inputs",
    "multislerp": "every source normalised, their weighted mean projected back to the sphere and rescaled: "
    "about 4N passes",
    "karcher": "the N × N Gram matrix of the sources (N(N + 1)/2 dot products over the model) and the "
    "iteration's log and exp maps per source",
    "model_stock": "the angle between every pair of task vectors: N(N − 1)/2 dot products over the model, plus "
    "N subtractions",
    "nearswap": "a distance per entry, its threshold and the interpolation: 4 passes over 2 inputs",
    "arcee_fusion": "a softmax of both models' rows and a KL divergence per row, a quantile threshold (a "
    "selection the I/O floor does not count) and the masked update",
    "widen": "per column, the norm and direction of each task vector against the base, a ranking of the "
    "scores over the columns and a softmax over the sources: about 6N passes",
    "widen_rowwise": "per row, the norm and direction of each task vector, the scores ranked and softmaxed over "
    "the sources: about 6N passes",
    "fisher_simple": "each parameter squared as its importance, a weighted sum of importance times parameter "
    "and the division by the summed importance: 3N + 1 passes",
    "iso_cts": "beyond one SVD per matrix and source: the common subspace's SVD, every task vector projected "
    "off it, the orthogonalisation of the combined basis and the reconstruction (matrix products)",
    "tsv_m": "beyond one SVD per matrix and source: the orthogonalisation of the stacked singular vectors (two "
    "more SVDs) and the reconstruction",
}
BUDGET_S = 1.0  # per shape and kind: runs stop once they have taken this long (at least one run)
REPEATS = 3


def kind(method: str) -> str:
    """``"select"``, ``"svd"`` or ``"io"``: what ``method``'s floor adds to the I/O floor (module docstring),
    as the catalog declares it (``Method.floor``)."""
    from mu.merge import catalog

    return catalog.get(method).floor


def shape_key(shape: tuple[int, ...]) -> str:
    """A JSON-able name of a shape: ``"768x3072"``, ``""`` for a scalar."""
    return "x".join(str(d) for d in shape)


def decomposed(key: str, shape: tuple[int, ...]) -> bool:
    """Whether the spectral methods merge ``key`` through its SVD (as ``mu.merge.spectral.is_matrix``)."""
    from mu.merge import spectral

    return spectral.is_matrix(key, shape)


def ops(method: str, n: int, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """{shape key: how many operations of ``kind(method)``} a merge of ``n`` sources needs at least."""
    k = kind(method)
    if k == "io":
        return {}
    if k == "select":
        per = n
        counts = Counter(shape_key(tuple(s)) for s in shapes.values() if math.prod(s) > 0)
    else:
        from mu.merge import catalog

        per = 1 if catalog.get(method).floor_once else n
        counts = Counter(shape_key(tuple(s)) for key, s in shapes.items() if decomposed(key, tuple(s)))
    return {s: c * per for s, c in counts.items() if per}


KTHVALUE_MAX = 1 << 22  # larger tensors time numpy's partition only: torch.kthvalue was ~10x slower on the CPU


def _select(x: torch.Tensor) -> dict[str, float]:
    """Seconds of one in-place ``numpy.partition`` of ``x`` (flattened; a copy, untimed) and, up to
    ``KTHVALUE_MAX`` elements, one ``torch.kthvalue``."""
    flat = x.reshape(-1)
    k = max(1, flat.numel() // 2)
    out = {}
    work = flat.clone().numpy()
    started = time.perf_counter()
    work.partition(k - 1)
    out["partition"] = time.perf_counter() - started
    if flat.numel() <= KTHVALUE_MAX:
        started = time.perf_counter()
        torch.kthvalue(flat, k)
        out["kthvalue"] = time.perf_counter() - started
    return out


def _svd(x: torch.Tensor) -> dict[str, float]:
    """Seconds of one thin SVD of ``x`` on the current thread count and on one thread (a wide matrix as its
    transpose, the faster way round, as ``mu.merge.spectral`` decomposes it)."""
    x = x.mT if x.shape[-2] < x.shape[-1] else x
    out = {}
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            started = time.perf_counter()
            torch.linalg.svd(x, full_matrices=False)
            out[f"svd_{threads}t"] = time.perf_counter() - started
        finally:
            torch.set_num_threads(before)
    return out


def op_seconds(
    shape: tuple[int, ...], what: str, *, repeats: int = REPEATS, budget_s: float = BUDGET_S, seed: int = 0
) -> dict[str, Any]:
    """The fastest of up to ``repeats`` runs (stopping once ``budget_s`` is spent) of one ``what``
    (``"select"`` or ``"svd"``) on random float32 data of ``shape``: {"s": seconds, "runs": ..., "how": ...}."""
    if what not in KINDS:
        raise ValueError(f"unknown floor operation {what!r}; valid: {list(KINDS)}")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    best: dict[str, float] = {}
    spent, runs = 0.0, 0
    while runs < repeats and (runs == 0 or spent < budget_s):
        got = _select(x) if what == "select" else _svd(x)
        for how, s in got.items():
            best[how] = min(s, best.get(how, s))
        spent += sum(got.values())
        runs += 1
    how = min(best, key=best.get)
    return {"s": best[how], "runs": runs, "how": how, **{f"{h}_s": s for h, s in best.items()}}


def measure(
    shapes: Mapping[str, tuple[int, ...]], *, repeats: int = REPEATS, budget_s: float = BUDGET_S
) -> dict[str, Any]:
    """Per kind, {shape key: op_seconds(...)} over the distinct shapes that kind needs, and the thread count."""
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "select": {}, "svd": {}}
    wanted = {
        "select": {tuple(s) for s in shapes.values() if math.prod(s) > 0},
        "svd": {tuple(s) for key, s in shapes.items() if decomposed(key, tuple(s))},
    }
    for what, distinct in wanted.items():
        for shape in sorted(distinct, key=math.prod):
            out[what][shape_key(shape)] = op_seconds(shape, what, repeats=repeats, budget_s=budget_s)
    return out


def compute_s(method: str, n: int, shapes: Mapping[str, tuple[int, ...]], measured: Mapping[str, Any]) -> float:
    """Seconds of compute ``method`` cannot avoid merging ``n`` sources of ``shapes`` (0 for ``"io"``)."""
    k = kind(method)
    if k == "io":
        return 0.0
    per = measured[k]
    missing = sorted(set(ops(method, n, shapes)) - set(per))
    if missing:
        raise ValueError(f"the {k} floor was not measured for shapes {missing}")
    return float(sum(count * per[s]["s"] for s, count in ops(method, n, shapes).items()))


def of(
    method: str, n: int, io_floor_s: float, shapes: Mapping[str, tuple[int, ...]], measured: Mapping[str, Any]
) -> dict[str, Any]:
    """{"floor_kind", "compute_floor_s", "own_floor_s" = I/O floor + compute, "floor_ops"}: one merge's floor."""
    c = compute_s(method, n, shapes, measured)
    return {
        "floor_kind": kind(method),
        "compute_floor_s": c,
        "own_floor_s": io_floor_s + c,
        "floor_ops": int(sum(ops(method, n, shapes).values())),
    }


def model_shapes(folder: str) -> dict[str, tuple[int, ...]]:
    """{tensor: shape} of a model folder's weights, read from the headers."""
    from mu.merge import lazy

    return {k: tuple(s) for k, (s, _) in lazy.meta(lazy.open_model(folder)).items()}


def seconds_table(measured: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{kind: {shape: seconds}}: the measured figures without their details."""
    return {k: {s: v["s"] for s, v in measured[k].items()} for k in KINDS}
