"""The types of the method catalog (``mu.merge.catalog``): a method is a small typed record, each of
its knobs a type, a default and a valid range. Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

Reads = Literal["chunks", "matrices", "tensors"]
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
    """One merge method. ``kernel`` is ``"module:function"`` in ``mu.merge``; ``fixed`` are the kernel
    arguments that make it this method (TIES is ``task_vectors`` with magnitude sparsification and
    sign consensus), never knobs."""

    name: str
    family: str
    summary: str
    kernel: str
    knobs: tuple[Knob, ...] = ()
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    base: BaseUse = "unused"
    weights: Literal["used", "ignored"] = "used"
    sources: int | None = None  # an exact number of sources; None: any number
    min_sources: int = 1
    reads: Reads = "chunks"
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
