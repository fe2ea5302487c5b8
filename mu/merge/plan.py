"""A merge's checked plan: the method, every knob, the weights, the base and the device, resolved once.

Arguments are checked where they enter, here, and nowhere behind: ``mu.merge.merge`` (notebooks),
``mu.merge.merge_models`` (model folders), ``python -m mu merge`` and the batch runner make a
``Plan`` before any tensor is read, and the registry's loop and the kernels take it as given. A bad
value is the same ``ValueError`` with the same words wherever it entered (``mu.merge.catalog``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from mu.langs.similarity import check_weights
from mu.merge import catalog, chunks
from mu.merge.spec import Method


@dataclasses.dataclass(frozen=True)
class Plan:
    method: Method
    knobs: dict[str, Any]  # every knob of the method, checked, defaults filled in
    weights: dict[str, float]  # {source: weight}, checked and normalised to sum 1
    base: bool  # whether the kernel is given the base model
    device: torch.device
    head: str = "merge"  # "merge", or the source whose classifier head is kept
    embeddings: str = "merge"  # "merge", or the source whose embeddings are kept

    @property
    def name(self) -> str:
        return self.method.name


def make(
    method: str,
    weights: Mapping[str, float],
    knobs: Mapping[str, Any] | None = None,
    *,
    sources: Iterable[str] | None = None,
    base: bool = False,
    device: str | torch.device | None = None,
    head: str = "merge",
    embeddings: str = "merge",
    seed: int | None = None,
) -> Plan:
    """Check everything about a merge that can be checked before reading a model.

    ``sources``: the sources there are models for (default: the weights' keys); ``base``: whether a
    base model is given; ``seed``: the run's seed, the default of a method's own ``seed`` knob.
    """
    spec = catalog.get(method)
    given = dict(knobs or {})
    if seed is not None and "seed" in spec.defaults() and given.get("seed") is None:
        given["seed"] = seed
    resolved = catalog.resolve(method, given)
    w = check_weights(weights, list(sources) if sources is not None else None)
    w = {k: w[k] for k in weights}  # the weights' order: pairwise methods go from the first to the second
    if spec.sources is not None and len(w) != spec.sources:
        raise ValueError(f"merge method {method!r} merges exactly {spec.sources} sources, got {len(w)}: {list(w)}")
    if len(w) < spec.min_sources:
        raise ValueError(f"merge method {method!r} needs at least {spec.min_sources} sources, got {len(w)}: {list(w)}")
    if spec.base == "needs" and not base:
        raise ValueError(
            f"merge method {method!r} needs the base (pretrained) model; "
            f"methods that need one: {catalog.where(base='needs')}"
        )
    for choice, what in ((head, "head"), (embeddings, "embeddings")):
        if choice != "merge" and choice not in w:
            raise ValueError(f"{what}={choice!r}: valid are 'merge' or one of the sources {list(w)}")
    return Plan(spec, resolved, w, base and spec.base != "unused", chunks.device(device), head, embeddings)
