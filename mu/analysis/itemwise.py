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
* ``covers``, ``interval``, ``paired``: what ``mu.analysis.aggregate.means`` / ``paired_tests`` compute with them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mu.analysis import inference
from mu.core import paths

TWO_WAY = "two-way bootstrap (targets × items)"
OVER_TARGETS = "bootstrap over targets"
SIGN_FLIP = "sign-flip (targets × items clusters)"
WILCOXON = "Wilcoxon signed-rank over targets"


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
