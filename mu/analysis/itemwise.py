"""Per-item results in notebook 06's aggregation: the targets × items matrices of correct predictions that
``mu.analysis.inference`` needs, built from the ``items`` of result rows (``mu.core.report.items``).

MASSIVE's locales hold translations of the same test items, so a system's results on several targets are
one sample of items seen in several languages, not independent samples. Where every target of a
comparison has per-item results, the summary's interval is the two-way bootstrap over targets and items
and its paired test the sign-flip test with target and item clusters; records without items (older runs)
fall back to the bootstrap over targets and the Wilcoxon test, and the tables say which method gave what.

* ``read_nxn_items`` / ``attach_nxn``: the N×N matrix's per-item correctness (``mu.learn.evaluate.nxn`` writes
  it beside the matrix) given to the baseline rows taken from the matrix (native, zero-shot, oracle);
* ``matrices``: ``{system: targets × item ids frame}`` of the rows that carry items;
* ``covers``, ``interval``, ``paired``: what ``mu.analysis.aggregate.means`` / ``paired_tests`` compute with them;
* ``equivalence``: TOST of "within ±delta" for one pair, item-aware where ``items`` cover it;
* ``test_pair``: one system against one baseline over the targets having both, by the sign-flip test where
  ``items`` cover them, else by the named Wilcoxon fallback (``paired_tests``, ``mu.analysis.compare``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mu.analysis import inference, stats
from mu.core import paths

TWO_WAY = "two-way bootstrap (targets × items)"
OVER_TARGETS = "bootstrap over targets"
SIGN_FLIP = "sign-flip (targets × items clusters)"
WILCOXON = "Wilcoxon signed-rank over targets"
TOST_ITEMS = "TOST (sign-flip, targets × items clusters)"
TOST_TARGETS = "TOST (sign-flip over targets)"


def read_nxn_items(path: str | os.PathLike) -> dict[str, Any] | None:
    """The N×N matrix's per-item correctness (``{"split", "ids": {target: [id]}, "correct": {source: {target:
    "0110..."}}}``), or None when the run wrote none (before per-item results were kept)."""
    p = paths.resolve(path)
    if not p.is_file():
        return None
    found = paths.read_json(p)
    if not (isinstance(found, dict) and {"ids", "correct"} <= set(found)):
        raise ValueError(f"{p}: not an N×N per-item file (needs 'ids' and 'correct')")
    return found


def attach_nxn(rows: pd.DataFrame, per_item: Mapping[str, Any] | None) -> tuple[pd.DataFrame, list[str]]:
    """``rows`` with ``items`` = (ids, 0/1 string) of each row taken from the N×N matrix (``origin`` "N×N", one
    source) whose per-item correctness ``per_item`` holds and agrees with the matrix's accuracy; notes on
    the rest. Other rows are left as they are."""
    rows = rows.copy()
    if "items" not in rows.columns:
        rows["items"] = None
    if per_item is None or rows.empty:
        return rows, []
    if per_item.get("split", "test") != "test":  # the rows are test accuracies
        return rows, [f"the N×N per-item file is of the {per_item['split']} split; baselines carry no items"]
    notes, column = [], list(rows["items"])
    for k, r in enumerate(rows.itertuples(index=False)):
        if r.origin != "N×N" or not isinstance(r.sources, dict) or len(r.sources) != 1:
            continue
        source = next(iter(r.sources))
        bits = per_item["correct"].get(source, {}).get(r.target)
        ids = per_item["ids"].get(r.target)
        if bits is None or ids is None or len(ids) != len(bits):
            continue
        if abs(bits.count("1") / len(bits) - float(r.accuracy)) > 1e-9:
            notes.append(f"{r.target} / {r.system}: the N×N per-item file disagrees with the matrix; items left out")
            continue
        column[k] = (tuple(str(i) for i in ids), bits)
    rows["items"] = column
    return rows, notes


def matrices(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{system: targets × item ids frame of 1.0 / 0.0}`` over the rows carrying ``items`` (NaN: an item a
    target lacks). Items are joined on their id (``mu.analysis.inference.item_matrix``), not their position."""
    if "items" not in rows.columns:
        return {}
    out = {}
    have = rows[[isinstance(v, tuple) for v in rows["items"]]]
    for system, mine in have.groupby("system", sort=True):
        per_target = {t: (ids, [c == "1" for c in bits]) for t, (ids, bits) in zip(mine["target"], mine["items"])}
        targets, ids, matrix = inference.item_matrix(per_target)
        out[str(system)] = pd.DataFrame(matrix, index=targets, columns=ids).sort_index()
    return out


