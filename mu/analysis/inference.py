"""Item-aware inference for a crossed targets × items design (torch-free, numpy only; pandas for the table).

Every MASSIVE target locale's test split holds translations of the same test utterances, so a system's
per-example correctness is a targets × items matrix whose columns are the same item in every row. Targets
are therefore not independent samples: a hard item is hard in every language, and per-target accuracies
share one sample of items. Treating the per-target accuracies as independent (a bootstrap or Wilcoxon
over targets) ignores the item sampling variance entirely and gives intervals that are too narrow when
item difficulty varies — as it does. This module treats both targets and items as random:

* ``two_way_bootstrap`` / ``two_way_bootstrap_diff``: percentile interval of the mean (of a paired
  difference) from the pigeonhole bootstrap (targets and items resampled independently);
* ``sign_flip_test``: paired sign-flip test of a mean difference with the +1 correction, ``cluster`` =
  "both" (crossed design, the default), "item" or "target"; effect sizes with it;
* ``tost``: equivalence within ±delta by two one-sided sign-flip tests on the same flips;
* ``run_family``: a pre-registered family of superiority / equivalence hypotheses, Holm-adjusted
  (``mu.analysis.stats.holm``), as a table;
* ``item_matrix``: a targets × items matrix from per-target (item ids, values), joined on the id.

Arrays: ``correct[t, i]`` is 1/0 (or a float score) of target ``t`` on item ``i``; every system's array has
the same rows (targets) and columns (item ids) in the same order. NaN marks a cell not observed (a target
lacking an item); means are over observed cells. Every result is deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from mu.analysis import stats

CLUSTERS = ("both", "item", "target")
ALTERNATIVES = ("two-sided", "greater", "less")
# Resamples are drawn in blocks of this many rows: memory stays bounded, and a fixed block size keeps the
# random stream, hence every result, identical for a given (seed, n_boot / n_perm).
_BLOCK = 512
# Null statistics within this relative distance of the observed one count as ties (as extreme): binary data
# give exact ties, and a different summation order must not turn a tie into a miss by one ulp.
_RTOL = 1e-9


class Interval(NamedTuple):
    mean: float
    low: float
    high: float


class FlipTest(NamedTuple):
    mean_diff: float  # mean over observed cells of A − B
    p_value: float  # (1 + #null as extreme) / (1 + n_perm)
    dz_items: float  # mean / sd (ddof 1) of the item clusters' mean differences
    items_favouring_a: float  # share of non-tied item clusters whose mean difference is > 0
    targets_favouring_a: float  # the same over targets
    n_targets: int
    n_items: int
    n_perm: int
    cluster: str
    alternative: str


class Equivalence(NamedTuple):
    mean_diff: float
    delta: float
    p_lower: float  # H0: mean <= -delta
    p_upper: float  # H0: mean >= +delta
    p_value: float  # max of the two (intersection-union test)
    equivalent: bool  # both one-sided tests reject at alpha
    ci_low: float  # two-way bootstrap interval at 1 − 2·alpha (NaN when n_boot = 0), for reporting
    ci_high: float


class Hypothesis(NamedTuple):
    name: str
    a: str
    b: str
    kind: str = "superiority"  # or "equivalence"
    delta: float | None = None  # the equivalence margin (same units as the mean difference)


def _matrix(x, name: str = "correct") -> tuple[np.ndarray, np.ndarray]:
    """(values with NaN set to 0, observed mask as float) of a targets × items array; every target and
    every item must have at least one observed cell (an empty row or column is a join error upstream)."""
    a = np.asarray(x, dtype=float)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"{name} must be a non-empty 2-d targets × items array, got shape {a.shape}")
    mask = np.isfinite(a)
    if not mask.any(axis=1).all() or not mask.any(axis=0).all():
        raise ValueError(
            f"{name}: {int((~mask.any(axis=1)).sum())} target(s) and {int((~mask.any(axis=0)).sum())} "
            "item(s) have no observed value"
        )
    return np.where(mask, a, 0.0), mask.astype(float)


def _counts(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """(k, n) multiplicities of n indices drawn with replacement, k times (the bootstrap weights)."""
    idx = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=k * n).reshape(k, n).astype(float)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def two_way_bootstrap(
    correct, n_boot: int = 2000, seed: int = 42, *, level: float = 0.95, over: str = "both"
) -> Interval:
    """Mean of a targets × items matrix and its percentile bootstrap interval at ``level``.

    ``over="both"`` is the pigeonhole (two-way) bootstrap of a crossed random-effects design (Owen 2007,
    "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2); McCullagh 2000, Bernoulli 6(2)): each replicate
    draws targets with replacement and, independently, items with replacement, and takes the mean over the
    crossed cells (a cell drawn ``u`` times as target and ``v`` times as item weighs ``u·v``). For
    ``y = mu + a_target + b_item + e`` the variance of the mean is σa²/T + σb²/I + σe²/(TI); this bootstrap
    recovers both main terms and overstates the last (Owen: mildly conservative), whereas resampling targets
    only (``over="targets"``, today's bootstrap over per-target accuracies) misses σb²/I — the dominant
    term when items are few and differ in difficulty — and under-covers. ``over="items"`` misses σa²/T.

    Vectorized: replicate ``b``'s numerator is ``sum_i (w_t @ X)[i] · w_i[i]`` for weight vectors w_t (T)
    and w_i (I): one matrix product per block of replicates. NaN cells are left out of both numerator and
    denominator (the mean over observed cells).
    """
    _check_level(level)
    if over not in ("both", "targets", "items"):
        raise ValueError(f"over must be 'both', 'targets' or 'items', got {over!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    x, m = _matrix(correct)
    n_t, n_i = x.shape
    mean = float(x.sum() / m.sum())
    full = bool(m.all())
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _BLOCK):
        k = min(_BLOCK, n_boot - start)
        wt = _counts(rng, k, n_t) if over != "items" else np.ones((k, n_t))
        wi = _counts(rng, k, n_i) if over != "targets" else np.ones((k, n_i))
        num = np.einsum("ki,ki->k", wt @ x, wi)
        # every cell observed: the weights' total is the product of the margins' (half the work)
        den = wt.sum(axis=1) * wi.sum(axis=1) if full else np.einsum("ki,ki->k", wt @ m, wi)
        with np.errstate(invalid="ignore", divide="ignore"):  # a replicate of only missing cells: NaN, skipped
            means[start : start + k] = num / den
    low, high = np.nanquantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(mean, float(low), float(high))


def _pair(correct_a, correct_b) -> np.ndarray:
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape} (same targets and items needed)")
    return a - b


def two_way_bootstrap_diff(
    correct_a, correct_b, n_boot: int = 2000, seed: int = 42, *, level: float = 0.95, over: str = "both"
) -> Interval:
    """``two_way_bootstrap`` of ``correct_a − correct_b`` (same targets × items, same order): the paired
    interval of A's advantage; both systems are resampled with the same targets and items."""
    return two_way_bootstrap(_pair(correct_a, correct_b), n_boot, seed, level=level, over=over)


def _null_sums(x: np.ndarray, n_perm: int, seed: int, cluster: str) -> np.ndarray:
    """The sign-flip reference sums (n_perm,) of ``x`` (missing cells already 0). ``item``: Σ_i r_i·S_i over
    item-cluster sums S_i; ``target``: Σ_t s_t·R_t over target sums; ``both``: Σ_t s_t·R_t + Σ_i r_i·S_i with
    independent signs. The signs depend on (seed, shape, cluster) only, so shifted nulls (``tost``) and
    identical inputs see the same flips."""
    rng = np.random.default_rng(seed)
    rows, cols = x.sum(axis=1), x.sum(axis=0)
    out = np.empty(n_perm)
    for start in range(0, n_perm, _BLOCK):
        k = min(_BLOCK, n_perm - start)
        total = np.zeros(k)
        if cluster in ("both", "target"):
            total += (rng.integers(0, 2, size=(k, len(rows))) * 2 - 1) @ rows
        if cluster in ("both", "item"):
            total += (rng.integers(0, 2, size=(k, len(cols))) * 2 - 1) @ cols
        out[start : start + k] = total
    return out


def _p(null: np.ndarray, observed: float, alternative: str, scale: float) -> float:
    tol = _RTOL * max(scale, 1.0)
    if alternative == "two-sided":
        hits = np.count_nonzero(np.abs(null) >= abs(observed) - tol)
    elif alternative == "greater":
        hits = np.count_nonzero(null >= observed - tol)
    else:
        hits = np.count_nonzero(null <= observed + tol)
    return float((1 + hits) / (1 + len(null)))


def _flip_p(
    x: np.ndarray, m: np.ndarray, shift: float, n_perm: int, seed: int, cluster: str, alternative: str
) -> float:
    """p of H0: mean = ``shift`` (the data shifted by −shift on observed cells, then flipped)."""
    centred = (x - shift) * m
    return _p(
        _null_sums(centred, n_perm, seed, cluster), float(centred.sum()), alternative, float(np.abs(centred).sum())
    )


def _share_positive(v: np.ndarray) -> float:
    signs = np.sign(v)
    decided = np.count_nonzero(signs)
    return float(np.count_nonzero(signs > 0) / decided) if decided else np.nan


def sign_flip_test(
    diff, n_perm: int = 2000, seed: int = 42, cluster: str = "both", alternative: str = "two-sided"
) -> FlipTest:
    """Paired sign-flip (permutation) test of H0: mean difference = 0 for a targets × items ``diff``
    (``correct_a − correct_b``), p = (1 + #null at least as extreme) / (1 + n_perm), deterministic in ``seed``.

    The unit that may be flipped is what the inference generalizes over:

    * ``"item"``: all targets' versions of item ``i`` flip together (the item cluster). Exact at any
      ``n_perm`` under H0 "A and B are exchangeable on each item, items independent", but conditional on
      these targets: it ignores target-to-target variation of the difference (σa²/T), so it is
      anti-conservative for claims about languages beyond the ones measured when A − B varies by target.
    * ``"target"``: each target's row flips (what a paired test over per-target accuracies does). Exact
      conditional on these items, blind to item sampling (σb²/I): anti-conservative when items vary.
    * ``"both"`` (default, the crossed design): no group of flips is an exact symmetry when both targets and
      items are random, so the reference is the sum of an independent target flip and item flip,
      Σ_t s_t·R_t + Σ_i r_i·S_i (R, S: target and item sums; the observed statistic is the plain sum).
      Its variance covers σa²/T and σb²/I and counts the cell noise σe²/(TI) twice — the permutation
      analogue of Clark's (1973) min F'. That excess cannot be removed by any random re-weighting of the
      cells (weights covarying 1 along rows and columns, 0 elsewhere, need variance >= 2 to be positive
      semi-definite), so this is the least conservative reference of its kind: near nominal when item or
      target effects dominate the cell noise (MASSIVE's case), down to ~0.005 rejections at 0.05 when the
      difference is pure cell noise. It is the method used throughout (``tost``, ``run_family``).

    Flips act on target / item sums, so a test costs one (n_perm × I) sign matrix product. Ties within
    rounding count as extreme (conservative, and independent of summation order or dtype). Effect sizes:
    the mean difference, ``dz_items`` (mean / sd of the item clusters' mean differences) and the shares of
    item clusters and targets favouring A.
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster must be one of {CLUSTERS}, got {cluster!r}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    x, m = _matrix(diff, "diff")
    mean = float(x.sum() / m.sum())
    item_means = x.sum(axis=0) / m.sum(axis=0)
    target_means = x.sum(axis=1) / m.sum(axis=1)
    sd = float(np.std(item_means, ddof=1)) if len(item_means) > 1 else np.nan
    dz = mean / sd if sd > 0 else (0.0 if mean == 0 else np.sign(mean) * np.inf)
    return FlipTest(
        mean,
        _flip_p(x, m, 0.0, n_perm, seed, cluster, alternative),
        float(dz),
        _share_positive(item_means),
        _share_positive(target_means),
        x.shape[0],
        x.shape[1],
        n_perm,
        cluster,
        alternative,
    )


def tost(
    diff,
    delta: float,
    alpha: float = 0.05,
    *,
    n_perm: int = 2000,
    seed: int = 42,
    cluster: str = "both",
    n_boot: int = 2000,
) -> Equivalence:
    """Two one-sided tests (Schuirmann 1987) of equivalence within ±``delta`` for the mean of a paired
    targets × items ``diff``: H0⁻ mean <= −delta and H0⁺ mean >= +delta, each by ``sign_flip_test``'s flips
    of the data shifted to the null's boundary, with the same signs (same ``seed``) for both. Equivalent
    when both p-values are below ``alpha``; ``p_value`` is their maximum (the intersection-union test's p,
    the one to adjust in a family). The two-way bootstrap interval at 1 − 2·alpha is returned for reporting
    (its inclusion in ±delta is the interval form of the same question); ``n_boot=0`` skips it.
    """
    if not np.isfinite(delta) or delta <= 0:
        raise ValueError(f"delta must be a positive number, got {delta}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster must be one of {CLUSTERS}, got {cluster!r}")
    x, m = _matrix(diff, "diff")
    mean = float(x.sum() / m.sum())
    p_lower = _flip_p(x, m, -delta, n_perm, seed, cluster, "greater")
    p_upper = _flip_p(x, m, delta, n_perm, seed, cluster, "less")
    ci = two_way_bootstrap(diff, n_boot, seed, level=1 - 2 * alpha) if n_boot else Interval(mean, np.nan, np.nan)
    return Equivalence(
        mean,
        float(delta),
        p_lower,
        p_upper,
        max(p_lower, p_upper),
        bool(p_lower < alpha and p_upper < alpha),
        ci.low,
        ci.high,
    )


FAMILY_COLUMNS = [
    "name",
    "system_a",
    "system_b",
    "kind",
    "delta",
    "mean_diff",
    "ci_low",
    "ci_high",
    "dz_items",
    "items_favouring_a",
    "targets_favouring_a",
    "p_lower",
    "p_upper",
    "p_value",
    "p_holm",
    "verdict",
]


KINDS = ("superiority", "equivalence", "non-inferiority")


def _hypothesis(h) -> Hypothesis:
    h = Hypothesis(**h) if isinstance(h, Mapping) else Hypothesis(*h)
    if h.kind not in KINDS:
        raise ValueError(f"hypothesis {h.name!r}: kind must be one of {KINDS}, got {h.kind!r}")
    if h.kind != "superiority" and (h.delta is None or not h.delta > 0):
        raise ValueError(f"hypothesis {h.name!r}: {h.kind} needs a positive delta (its margin), got {h.delta!r}")
    return h


def run_family(
    hypotheses: Sequence,
    correct: Mapping[str, np.ndarray],
    *,
    alpha: float = 0.05,
    n_perm: int = 2000,
    n_boot: int = 2000,
    seed: int = 42,
    level: float = 0.95,
    cluster: str = "both",
) -> pd.DataFrame:
    """One row per pre-registered hypothesis (``Hypothesis`` or a (name, a, b, kind, delta) tuple / dict),
    tested on ``correct[a] − correct[b]`` (targets × items arrays, aligned across systems), Holm-adjusted over
    the whole family (``mu.analysis.stats.holm``).

    * superiority: ``p_value`` two-sided ``sign_flip_test``; verdict "A > B" / "A < B" when ``p_holm`` <
      ``alpha`` (by the sign of the effect), else "not shown";
    * equivalence: ``tost`` within ±delta; ``p_lower`` / ``p_upper`` its one-sided p-values, ``p_value``
      their maximum; verdict "equivalent" when ``p_holm`` < ``alpha``, else "not shown".

    ``ci_low`` / ``ci_high``: the two-way bootstrap interval at ``level`` of the mean difference (every row
    at the same level). One seed for all rows (the same flips and resamples: common random numbers).
    """
    rows = []
    for h in map(_hypothesis, hypotheses):
        missing = [s for s in (h.a, h.b) if s not in correct]
        if missing:
            raise ValueError(f"hypothesis {h.name!r}: no correct array for {missing}; systems: {sorted(correct)}")
        diff = _pair(correct[h.a], correct[h.b])
        flip = sign_flip_test(diff, n_perm, seed, cluster)
        ci = two_way_bootstrap(diff, n_boot, seed, level=level)
        row = {
            "name": h.name,
            "system_a": h.a,
            "system_b": h.b,
            "kind": h.kind,
            "delta": h.delta,
            "mean_diff": flip.mean_diff,
            "ci_low": ci.low,
            "ci_high": ci.high,
            "dz_items": flip.dz_items,
            "items_favouring_a": flip.items_favouring_a,
            "targets_favouring_a": flip.targets_favouring_a,
            "p_lower": np.nan,
            "p_upper": np.nan,
            "p_value": flip.p_value,
        }
        if h.kind == "equivalence":
            eq = tost(diff, h.delta, alpha, n_perm=n_perm, seed=seed, cluster=cluster, n_boot=0)
            row.update(p_lower=eq.p_lower, p_upper=eq.p_upper, p_value=eq.p_value)
        elif h.kind == "non-inferiority":  # TOST's lower test alone: A is worse than B by less than delta
            eq = tost(diff, h.delta, alpha, n_perm=n_perm, seed=seed, cluster=cluster, n_boot=0)
            row.update(p_lower=eq.p_lower, p_value=eq.p_lower)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=FAMILY_COLUMNS[:-2])
    frame["p_holm"] = stats.holm(frame["p_value"].to_numpy(dtype=float))
    significant = frame["p_holm"] < alpha
    superior = np.where(
        significant & (frame["mean_diff"] > 0),
        "A > B",
        np.where(significant & (frame["mean_diff"] < 0), "A < B", "not shown"),
    )
    frame["verdict"] = np.select(
        [frame["kind"] == "equivalence", frame["kind"] == "non-inferiority"],
        [
            np.where(significant, "equivalent", "not shown"),
            np.where(significant, "A not worse than B − delta", "not shown"),
        ],
        superior,
    )
    return frame[FAMILY_COLUMNS]


def item_matrix(
    per_target: Mapping[str, tuple[Sequence, Sequence]], items: Sequence | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(targets, item ids, targets × items float matrix) from ``{target: (item ids, values)}``, joined on the
    item id (not the position: a split's order need not match across locales). ``items`` default: the sorted
    union of the ids; a target lacking an item gets NaN there. Duplicate ids within a target are an error."""
    targets = list(per_target)
    if items is None:
        items = sorted({str(i) for ids, _ in per_target.values() for i in ids})
    item_ids = np.asarray([str(i) for i in items])
    column = {i: c for c, i in enumerate(item_ids)}
    out = np.full((len(targets), len(item_ids)), np.nan)
    for row, t in enumerate(targets):
        ids, values = per_target[t]
        ids = [str(i) for i in ids]
        if len(ids) != len(values):
            raise ValueError(f"{t}: {len(ids)} item ids but {len(values)} values")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{t}: duplicate item ids")
        keep = [(column[i], v) for i, v in zip(ids, values) if i in column]
        if keep:
            cols, vals = zip(*keep)
            out[row, list(cols)] = np.asarray(vals, dtype=float)
    return targets, item_ids, out
