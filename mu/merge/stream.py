"""The one loop every merge method runs in: tensor by tensor and, for most methods, chunk by chunk.

A method supplies pure functions (``mu.merge.catalog`` records them as ``"module:function"`` pointers,
resolved here on first use); this module owns everything around them, once: which tensors, their
order, keeping a source's head or embeddings, reading each source's slice (lazily from disk when the
inputs are lazy: only those bytes), reused buffers, placing each result in the output, threads and
progress. ``merge_models`` hands the finished state dict to its atomic writer.

* ``apply(xs, b, w, **knobs) -> tensor``: the merged piece. ``xs`` is an (N, m) float32 block on the
  device whose rows are the sources' pieces in the weights' order (scratch: ``apply`` may overwrite
  it), ``b`` the base's piece (or None), ``w`` the weights as floats in the same order (normalised to
  sum 1 by the registry). It is a function of its arguments only, so ``apply`` on the weights of an
  ``nn.Linear`` is the method on that layer (``tensor`` below runs it on in-memory tensors).
* ``prepare(t, w, **knobs) -> dict`` (optional): what the method needs of the whole tensor before any
  piece is merged (a magnitude threshold, DARE's masks, norms, a Gram matrix of the sources, WIDEN's
  column statistics), gathered from ``t.chunks()`` / ``t.whole(i)``, which read as the loop reads;
  the dict is passed to every ``apply`` of that tensor with ``at`` (where the piece lies).
* ``setup(names, w, base, statistics=..., **knobs) -> dict`` (optional): checks and constants of the
  whole merge, computed once before the first tensor and passed to ``prepare`` and ``apply``.

The catalog's ``reads`` says what ``apply`` is given: ``"chunks"``, flat row spans of at most
``chunk_elements`` elements (``mu.merge.chunks``); ``"tensors"``, every source's whole tensor,
shaped (with its statistics: Fisher, Gram matrices, fitted coefficients); ``"matrices"``, a
``Sources`` sequence that reads source i whole only when indexed, so an SVD method holds one source
at a time. Data statistics that need all tensors at once (a Fisher diagonal, Gram matrices) are
computed before the loop, in ``mu.merge.prepare``, shared with ``mu.combine.iterative``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from mu.merge import chunks
from mu.merge.spec import Method

StateDict = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class At:
    """Where a piece lies in its tensor: rows ``span`` of ``shape`` (None: the whole tensor)."""

    shape: tuple[int, ...]
    span: chunks.Span = None
    key: str = ""

    @property
    def flat(self) -> slice:
        """Its elements in the flattened tensor."""
        if self.span is None:
            return slice(0, max(math.prod(self.shape), 1) if self.shape else 1)
        return chunks.flat(self.shape, self.span)

    @property
    def rows(self) -> slice:
        """Its rows (the first dimension; a 0-d tensor is one row)."""
        if self.span is None:
            return slice(0, self.shape[0] if self.shape else 1)
        return slice(*self.span)


class Tensor:
    """One tensor of the merge, as ``prepare`` sees it: its name, shape, spans, and reads of its inputs
    into buffers reused for every piece of it."""

    def __init__(
        self,
        key: str,
        sources: Sequence[Mapping[str, torch.Tensor]],
        base: Mapping[str, torch.Tensor] | None,
        dev: torch.device,
        step: int,
        stats: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ):
        self.key, self.sources, self.base, self.device, self.stats = key, list(sources), base, dev, stats
        self.step = step
        self.shape, self.dtype = chunks.shape_dtype(self.sources[0], key)
        self.n = len(self.sources)
        self.numel = math.prod(self.shape)
        self.spans = chunks.spans(self.shape, step)
        self.size = chunks.flat(self.shape, self.spans[0]).stop
        self._block = self._base = self._stat = self._base_whole = None

    def respan(self, step: int) -> None:
        """Pieces of at most ``step`` elements from now on (``prepare`` of a method that needs larger ones)."""
        self.step, self.spans = step, chunks.spans(self.shape, step)
        self.size = chunks.flat(self.shape, self.spans[0]).stop
        self._block = self._base = self._stat = None

    def at(self, span: chunks.Span) -> At:
        return At(self.shape, span, self.key)

    def read(self, span: chunks.Span) -> torch.Tensor:
        """The sources' pieces ``span`` as the rows of one (N, m) float32 block (reused: scratch)."""
        if self._block is None:
            self._block = torch.empty(self.n * self.size, device=self.device)
        m = chunks.flat(self.shape, span).stop - chunks.flat(self.shape, span).start
        x = self._block[: self.n * m].view(self.n, m)
        for i, sd in enumerate(self.sources):
            chunks.read(sd, self.key, span, self.device, out=x[i])
        return x

    def read_base(self, span: chunks.Span) -> torch.Tensor | None:
        """The base's piece ``span`` (a view of the whole base once ``whole(None, keep=True)`` read it)."""
        if self.base is None:
            return None
        if self._base_whole is not None:
            return self._base_whole[chunks.flat(self.shape, span)]
        if self._base is None:
            self._base = torch.empty(self.size, device=self.device)
        return chunks.read(self.base, self.key, span, self.device, out=self._base)

    def read_stats(self, span: chunks.Span) -> torch.Tensor | None:
        """Each source's statistic (Fisher) of piece ``span``, as the rows of an (N, m) block."""
        if self.stats is None:
            return None
        if self._stat is None:
            self._stat = torch.empty(self.n * self.size, device=self.device)
        m = chunks.flat(self.shape, span).stop - chunks.flat(self.shape, span).start
        x = self._stat[: self.n * m].view(self.n, m)
        for i, sd in enumerate(self.stats):
            chunks.read(sd, self.key, span, self.device, out=x[i])
        return x

    def chunks(self, *, base: bool = True) -> Iterator[tuple[At, torch.Tensor, torch.Tensor | None]]:
        """(where, the sources' (N, m) block, the base's piece or None) for every span, in order."""
        for span in self.spans:
            yield self.at(span), self.read(span), self.read_base(span) if base else None

    def whole(self, i: int | None, *, out: torch.Tensor | None = None, keep: bool = False) -> torch.Tensor:
        """Source ``i`` (None: the base) whole, flat float32 on the device, a copy the caller may change
        (into ``out`` when given). ``keep`` (the base only): later pieces of the base are views of this
        one instead of fresh reads, so the method must not change them."""
        sd = self.base if i is None else self.sources[i]
        span = None if not self.shape else (0, self.shape[0])
        if out is not None:
            return chunks.read(sd, self.key, span, self.device, out=out)
        x = chunks.read(sd, self.key, span, self.device, copy=True)
        if keep and i is None:
            self._base_whole = x
        return x