def covers(items: Mapping[str, pd.DataFrame] | None, systems: Sequence[str], targets: Sequence[str]) -> bool:
    """Whether every one of ``systems`` has per-item results on every one of ``targets`` (at least one)."""
    return bool(items) and len(targets) > 0 and all(s in items and set(targets) <= set(items[s].index) for s in systems)


def _observed(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame less items (columns) no target has: a target set drawn from a larger one may lack some."""
    return frame.loc[:, frame.notna().any(axis=0)]


def interval(frame: pd.DataFrame, targets: Sequence[str], *, n_boot: int, seed: int) -> inference.Interval:
    """Mean over ``targets`` × items of one system with its 95% two-way bootstrap interval."""
    return inference.two_way_bootstrap(_observed(frame.loc[list(targets)]).to_numpy(), n_boot, seed)


def paired(
    a: pd.DataFrame, b: pd.DataFrame, targets: Sequence[str], *, n_boot: int, seed: int, n_perm: int | None = None
) -> dict[str, Any]:
    """A − B on ``targets`` (items joined on their id; a cell either lacks is left out): the mean difference,
    its two-way bootstrap interval, the sign-flip test (target and item clusters, two-sided, ``n_perm``
    flips: default ``n_boot``) and the shares of items and targets favouring A."""
    targets = list(targets)
    diff = a.loc[targets].sub(b.loc[targets])
    diff = diff.loc[diff.notna().any(axis=1), diff.notna().any(axis=0)]
    if diff.empty:
        return {"n_items": 0, "p_value": np.nan, "note": "not computable: the systems share no item"}
    x = diff.to_numpy()
    flip = inference.sign_flip_test(x, n_perm or n_boot, seed, cluster="both")
    ci = inference.two_way_bootstrap(x, n_boot, seed)
    return {
        "n_items": int(x.shape[1]),
        "mean_diff": flip.mean_diff,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "items_favouring": flip.items_favouring_a,
        "targets_favouring": flip.targets_favouring_a,
        "p_value": flip.p_value,
        "note": "" if len(diff) == len(targets) else f"{len(targets) - len(diff)} target(s) share no item",
    }


def test_pair(
    table: pd.DataFrame,
    system: str,
    baseline: str,
    *,
    items: Mapping[str, pd.DataFrame] | None = None,
    min_pairs: int = 5,
    n_boot: int = 2000,
    seed: int = 42,
) -> dict[str, Any]:
    """``system`` − ``baseline`` over the targets of ``table`` (per-target accuracies) having both: ``n``,
    ``mean_diff``, ``wins``/``ties``/``losses`` over targets, and ``test`` with its results. Where ``items``
    holds both systems on every paired target: ``paired`` (sign-flip, two-way interval, shares favouring);
    otherwise the Wilcoxon signed-rank test over targets with a bootstrap interval over targets (records
    without per-item results). With fewer than ``min_pairs`` paired targets (Wilcoxon: non-tied ones, which
    it drops) the p-value is NaN and ``note`` says why."""
    from scipy import stats as sp

    row = {"system": system, "baseline": baseline, "n": 0, "wins": 0, "ties": 0, "losses": 0, "note": ""}
    if baseline not in table.columns or table[baseline].isna().all():
        return {**row, "note": f"not computable: no {baseline} results"}
    pair = table[[system, baseline]].dropna()
    d = (pair[system] - pair[baseline]).to_numpy()
    row.update(n=len(d), mean_diff=float(d.mean()) if len(d) else np.nan)
    row.update(wins=int((d > 0).sum()), ties=int((d == 0).sum()), losses=int((d < 0).sum()))
    flip = covers(items, [system, baseline], list(pair.index))
    row["test"] = SIGN_FLIP if flip else WILCOXON
    if len(d) < min_pairs:
        row["note"] = f"not computable: {len(d)} paired targets < {min_pairs}"
    elif flip:
        row.update(paired(items[system], items[baseline], pair.index, n_boot=n_boot, seed=seed))
    elif row["wins"] + row["losses"] < min_pairs:
        row["note"] = f"not computable: {row['wins'] + row['losses']} non-tied pairs < {min_pairs}"
    else:
        res = sp.wilcoxon(pair[system], pair[baseline])
        lo, hi = stats.bootstrap_ci(d, n_boot=n_boot, seed=seed)
        row.update(statistic=float(res.statistic), p_value=float(res.pvalue), ci_low=lo, ci_high=hi)
        row["targets_favouring"] = row["wins"] / (row["wins"] + row["losses"])
    return row


def tests_used(frame: pd.DataFrame, columns: Sequence[str] = ("test",)) -> list[str]:
    """The tests named in ``columns`` of a table of paired tests; a table written before tests were named
    (no such column: a CSV collected from an older run) used the Wilcoxon test, then the only one."""
    present = [c for c in columns if c in frame.columns]
    if not present:
        return [WILCOXON]
    return sorted({str(v) for c in present for v in frame[c].dropna()} - {""})


def intervals_used(frame: pd.DataFrame, column: str = "interval") -> list[str]:
    """``tests_used`` for the intervals of a table of means: the bootstrap over targets before they were named."""
    if column not in frame.columns:
        return [OVER_TARGETS]
    return sorted({str(v) for v in frame[column].dropna()} - {""})


def equivalence(
    table: pd.DataFrame,
    system: str,
    baseline: str,
    delta: float,
    *,
    items: Mapping[str, pd.DataFrame] | None = None,
    alpha: float = 0.05,
    n_perm: int = 2000,
    seed: int = 42,
) -> dict[str, Any]:
    """TOST (``mu.analysis.inference.tost``) of |``system`` − ``baseline``| < ``delta`` over the targets having
    both: ``p_tost`` (the larger one-sided p), ``delta`` and ``equivalence_test``. On the targets × items
    differences with target and item clusters where ``items`` covers the pair; without per-item results, on
    the per-target differences with targets flipped (a TOST has no Wilcoxon form here, and a sign-flip over
    targets is the same test with items left out). NaN with fewer than two paired targets."""
    pair = table[[system, baseline]].dropna()
    out = {"delta": float(delta), "p_tost": np.nan, "equivalence_test": ""}
    if len(pair) < 2:
        return out
    if covers(items, [system, baseline], list(pair.index)):
        diff = items[system].loc[pair.index].sub(items[baseline].loc[pair.index])
        diff = diff.loc[diff.notna().any(axis=1), diff.notna().any(axis=0)]
        if diff.empty:
            return out
        eq = inference.tost(diff.to_numpy(), delta, alpha, n_perm=n_perm, seed=seed, cluster="both", n_boot=0)
        return {**out, "p_tost": eq.p_value, "equivalence_test": TOST_ITEMS}
    d = (pair[system] - pair[baseline]).to_numpy()[:, None]
    eq = inference.tost(d, delta, alpha, n_perm=n_perm, seed=seed, cluster="target", n_boot=0)
    return {**out, "p_tost": eq.p_value, "equivalence_test": TOST_TARGETS}
