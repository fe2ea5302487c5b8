"""The types of the method catalog (``mu.merge.catalog``): a method is a small typed record, each of
its knobs a type, a default and a valid range. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

Reads = Literal["chunks", "matrices", "tensors"]
Floor = Literal["io", "select", "svd"]
BaseUse = Literal["needs", "optional", "unused"]

FAMILIES = {
    "averaging": "weighted averages of the parameters",
    "task vectors": "sparsified and combined differences from the base",
    "geometric": "interpolation on the hypersphere, or a ratio from the geometry of the task vectors",
    "selective": "entry by entry, how much of each source's change to keep",
    "spectral": "task vectors combined through their singular value decomposition",
    "disentangled": "magnitude and direction of each column scored separately",
    "statistics": "weighted by data statistics of each source (Fisher information, Gram matrices)",
    "adaptive": "coefficients fitted on the target's unlabeled text",
}


@dataclasses.dataclass(frozen=True)
class Knob:
    """One parameter of a method: its type, default and valid range (bounds included unless open)."""

    name: str
    type: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()

    def valid(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type is bool:
            return "true or false"
        kind = {int: "an integer", float: "a number"}[self.type]
        lo = None if self.low is None else ("> " if self.open_low else ">= ") + f"{self.low:g}"
        hi = None if self.high is None else ("< " if self.open_high else "<= ") + f"{self.high:g}"
        return " ".join([kind] + [" and ".join(b for b in (lo, hi) if b)] if lo or hi else [kind])

    def check(self, method: str, value: Any) -> Any:
        """``value`` as this knob's type, or a ValueError naming method, knob, value and what is valid."""
        bad = ValueError(f"merge method {method!r}: {self.name}={value!r} is not valid; valid: {self.valid()}")
        if self.choices:
            if value not in self.choices:
                raise bad
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if self.type is int:
            if not float(value).is_integer():
                raise bad
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            raise bad
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            raise bad
        return value


@dataclasses.dataclass(frozen=True)
class Method:
    """One merge method. ``apply`` (the merge of one piece of a tensor), ``prepare`` (what it needs of the
    whole tensor first) and ``setup`` (checks and constants of the whole merge) are ``"module:function"``
    in ``mu.merge``, run by the one loop of ``mu.merge.stream``; ``fixed`` are the kernel arguments
    that make it this method (TIES is the task-vector kernel with magnitude sparsification and sign
    consensus), never knobs. ``reads``: what ``apply`` is given (``mu.merge.stream``). ``floor``:
    the work it cannot avoid beyond reading and writing (``bench.floors``): ``"select"`` a selection
    per tensor and source, ``"svd"`` an SVD per matrix and source (``floor_once``: one per matrix)."""

    name: str
    family: str
    summary: str
    apply: str
    knobs: tuple[Knob, ...] = ()
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    base: BaseUse = "unused"
    weights: Literal["used", "ignored"] = "used"
    sources: int | None = None  # an exact number of sources; None: any number
    min_sources: int = 1
    reads: Reads = "chunks"
    prepare: str | None = None
    setup: str | None = None
    floor: Floor = "io"
    floor_once: bool = False
    statistics: str | None = None  # the per-source statistics it is given: "fishers", "grams", "coefficients"
    adaptive: bool = False  # fitted on the target's unlabeled text: the "adapted" family
    reference: str = ""
    mergekit: str | None = None  # mergekit 0.1.5's name for the same method, where it has one
    # a rule between knobs: their resolved values -> what is wrong, or None
    rule: Callable[[Mapping[str, Any]], str | None] | None = None

    def defaults(self) -> dict[str, Any]:
        return {k.name: k.default for k in self.knobs}

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise ValueError(f"merge method {self.name!r} does not take {name!r}; its knobs: {sorted(self.defaults())}")


# Knobs several methods of the catalog share (``mu.merge.catalog``).
def density(default: float) -> Knob:
    return Knob("density", float, default, "fraction of each task vector's entries kept", 0.0, 1.0, open_low=True)


LAMBDA = Knob("lambda_", float, 1.0, "scale of the combined task vector added to the base")
SEED = Knob("seed", int, 42, "seed of the random masks (merge_models sets it to the run's seed)", 0)
GAMMA = Knob("gamma", float, 0.01, "fraction of the largest entries dropped as outliers", 0.0, 1.0, open_high=True)
EPSILON = Knob("epsilon", float, 0.15, "spread of the keep probabilities around density", 0.0, 1.0)


def della_rule(knobs: Mapping[str, Any]) -> str | None:
    d, e = knobs["density"], knobs["epsilon"]
    if d < 1.0 and not (0 < d - e and d + e < 1):
        return f"epsilon={e} with density={d}: density ± epsilon must lie in (0, 1)"
    return None


def rescale(default: bool) -> Knob:
    return Knob("rescale", bool, default, "divide the kept entries by their keep probability")
