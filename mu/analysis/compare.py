"""Head-to-head comparison of chosen systems against chosen baselines over targets (e.g. the
``adapted`` family against the oracle best source, URIEL top-1, the plain merge and the best
ensemble): paired mean difference with its interval, wins / ties / losses and the two-sided p-value of
notebook 06's paired test (``mu.analysis.itemwise.test_pair``).

Given ``items`` (``mu.analysis.aggregate.aggregate(...)["items"]``) covering both systems on the paired
targets, the test is the sign-flip test with target and item clusters and the interval the two-way
bootstrap over targets × items: MASSIVE's targets are translations of the same items, not independent
samples. Without per-item results (older records, or a per-target table read back from ``summary.csv``)
it falls back to the Wilcoxon test and the bootstrap over targets; ``test`` and ``interval`` name each
row's method, so a table never mixes them silently.

    summary = mu.analysis.aggregate.aggregate("toy")
    mu.analysis.compare.head_to_head(summary["table"], ["adapted/adamerging/similarity"],
                            ["zero-shot/best", mu.analysis.compare.best_of(summary["table"], "ensemble/")],
                            items=summary["items"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mu.analysis import itemwise, stats

COLUMNS = ["system", "baseline", "n", "n_items", "mean_diff", "diff_ci_low", "diff_ci_high", "interval"]
COLUMNS += ["wins", "ties", "losses", "items_favouring", "targets_favouring", "p_value", "p_holm", "test", "note"]


def best_of(table: pd.DataFrame, prefix: str) -> str:
    """The system among the columns starting with ``prefix`` with the highest mean over targets
    (chosen over all targets at once, not per target)."""
    candidates = [c for c in table.columns if c.startswith(prefix) and table[c].notna().any()]
    if not candidates:
        raise ValueError(f"no system starting with {prefix!r} has results; systems: {list(table.columns)}")
    return max(candidates, key=lambda c: table[c].mean())


def _row(table: pd.DataFrame, system: str, baseline: str, items, **kw) -> dict:
    row = itemwise.test_pair(table, system, baseline, items=items, **kw)
    row["diff_ci_low"], row["diff_ci_high"] = row.pop("ci_low", np.nan), row.pop("ci_high", np.nan)
    if row.get("test") == itemwise.SIGN_FLIP:
        row["interval"] = itemwise.TWO_WAY if np.isfinite(row["diff_ci_low"]) else ""
    elif row["n"] > 1:  # the fallback's interval over targets, even where too few pairs leave the test out
        d = (table[system] - table[baseline]).dropna().to_numpy()
        row["diff_ci_low"], row["diff_ci_high"] = stats.bootstrap_ci(d, n_boot=kw["n_boot"], seed=kw["seed"])
        row["interval"] = itemwise.OVER_TARGETS
    return row


def head_to_head(
    table: pd.DataFrame,
    systems: Sequence[str],
    baselines: Sequence[str],
    *,
    items: Mapping[str, pd.DataFrame] | None = None,
    n_boot: int = 10000,
    seed: int = 42,
    min_pairs: int = 5,
) -> pd.DataFrame:
    """One row per (system, baseline), paired over the targets having both (a per-target table as
    ``mu.analysis.aggregate.aggregate(...)["table"]``, ``items`` its per-item matrices): ``n`` targets,
    ``n_items``, ``mean_diff`` with ``diff_ci_low`` / ``diff_ci_high`` (95%, method in ``interval``), ``wins``,
    ``ties``, ``losses`` over targets, ``items_favouring`` / ``targets_favouring`` (shares of the non-tied),
    ``p_value`` of ``test`` (NaN with its ``note`` when not computable) and ``p_holm`` (Holm-adjusted over the
    chosen systems tested against the same baseline). A system without any result gives no row."""
    missing = [s for s in [*systems, *baselines] if s not in table.columns]
    if missing:
        raise ValueError(f"systems {missing} are not columns of the table; columns: {list(table.columns)}")
    kw = {"min_pairs": min_pairs, "n_boot": n_boot, "seed": seed}
    rows = [
        _row(table, s, b, items, **kw)
        for s in dict.fromkeys(systems)
        if table[s].notna().any()
        for b in dict.fromkeys(baselines)
        if b != s
    ]
    return stats.holm_by(pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p_holm"]))[COLUMNS]
