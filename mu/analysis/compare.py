"""Head-to-head comparison of chosen systems against chosen baselines over targets (e.g. the
``adapted`` family against the oracle best source, URIEL top-1, the plain merge and the best
ensemble): paired mean difference with a bootstrap interval, wins / ties / losses and the
two-sided Wilcoxon p-value of ``mu.analysis.aggregate.paired_tests``.

    summary = mu.analysis.aggregate.aggregate("toy")
    mu.analysis.compare.head_to_head(summary["table"], ["adapted/adamerging/similarity"],
                            ["zero-shot/best", mu.analysis.compare.best_of(summary["table"], "ensemble/")])
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mu.analysis import aggregate, stats


def best_of(table: pd.DataFrame, prefix: str) -> str:
    """The system among the columns starting with ``prefix`` with the highest mean over targets
    (chosen over all targets at once, not per target)."""
    candidates = [c for c in table.columns if c.startswith(prefix) and table[c].notna().any()]
    if not candidates:
        raise ValueError(f"no system starting with {prefix!r} has results; systems: {list(table.columns)}")
    return max(candidates, key=lambda c: table[c].mean())


def head_to_head(
    table: pd.DataFrame,
    systems: Sequence[str],
    baselines: Sequence[str],
    *,
    n_boot: int = 10000,
    seed: int = 42,
    min_pairs: int = 5,
) -> pd.DataFrame:
    """One row per (system, baseline), paired over the targets having both (a per-target table
    as ``mu.analysis.aggregate.aggregate(...)["table"]``): ``n``, ``mean_diff``, ``diff_ci_low`` /
    ``diff_ci_high`` (percentile bootstrap of the mean difference), ``wins``, ``ties``,
    ``losses``, ``p_value`` (NaN with its ``note`` when not computable) and ``p_holm`` (Holm-adjusted over
    the chosen systems tested against the same baseline)."""
    missing = [s for s in [*systems, *baselines] if s not in table.columns]
    if missing:
        raise ValueError(f"systems {missing} are not columns of the table; columns: {list(table.columns)}")
    columns = list(dict.fromkeys([*systems, *baselines]))
    tests = aggregate.paired_tests(table[columns], min_pairs=min_pairs, others=baselines)
    tests = tests[tests["system"].isin(systems) & tests["baseline"].isin(baselines)].reset_index(drop=True)
    tests = stats.holm_by(tests)  # over the chosen systems only
    ci = [
        aggregate.bootstrap_ci((table[s] - table[b]).dropna().to_numpy(), n_boot=n_boot, seed=seed)
        for s, b in zip(tests["system"], tests["baseline"])
    ]
    return tests.assign(diff_ci_low=[lo for lo, _ in ci], diff_ci_high=[hi for _, hi in ci])[
        [
            "system",
            "baseline",
            "n",
            "mean_diff",
            "diff_ci_low",
            "diff_ci_high",
            "wins",
            "ties",
            "losses",
            "p_value",
            "p_holm",
            "note",
        ]
    ]
