"""Where and in what pieces ``mu``'s own merge methods compute: the device, and row ranges of a tensor.

A method that works chunk by chunk reads rows ``start:stop`` of each input
(:func:`mu.merge.lazy.rows`: only those bytes are read from disk), computes on
``device`` in float32, and copies the result into the CPU output tensor. A
chunk holds at most ``chunk_elements`` elements (whole rows; at least one row),
so the scratch of a merge does not grow with the tensor: the 250k × 768 word
embeddings of XLM-R are merged in ~180 pieces of 1M elements.

Threads: elementwise chunk arithmetic runs on one thread (:func:`single_threaded`);
compute-bound steps (an SVD, a Gram matrix of the sources, a per-row sort) run on
the free cores (:func:`compute_threads`) when they are large enough to gain from it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

import torch

from mu.merge import lazy

CHUNK_ELEMENTS = 1 << 20  # 4 MB of float32 per input and chunk: fits the CPU caches that matter
# Below this many elements (or multiply-adds) a compute-bound step stays on one thread: torch's thread pool
# meets at a barrier after each operation, which costs more than a second core gains on small work.
COMPUTE_MIN_WORK = 1 << 18
Span = tuple[int, int] | None  # rows [start, stop) of the first dimension; None: the whole (0-d) tensor


def device(name: str | torch.device | None = None) -> torch.device:
    """The device to merge on: ``None`` is CUDA when available, else the CPU; an unusable one is a ValueError."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"unknown device {name!r}; valid: None (CUDA when available), 'cpu', 'cuda', 'cuda:<index>'"
        ) from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: merges run on 'cpu' or 'cuda', not {dev.type!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but torch sees no CUDA GPU "
                "(torch.cuda.is_available() is False); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


@contextlib.contextmanager
def single_threaded(dev: torch.device) -> Iterator[None]:
    """On the CPU, run torch's elementwise chunk work on one thread (restored afterwards).

    Chunk arithmetic is memory-bound and made of many small operations; on a
    shared machine torch's intra-op thread pool waits at every one of them. Measured
    on the project's 2-core VM under load: adding two 2.4M-element float32 chunks
    took 20 ms with 2 threads and 0.4 ms with one.
    """
    if dev.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def compute_threads(dev: torch.device, work: int) -> Iterator[int]:
    """Run a compute-bound step (``work``: its elements or multiply-adds) on the free cores; yields the count.

    On the CPU with at least ``COMPUTE_MIN_WORK`` of work: ``mu.core.threads.count()`` threads
    (``OMP_NUM_THREADS`` when set, else the cores other processes leave free, measured at most every
    few seconds); smaller work runs on one thread; the count is restored afterwards. Why not
    simply every core: on the shared 2-core VM an SVD of a 3072 × 768 matrix took 0.17 s on two
    threads alone, 1-2 s on two threads beside one busy process and 0.4 s on one thread there
    (a 2-source ``tsv_m`` of a small model: 65 s on two threads, 6.4 s on one). Thread counts
    change float rounding (LAPACK / BLAS blocking); set ``OMP_NUM_THREADS`` for bit-identical repeats.
    """
    if dev.type != "cpu":
        yield torch.get_num_threads()
        return
    from mu.core import threads

    n = threads.count() if work >= COMPUTE_MIN_WORK else 1
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)


def check_chunk_elements(chunk_elements: int | None) -> int:
    """``chunk_elements``, or ``CHUNK_ELEMENTS`` for None; a non-positive one is a ValueError."""
    if chunk_elements is None:
        return CHUNK_ELEMENTS
    if not isinstance(chunk_elements, int) or chunk_elements < 1:
        raise ValueError(f"chunk_elements must be a positive int, got {chunk_elements!r}")
    return chunk_elements


def spans(shape: tuple[int, ...], chunk_elements: int) -> list[Span]:
    """Row ranges covering a tensor of ``shape``, each at most ``chunk_elements`` elements (≥ one row)."""
    if not shape:
        return [None]
    row = math.prod(shape[1:])
    step = max(1, chunk_elements // max(row, 1))
    return [(a, min(a + step, shape[0])) for a in range(0, shape[0], step)] or [(0, 0)]


def flat(shape: tuple[int, ...], span: Span) -> slice:
    """The elements of ``span`` in the flattened tensor."""
    if span is None:
        return slice(0, 1)
    row = math.prod(shape[1:])
    return slice(span[0] * row, span[1] * row)


def read(
    state_dict: Mapping[str, torch.Tensor],
    key: str,
    span: Span,
    dev: torch.device,
    *,
    copy: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The rows ``span`` of tensor ``key`` as a flat float32 tensor on ``dev`` (read from disk when lazy).

    ``copy``: the result may be changed in place (it never shares memory with an in-memory input).
    ``out``: a flat float32 buffer on ``dev`` of at least that many elements, reused (no allocation:
    on the CPU a fresh multi-megabyte tensor costs page faults comparable to the arithmetic on it).
    """
    root = state_dict
    while isinstance(root, lazy.Selection):
        root = root.parent
    if out is not None:
        shape, dtype = root.spec(key) if isinstance(root, lazy.LazyStateDict) else (None, None)
        size = math.prod(shape[1:]) * (span[1] - span[0]) if shape and span is not None else None
        if dtype == torch.float32 and out.device.type == "cpu" and size is not None:
            return root.read(key, *span, out=out[:size]).reshape(-1)
        t = state_dict[key] if span is None else lazy.rows(state_dict, key, *span)
        return out[: t.numel()].copy_(t.reshape(-1))
    t = state_dict[key] if span is None else lazy.rows(state_dict, key, *span)
    res = t.reshape(-1).to(device=dev, dtype=torch.float32)
    if copy and not isinstance(root, lazy.LazyStateDict) and res.data_ptr() == t.data_ptr():
        res = res.clone()
    return res


def shape_dtype(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[tuple[int, ...], torch.dtype]:
    return lazy.meta(state_dict)[key]