class Sources(Sequence[torch.Tensor]):
    """The sources of one tensor for a ``"matrices"`` method: item i is source i read whole (shaped,
    float32, a fresh copy on the device) when indexed, so one source is held at a time."""

    def __init__(self, t: Tensor):
        self._t = t

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        return self._t.whole(i).view(self._t.shape)

    def __len__(self) -> int:
        return self._t.n


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A method's functions, resolved from the catalog's pointers, and the arguments that make it the method."""

    spec: Method
    apply: Callable[..., torch.Tensor]
    prepare: Callable[..., dict] | None
    setup: Callable[..., dict] | None

    @property
    def reads(self) -> str:
        return self.spec.reads


def _resolve(pointer: str | None) -> Callable | None:
    if pointer is None:
        return None
    module, name = pointer.split(":")
    return getattr(importlib.import_module(f"mu.merge.{module}"), name)


_KERNELS: dict[str, Kernel] = {}


def kernel(spec: Method) -> Kernel:
    """The functions of ``spec`` (imported on first use, so the catalog stays torch-free)."""
    if spec.name not in _KERNELS:
        _KERNELS[spec.name] = Kernel(spec, _resolve(spec.apply), _resolve(spec.prepare), _resolve(spec.setup))
    return _KERNELS[spec.name]


@torch.no_grad()
def run(
    spec: Method,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    weights: Mapping[str, float],
    base: Mapping[str, torch.Tensor] | None = None,
    *,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
    statistics: Mapping[str, Mapping[str, Any]] | None = None,
    keep: Mapping[str, str] | None = None,
    progress: bool = False,
    **knobs: Any,
) -> StateDict:
    """Merge ``state_dicts`` ({source: state dict}, lazily read or in memory) by method ``spec``.

    ``knobs`` are the method's (defaults filled in from the catalog, its ``fixed`` arguments added);
    ``statistics``: {source: {tensor: statistic}} for a method that takes them; ``keep``: {tensor name
    prefix: source} whose tensors are copied from that source unmerged; ``device`` / ``chunk_elements``
    set where and in what pieces it computes, not the result (to float32 rounding).
    """
    k = kernel(spec)
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    knobs = {**spec.defaults(), **spec.fixed, **knobs}
    names = list(state_dicts)
    if not names:
        raise ValueError(f"{spec.name}: no sources to merge")
    w = [float(weights[s]) for s in names]
    ctx = dict(knobs)
    if k.setup is not None:
        ctx.update(k.setup(names, w, base, statistics=statistics, method=spec.name, **knobs))
    sources = [state_dicts[s] for s in names]
    keys = list(base) if base is not None else list(sources[0])
    out: StateDict = {}
    with chunks.single_threaded(dev):
        # disable=None: off without a terminal (a kernel run by mu.batch.runner), as TQDM_DISABLE turns the others off
        for key in tqdm(keys, desc=f"merge {spec.name}", disable=None if progress else True, leave=False):
            owner = next((s for prefix, s in (keep or {}).items() if s and key.startswith(prefix)), None)
            if owner is not None:
                out[key] = state_dicts[owner][key]
                continue
            stats = None
            if statistics is not None and spec.reads == "chunks":
                stats = [statistics[s] for s in names]
            elif statistics is not None:
                stats = [statistics[s].get(key) if key in statistics[s] else None for s in names]
            out[key] = _tensor(k, key, sources, base, dev, step, w, ctx, stats)
    return out


def is_matrix(key: str, shape: tuple[int, ...]) -> bool:
    """Whether a ``"matrices"`` method is given ``key`` whole: 2-D and not an embedding (whose task vector is
    row-sparse, not a linear map; ``mu.merge.spectral``); its other tensors are given in chunks."""
    return len(shape) == 2 and min(shape) > 0 and not any("embed" in part for part in key.split("."))


def _tensor(
    k: Kernel,
    key: str,
    sources: list[Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor] | None,
    dev: torch.device,
    step: int,
    w: list[float],
    ctx: dict[str, Any],
    stats: list[Any] | None,
) -> torch.Tensor:
    t = Tensor(key, sources, base, dev, step, stats if k.reads == "chunks" else None)
    if k.reads == "chunks" or (k.reads == "matrices" and not is_matrix(key, t.shape)):
        res = torch.empty(t.shape, dtype=t.dtype)
        if t.numel == 0:
            return res
        state = k.prepare(t, w, **ctx) if k.prepare is not None and k.reads == "chunks" else {}
        dst = res.reshape(-1)
        extra: dict[str, Any] = {}
        for span in t.spans:
            at = t.at(span)
            if t.stats is not None:
                extra["stats"] = t.read_stats(span)
            dst[at.flat] = k.apply(t.read(span), t.read_base(span), w, at=at, **ctx, **state, **extra)
        return res
    b = t.whole(None).view(t.shape) if base is not None else None
    xs = Sources(t) if k.reads == "matrices" else torch.stack([t.whole(i).view(t.shape) for i in range(t.n)])
    extra = {"stats": [_on(s, dev) for s in stats]} if stats is not None else {}
    state = k.prepare(t, w, **ctx) if k.prepare is not None else {}
    y = k.apply(xs, b, w, at=t.at(None), **ctx, **state, **extra)
    return y.to(device="cpu", dtype=t.dtype).reshape(t.shape)


def _on(value: Any, dev: torch.device) -> Any:
    """A statistic on the compute device (tensors: Fisher, Gram matrices); scalars (AdaMerging's
    fitted coefficients) and missing ones as they are."""
    return value.to(dev) if isinstance(value, torch.Tensor) else value


def tensor(
    method: str,
    xs: Sequence[torch.Tensor],
    b: torch.Tensor | None,
    w: Sequence[float],
    *,
    key: str = "weight",
    device: str | torch.device | None = "cpu",
    chunk_elements: int | None = None,
    **knobs: Any,
) -> torch.Tensor:
    """Method ``method`` on one tensor held in memory (the sources' ``xs``, the base ``b``): the loop of a
    merge restricted to that tensor, e.g. the weights of an ``nn.Linear``."""
    from mu.merge import catalog

    names = [f"s{i}" for i in range(len(xs))]
    out = run(
        catalog.get(method),
        {n: {key: x} for n, x in zip(names, xs)},
        dict(zip(names, w)),
        {key: b} if b is not None else None,
        device=device,
        chunk_elements=chunk_elements,
        **knobs,
    )
    return out[key]
