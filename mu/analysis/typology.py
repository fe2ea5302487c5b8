"""Does URIEL similarity predict measured zero-shot transfer, and how spread are its weights?

Both read the N×N transfer matrix of notebook 02 (rows = source model, columns = target test set)
and the URIEL cosine matrices of ``mu.langs.similarity``; notebook 06 reports them beside the merges.

* ``correlations``: for each feature set, Spearman's rho between URIEL cosine and transfer accuracy
  (a) per target, ranking that target's sources (target difficulty cancels out): mean rho over the
  targets, a bootstrap interval over targets, how many are positive, and a one-sample Wilcoxon test
  of the per-target rhos against 0 (a question about a correlation per target, answered by one rho per
  target: no two systems are paired on items here, so notebook 06's item-aware sign-flip test does not
  apply, and a Wilcoxon over targets is the test of "the median target's rho is 0"); also with donor quality removed (each source's transfer minus
  its mean transfer to the other targets: does URIEL say more than "this source is good"?); (b) pooled over every ordered pair (source ≠ target), with
  its p-value for reference only (pairs sharing a source or target are not independent).
* ``weight_spread``: per target, the Sinkhorn row over all other locales after the top-K filter
  and the ``num_languages`` weights the merges receive: how many survive, largest and smallest
  weight, their ratio and the effective number of sources (1 / sum w²).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mu.analysis import aggregate
from mu.analysis import stats as mu_stats
from mu.analysis import summary as mu_summary
from mu.langs import similarity

MIN_SOURCES = 3  # a target needs this many sources for a rank correlation


def pairs(nxn: pd.DataFrame, feature_set: str) -> pd.DataFrame:
    """One row per ordered pair (source ≠ target) of the N×N matrix: URIEL cosine and transfer accuracy."""
    locales = [loc for loc in nxn.index if loc in nxn.columns]
    if len(locales) < MIN_SOURCES + 1:
        raise ValueError(f"need an N×N matrix over at least {MIN_SOURCES + 1} locales, got {locales}")
    sim = similarity.similarity_matrix(feature_set).loc[locales, locales]
    rows = [
        {"source": s, "target": t, "cosine": float(sim.loc[s, t]), "transfer": float(nxn.loc[s, t])}
        for t in locales
        for s in locales
        if s != t
    ]
    frame = pd.DataFrame(rows).dropna(subset=["transfer"])
    # donor quality removed: the source's transfer minus its mean transfer to the *other* targets
    total, count = (
        frame.groupby("source")["transfer"].transform("sum"),
        frame.groupby("source")["transfer"].transform("size"),
    )
    frame["transfer_vs_source_mean"] = frame["transfer"] - (total - frame["transfer"]) / (count - 1).clip(lower=1)
    frame["feature_set"] = feature_set
    return frame


def per_target(frame: pd.DataFrame, column: str = "transfer") -> pd.Series:
    """Spearman's rho of cosine vs ``column`` over each target's sources (NaN where a side is constant)."""
    out = {}
    for target, g in frame.groupby("target", sort=False):
        constant = g["cosine"].nunique() < 2 or g[column].nunique() < 2
        out[target] = (
            np.nan if len(g) < MIN_SOURCES or constant else float(stats.spearmanr(g["cosine"], g[column]).statistic)
        )
    return pd.Series(out, name="rho", dtype=float)


def correlations(
    nxn: pd.DataFrame, feature_sets: Sequence[str], *, n_boot: int = 10000, seed: int = 42
) -> dict[str, pd.DataFrame]:
    """``{"summary": one row per feature set, "per_target": targets × feature sets, "pairs": every pair}``."""
    if not feature_sets:
        raise ValueError("correlations: give at least one URIEL feature set")
    for fs in feature_sets:
        similarity.check_feature_set(fs)
    rows, per, all_pairs = [], {}, []
    for fs in feature_sets:
        frame = pairs(nxn, fs)
        rho = per_target(frame)
        per[fs] = rho
        all_pairs.append(frame)
        valid = rho.dropna()
        low, high = (
            aggregate.bootstrap_ci(valid.to_numpy(), n_boot=n_boot, seed=seed) if len(valid) > 1 else (np.nan, np.nan)
        )
        varies = frame["cosine"].nunique() > 1 and frame["transfer"].nunique() > 1
        pooled = stats.spearmanr(frame["cosine"], frame["transfer"]) if varies else None
        wilcoxon_p = float(stats.wilcoxon(valid).pvalue) if len(valid) >= 5 and (valid != 0).any() else np.nan
        rows.append(
            {
                "feature_set": fs,
                "mean_rho_per_target": float(valid.mean()) if len(valid) else np.nan,
                "ci_low": low,
                "ci_high": high,
                "targets": int(len(valid)),
                "targets_positive": int((valid > 0).sum()),
                "wilcoxon_p": wilcoxon_p,
                "mean_rho_donor_adjusted": float(per_target(frame, "transfer_vs_source_mean").mean()),
                "pooled_rho": float(pooled.statistic) if pooled else np.nan,
                "pooled_p": float(pooled.pvalue) if pooled else np.nan,
                "pairs": len(frame),
            }
        )
    summary = pd.DataFrame(rows).set_index("feature_set")
    for col in ("wilcoxon_p", "pooled_p"):  # Holm over the family of feature sets, beside the raw p
        summary.insert(summary.columns.get_loc(col) + 1, f"{col}_holm", mu_stats.holm(summary[col].to_numpy()))
    return {"summary": summary, "per_target": pd.DataFrame(per), "pairs": pd.concat(all_pairs, ignore_index=True)}


def weight_spread(
    locales: Sequence[str],
    *,
    top_k: int,
    sinkhorn_iters: int,
    num_languages: int,
    feature_set: str = similarity.DEFAULT_FEATURE_SET,
) -> pd.DataFrame:
    """One row per target: the Sinkhorn weights over the other ``locales`` after the top-K filter
    (``kept``, ``max``, ``min``, ``max_over_min``, ``effective``) and the same for the
    ``num_languages`` renormalised weights a merge receives (``chosen_*``)."""
    rows = []
    for target in locales:
        rank = similarity.ranking(
            target, universe=locales, top_k=top_k, sinkhorn_iters=sinkhorn_iters, feature_set=feature_set
        )
        kept = rank.loc[rank["in_top_k"], "sinkhorn"]
        row = kept / kept.sum()
        chosen = np.array(
            list(
                similarity.weights(
                    target,
                    [s for s in locales if s != target],
                    top_k=top_k,
                    num_languages=num_languages,
                    sinkhorn_iters=sinkhorn_iters,
                    feature_set=feature_set,
                ).values()
            )
        )
        rows.append(
            {
                "target": target,
                "candidates": len(rank),
                "kept": len(kept),
                "max": float(row.max()),
                "min": float(row.min()),
                "max_over_min": float(row.max() / row.min()),
                "effective": float(1 / np.sum(row.to_numpy() ** 2)),
                "chosen_max": float(chosen.max()),
                "chosen_min": float(chosen.min()),
                "chosen_effective": float(1 / np.sum(chosen**2)),
            }
        )
    return pd.DataFrame(rows).set_index("target")


def _span(values: pd.Series) -> str:
    low, high = values.min(), values.max()
    return f"{low}" if low == high else f"{low}–{high}"


def markdown(corr: dict[str, pd.DataFrame], spread: pd.DataFrame, *, top_k: int, num_languages: int) -> str:
    """The section notebook 06 adds to ``summary.md``."""
    s = spread
    lines = [
        "Spearman's rho between URIEL cosine and measured zero-shot transfer (N×N matrix). `mean_rho_per_target`: "
        "the mean over targets of the rank correlation among that target's sources (95% bootstrap interval over "
        "targets; `wilcoxon_p`: one-sample Wilcoxon test over targets of the per-target rhos against 0, not a paired "
        "comparison of systems; `_holm`: Holm-adjusted over the feature sets); `mean_rho_donor_adjusted`: the same after subtracting each "
        "source's mean transfer to the other targets (donor quality). `pooled_rho` ranks all pairs at once; its p-value "
        "ignores that pairs share sources and targets.",
        "",
        mu_summary.markdown_table(
            corr["summary"].assign(
                **{
                    c: [f"{v:.2g}" if np.isfinite(v) else "—" for v in corr["summary"][c]]
                    for c in ("wilcoxon_p", "wilcoxon_p_holm", "pooled_p", "pooled_p_holm")
                }
            )
        ),
        "",
        f"URIEL weights at top-K {top_k} over {int(s['candidates'].iloc[0])} candidate sources ({len(s)} targets): "
        f"the Sinkhorn row keeps {_span(s['kept'])} sources, weights "
        f"{s['min'].min():.3f}–{s['max'].max():.3f} (largest/smallest within a row: median "
        f"{s['max_over_min'].median():.2f}×, effective number of sources median {s['effective'].median():.1f}); "
        f"the {num_languages} a merge receives: {s['chosen_min'].min():.3f}–{s['chosen_max'].max():.3f}, effective "
        f"number median {s['chosen_effective'].median():.2f} of {num_languages}.",
    ]
    return "\n".join(lines) + "\n"


def results(corr: dict[str, pd.DataFrame], spread: pd.DataFrame) -> dict:
    """JSON-safe ``results`` for ``mu.core.report.save`` (NaN -> None)."""
    import json

    return {
        "summary": json.loads(corr["summary"].to_json(orient="index")),
        "per_target": json.loads(corr["per_target"].to_json(orient="index")),
        "weight_spread": json.loads(spread.to_json(orient="index")),
    }
