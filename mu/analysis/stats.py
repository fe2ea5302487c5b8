"""Statistics of the aggregation: Wilson intervals of an accuracy, bootstrap intervals of a mean over targets,
and the multiple-comparison adjustment for families of paired tests (many systems against one baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input's order.
    NaN (a test not computable) stays NaN and does not count towards the family's size."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def wilson_interval(accuracy: float, n: int | None, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy measured on ``n`` examples (NaN if n unknown)."""
    if n is None or not np.isfinite(n) or n <= 0 or not np.isfinite(accuracy):
        return (np.nan, np.nan)
    denom = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denom
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / denom
    return (centre - half, centre + half)


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = 10000, seed: int = 42, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (NaN with fewer than 2 values)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return (float(lo), float(hi))


def holm_by(frame, by: str = "baseline", p: str = "p_value", out: str = "p_holm"):
    """``frame`` with ``out`` = ``holm`` of its ``p`` column within each group of ``by`` (the family of tests
    against one baseline); the column is added after ``p`` when absent. Modifies and returns ``frame``."""
    if out not in frame.columns:
        frame.insert(frame.columns.get_loc(p) + 1, out, np.nan)
    for _, idx in frame.groupby(by).groups.items():
        frame.loc[idx, out] = holm(frame.loc[idx, p].to_numpy(dtype=float))
    return frame
