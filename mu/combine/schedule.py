"""When iterative training merges: the fixed schedule and the adaptive decision, as pure functions.

Fixed: a merge every ``merge_frequency`` epochs (``fixed``). Adaptive: after every
epoch, ``decide`` looks at each source's dev accuracy since the last merge and
says whether to merge now and why:

1. ``end``: the run has trained ``max_epochs`` epochs (the last merge is always made);
2. ``min_interval``: fewer than ``min_interval`` epochs since the last merge: no merge;
3. ``performance_drop``: a source's dev accuracy fell by more than ``performance_drop``
   since the previous epoch (1.0 switches the trigger off: no accuracy falls by more);
4. ``convergence``: the sources' mean dev accuracy gained less than
   ``convergence_threshold`` over the last ``patience`` epochs (best of the window
   against the best before it);
5. ``max_interval``: ``max_interval`` epochs since the last merge;
6. otherwise ``improving``: no merge.

``decide`` returns ``(merge, reason, detail)``: ``reason`` is one of ``REASONS``,
``detail`` says it with the numbers. Nothing here trains or reads files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

SCHEDULES = ("fixed", "adaptive")
REASONS = ("fixed", "end", "min_interval", "performance_drop", "convergence", "max_interval", "improving")
# The adaptive schedule's parameters and their defaults.
ADAPTIVE_DEFAULTS: dict[str, Any] = {
    "min_interval": 1,
    "max_interval": 3,
    "patience": 1,
    "convergence_threshold": 0.01,
    "performance_drop": 0.0,
}


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def fixed(max_epochs: int, merge_frequency: int) -> list[int]:
    """Epochs of each cycle: ``merge_frequency`` each, the last one what is left of ``max_epochs``."""
    _positive_int("max_epochs", max_epochs)
    _positive_int("merge_frequency", merge_frequency)
    n = math.ceil(max_epochs / merge_frequency)
    return [min(merge_frequency, max_epochs - k * merge_frequency) for k in range(n)]


def check(merge_schedule: str, max_epochs: int, merge_frequency: int | None, **adaptive: Any) -> dict[str, Any] | None:
    """Validate a schedule's arguments: the adaptive parameters (``adaptive_params``) or None for
    the fixed schedule. An argument of the other schedule is an error, not ignored."""
    if merge_schedule not in SCHEDULES:
        raise ValueError(f"unknown merge_schedule {merge_schedule!r}; valid: {list(SCHEDULES)}")
    given = sorted(k for k, v in adaptive.items() if v is not None)
    if merge_schedule == "fixed":
        fixed(max_epochs, merge_frequency)  # validates both
        if given:
            raise ValueError(
                f"{given} apply to merge_schedule='adaptive', not 'fixed' (which merges every merge_frequency epochs)"
            )
        return None
    _positive_int("max_epochs", max_epochs)
    if merge_frequency is not None:
        raise ValueError(
            "merge_frequency applies to merge_schedule='fixed'; the adaptive schedule merges "
            "min_interval to max_interval epochs apart"
        )
    return adaptive_params(**adaptive)


def adaptive_params(**given: Any) -> dict[str, Any]:
    """The adaptive parameters (``ADAPTIVE_DEFAULTS`` where ``given`` is None), validated."""
    unknown = sorted(set(given) - set(ADAPTIVE_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown adaptive schedule parameter(s) {unknown}; valid: {sorted(ADAPTIVE_DEFAULTS)}")
    p = {k: ADAPTIVE_DEFAULTS[k] if given.get(k) is None else given[k] for k in ADAPTIVE_DEFAULTS}
    for name in ("min_interval", "max_interval", "patience"):
        _positive_int(name, p[name])
    if p["min_interval"] > p["max_interval"]:
        raise ValueError(f"min_interval ({p['min_interval']}) must be <= max_interval ({p['max_interval']})")
    for name in ("convergence_threshold", "performance_drop"):
        v = p[name]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return p


def decide(
    dev: Sequence[Mapping[str, float]],
    *,
    epochs_done: int,
    max_epochs: int,
    min_interval: int,
    max_interval: int,
    patience: int,
    convergence_threshold: float,
    performance_drop: float,
) -> tuple[bool, str, str]:
    """Merge now? ``dev``: one ``{source: dev accuracy}`` per epoch since the last merge (oldest
    first, the epoch just finished last); ``epochs_done``: epochs trained in the whole run."""
    n = len(dev)
    if n < 1 or any(set(d) != set(dev[0]) or not d for d in dev):
        raise ValueError(f"decide needs >= 1 epoch of dev accuracies over the same sources, got {list(dev)}")
    if epochs_done >= max_epochs:
        return True, "end", f"epoch {epochs_done} is the last (max_epochs={max_epochs})"
    if n < min_interval:
        return False, "min_interval", f"{n} epoch(s) since the last merge < min_interval={min_interval}"
    if n >= 2:
        drops = {loc: dev[-2][loc] - dev[-1][loc] for loc in dev[-1]}
        worst = max(drops, key=lambda loc: (drops[loc], loc))
        if drops[worst] > performance_drop:
            return (
                True,
                "performance_drop",
                (
                    f"{worst} dev accuracy fell {dev[-2][worst]:.4f} -> {dev[-1][worst]:.4f}"
                    f" (drop {drops[worst]:.4f} > performance_drop={performance_drop})"
                ),
            )
    if n > patience:
        mean = [sum(d.values()) / len(d) for d in dev]
        gain = max(mean[-patience:]) - max(mean[:-patience])
        if gain < convergence_threshold:
            return (
                True,
                "convergence",
                (
                    f"mean source dev accuracy gained {gain:+.4f} over the last {patience} "
                    f"epoch(s) (< convergence_threshold={convergence_threshold})"
                ),
            )
    if n >= max_interval:
        return True, "max_interval", f"{n} epoch(s) since the last merge = max_interval={max_interval}"
    return False, "improving", f"{n} epoch(s) since the last merge, dev accuracy still improving"
