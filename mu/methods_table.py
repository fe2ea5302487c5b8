"""Which merge method works across languages (notebook 06): every ``merge/<method>/<weighting>`` system
as a method × weighting table of mean accuracy over targets with bootstrap intervals, each tested
(paired over targets) against the linear average merge and the best zero-shot model.

    summary = mu.aggregate.aggregate("mini")
    methods = mu.methods_table.table(summary["table"])
    mu.methods_table.write(methods, "mini")      # reports/06_aggregation/mini/methods.csv

The tests are ``mu.compare.head_to_head``: mean paired difference with a percentile bootstrap interval,
wins / ties / losses, the two-sided Wilcoxon p-value and ``p_holm``, Holm-adjusted over the family of
every method × weighting tested against the same baseline. ``zero-shot/best`` is chosen with each
target's test labels (an oracle upper bound on picking one source), not a zero-shot method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mu import aggregate, compare, paths
from mu.families import BEST_ZERO_SHOT

CSV = "methods.csv"
BASELINES = {"average": aggregate.AVERAGE_MERGE, "zero_shot": BEST_ZERO_SHOT}  # column prefix: system
WEIGHTING_ORDER = ("similarity", "average", "transfer")
TITLE = "Which merge method works across languages"


def systems(columns: Sequence[str]) -> list[str]:
    """The merge systems ``merge/<method>/<weighting>`` among ``columns`` (placeholders like ``merge/*`` excluded)."""
    return [c for c in columns if c.startswith("merge/") and c.count("/") == 2 and "*" not in c]


def table(per_target: pd.DataFrame, *, n_boot: int = 10000, seed: int = 42, min_pairs: int = 5,
          average_system: str = aggregate.AVERAGE_MERGE) -> pd.DataFrame:
    """One row per merge system of ``per_target`` (``mu.aggregate.aggregate(...)["table"]``): ``method``,
    ``weighting``, ``n`` targets, ``mean`` with ``ci_low`` / ``ci_high``, and against each baseline
    (``average_system``, prefix ``vs_average_``; ``zero-shot/best``, ``vs_zero_shot_``): ``n``, ``diff``,
    ``diff_ci_low`` / ``diff_ci_high``, ``wins`` / ``ties`` / ``losses``, ``p`` and ``p_holm`` (NaN with a
    ``note`` when not computable, or when the baseline has no result)."""
    merged = systems(per_target.columns)
    first = ["method", "weighting", "system", "n", "mean", "ci_low", "ci_high"]
    if not merged:
        return pd.DataFrame(columns=first)
    baselines = {**BASELINES, "average": average_system}
    means = aggregate.means(per_target[merged], n_boot=n_boot, seed=seed)
    out = means.assign(method=[s.split("/")[1] for s in means["system"]],
                       weighting=[s.split("/")[2] for s in means["system"]])
    for prefix, baseline in baselines.items():
        cols = {c: f"vs_{prefix}_{c}" for c in ("n", "mean_diff", "diff_ci_low", "diff_ci_high", "wins", "ties",
                                                  "losses", "p_value", "p_holm", "note")}
        cols.update(mean_diff=f"vs_{prefix}_diff", p_value=f"vs_{prefix}_p")
        tested = [s for s in merged if s != baseline]
        if baseline in per_target.columns and per_target[baseline].notna().any() and tested:
            tests = compare.head_to_head(per_target, tested, [baseline], n_boot=n_boot, seed=seed,
                                         min_pairs=min_pairs)
            tests = tests.drop(columns="baseline").rename(columns=cols)
        else:
            tests = pd.DataFrame({"system": tested, cols["note"]: f"no {baseline} results"})
        out = out.merge(tests, on="system", how="left")
    order = {w: i for i, w in enumerate(WEIGHTING_ORDER)}
    methods = list(dict.fromkeys(out["method"]))
    out = out.assign(_m=out["method"].map(methods.index), _w=out["weighting"].map(lambda w: order.get(w, 99)))
    out = out.sort_values(["_m", "_w", "weighting"]).drop(columns=["_m", "_w"]).reset_index(drop=True)
    return out[first + [c for c in out.columns if c not in first]]


def _interval(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return aggregate.MISSING
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) else ""
    return f"{mean:.{digits}f}{ci}"


def _p(p: float) -> str:
    return f"{p:.3g}" if np.isfinite(p) else aggregate.MISSING


def markdown(frame: pd.DataFrame, *, average_system: str = aggregate.AVERAGE_MERGE) -> str:
    """The method × weighting means, then each system's tests against the two baselines."""
    if frame.empty:
        return "No `merge/<method>/<weighting>` results (notebook 03 with `--set compare_methods=all`)."
    cells = frame.assign(cell=[_interval(m, lo, hi) for m, lo, hi in
                               zip(frame["mean"], frame["ci_low"], frame["ci_high"])])
    pivot = cells.pivot(index="method", columns="weighting", values="cell")
    weightings = sorted(pivot.columns, key=lambda w: (WEIGHTING_ORDER.index(w) if w in WEIGHTING_ORDER else 99, w))
    pivot = pivot.reindex(index=list(dict.fromkeys(frame["method"])), columns=weightings).fillna(aggregate.MISSING)
    tests = pd.DataFrame({"system": frame["system"], "n": frame["n"]})
    for prefix, name in (("average", f"`{average_system}`"), ("zero_shot", f"`{BEST_ZERO_SHOT}` (oracle)")):
        def col(c: str) -> pd.Series:
            return frame.get(f"vs_{prefix}_{c}", pd.Series(np.nan, index=frame.index)).astype(float)

        tests[f"Δ vs {name} [95% CI]"] = [_interval(d, lo, hi) for d, lo, hi in
                                          zip(col("diff"), col("diff_ci_low"), col("diff_ci_high"))]
        tests[f"W/T/L vs {name}"] = [f"{int(w)}/{int(t)}/{int(lo)}" if np.isfinite(w) else aggregate.MISSING
                                     for w, t, lo in zip(col("wins"), col("ties"), col("losses"))]
        tests[f"p_holm vs {name}"] = [_p(p) for p in col("p_holm")]
    n = int(frame["n"].max()) if len(frame) else 0
    return "\n".join([
        f"Mean accuracy over targets (up to {n}) of each merge method under each weighting, with 95% percentile "
        "bootstrap intervals over targets; every method at its defaults (nothing tuned on test labels).", "",
        aggregate.markdown_table(pivot.rename_axis("method")), "",
        f"Paired over targets: mean difference (bootstrap interval), wins/ties/losses and the Wilcoxon p-value "
        f"Holm-adjusted over every method × weighting tested against the same baseline (`p_holm`). "
        f"`{BEST_ZERO_SHOT}` is picked with each target's test labels: an upper bound on choosing one source.",
        "", aggregate.markdown_table(tests, index=False),
    ])


def write(frame: pd.DataFrame, profile: str) -> Path:
    """``reports/06_aggregation/<profile>/methods.csv`` (atomic)."""
    return paths.write_text(aggregate.summary_dir(profile) / CSV, frame.to_csv(index=False))


def references(means: pd.DataFrame, *, average_system: str = aggregate.AVERAGE_MERGE) -> dict[str, float]:
    """{baseline: mean over targets} of the two baselines, from ``mu.aggregate.means`` (those with a mean)."""
    found = means.set_index("system")["mean"]
    return {s: float(found[s]) for s in (average_system, BEST_ZERO_SHOT) if s in found and np.isfinite(found[s])}


def records(frame: pd.DataFrame) -> list[dict]:
    """The table as JSON-safe records (NaN → None) for a result record's ``results``."""
    import json

    return json.loads(frame.to_json(orient="records"))
