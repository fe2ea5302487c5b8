"""Which merge method works across languages (notebook 06): every ``merge/<method>/<weighting>`` system
as a method × weighting table of mean accuracy over targets with bootstrap intervals, each tested
(paired over targets) against the linear average merge and the best zero-shot model.

    summary = mu.analysis.aggregate.aggregate("mini")
    methods = mu.analysis.methods_table.table(summary["table"], items=summary["items"])
    contrasts = mu.analysis.methods_table.contrasts(summary["table"], items=summary["items"])  # method vs linear, ...
    mu.analysis.methods_table.write(methods, "mini", contrasts)         # methods.csv, methods_contrasts.csv
    print(mu.analysis.methods_table.answer(methods, contrasts))         # the answer in plain words, from the numbers

The tests are ``mu.analysis.compare.head_to_head``: mean paired difference with its interval, wins / ties /
losses, the two-sided p-value and ``p_holm``, Holm-adjusted over the family of every method × weighting
tested against the same baseline. With ``items`` (per-item results) the means' intervals are two-way
bootstraps over targets × items and the test the sign-flip test with target and item clusters; without
(older records) the bootstrap over targets and the Wilcoxon test; columns ``interval`` and ``vs_*_test``
name each one's method. ``zero-shot/best`` is chosen with each target's test labels (an oracle upper bound
on picking one source), not a zero-shot method.

``contrasts`` asks the questions the seed's published runs answered, each a family of paired tests
Holm-adjusted within itself: every method against ``linear`` under the same weighting (same sources, same
weights: only the method differs); each method's URIEL weights against its equal weights
(``similarity`` vs ``average``: the same sources); its transfer-chosen sources and weights against
``average``. ``answer`` states the result in plain words, every number read from those tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mu.analysis import aggregate, compare, itemwise, stats, summary
from mu.analysis.families import BEST_ZERO_SHOT
from mu.core import paths

CSV = "methods.csv"
CONTRASTS_CSV = "methods_contrasts.csv"
BASELINES = {"average": aggregate.AVERAGE_MERGE, "zero_shot": BEST_ZERO_SHOT}  # column prefix: system
WEIGHTING_ORDER = ("similarity", "average", "transfer")
TITLE = "Which merge method works across languages"


def systems(columns: Sequence[str]) -> list[str]:
    """The merge systems ``merge/<method>/<weighting>`` among ``columns`` (placeholders like ``merge/*`` excluded)."""
    return [c for c in columns if c.startswith("merge/") and c.count("/") == 2 and "*" not in c]


def table(
    per_target: pd.DataFrame,
    *,
    n_boot: int = 10000,
    seed: int = 42,
    min_pairs: int = 5,
    average_system: str = aggregate.AVERAGE_MERGE,
    items: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """One row per merge system of ``per_target`` (``mu.analysis.aggregate.aggregate(...)["table"]``, ``items``
    its per-item matrices): ``method``, ``weighting``, ``n`` targets, ``mean`` with ``ci_low`` / ``ci_high``
    (``interval`` names the method, ``n_items`` the items), and against each baseline (``average_system``,
    prefix ``vs_average_``; ``zero-shot/best``, ``vs_zero_shot_``): ``n``, ``diff``, ``diff_ci_low`` /
    ``diff_ci_high``, ``wins`` / ``ties`` / ``losses``, the shares favouring the system, ``p``, ``p_holm`` and
    ``test`` (NaN with a ``note`` when not computable, or when the baseline has no result)."""
    merged = systems(per_target.columns)
    first = ["method", "weighting", "system", "n", "mean", "ci_low", "ci_high"]
    if not merged:
        return pd.DataFrame(columns=first)
    baselines = {**BASELINES, "average": average_system}
    means = aggregate.means(per_target[merged], n_boot=n_boot, seed=seed, items=items)
    out = means.assign(
        method=[s.split("/")[1] for s in means["system"]], weighting=[s.split("/")[2] for s in means["system"]]
    )
    for prefix, baseline in baselines.items():
        cols = {
            c: f"vs_{prefix}_{c}"
            for c in (
                "n",
                "mean_diff",
                "diff_ci_low",
                "diff_ci_high",
                "wins",
                "ties",
                "losses",
                "items_favouring",
                "targets_favouring",
                "p_value",
                "p_holm",
                "test",
                "note",
            )
        }
        cols.update(mean_diff=f"vs_{prefix}_diff", p_value=f"vs_{prefix}_p")
        tested = [s for s in merged if s != baseline]
        if baseline in per_target.columns and per_target[baseline].notna().any() and tested:
            tests = compare.head_to_head(
                per_target, tested, [baseline], items=items, n_boot=n_boot, seed=seed, min_pairs=min_pairs
            )
            tests = tests.drop(columns=["baseline", "n_items", "interval"]).rename(columns=cols)
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
        return summary.MISSING
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) else ""
    return f"{mean:.{digits}f}{ci}"


def _p(p: float) -> str:
    return f"{p:.3g}" if np.isfinite(p) else summary.MISSING


def _intervals_text(frame: pd.DataFrame) -> str:
    used = itemwise.intervals_used(frame)
    if used == [itemwise.OVER_TARGETS]:
        return "95% percentile bootstrap intervals over targets"
    if used == [itemwise.TWO_WAY]:
        return "95% two-way bootstrap intervals over targets × items (the targets share translated items)"
    return f"95% intervals by {' or '.join(used)} (`interval` in methods.csv names each system's)"


def _tests_text(frame: pd.DataFrame) -> str:
    used = itemwise.tests_used(frame, [f"vs_{prefix}_test" for prefix in BASELINES])
    if used == [itemwise.WILCOXON]:
        return "Paired over targets: mean difference (bootstrap interval), wins/ties/losses and the Wilcoxon p-value"
    if used == [itemwise.SIGN_FLIP]:
        return (
            "Paired over targets × items: mean difference (two-way bootstrap interval), wins/ties/losses over "
            "targets and the p-value of the sign-flip test with target and item clusters,"
        )
    return (
        "Paired over targets: mean difference, wins/ties/losses and the p-value of each row's test ("
        + " or ".join(used)
        + "; `vs_*_test` in methods.csv names it),"
    )


def markdown(frame: pd.DataFrame, *, average_system: str = aggregate.AVERAGE_MERGE) -> str:
    """The method × weighting means, then each system's tests against the two baselines."""
    if frame.empty:
        return "No `merge/<method>/<weighting>` results (notebook 03 with `--set compare_methods=all`)."
    cells = frame.assign(
        cell=[_interval(m, lo, hi) for m, lo, hi in zip(frame["mean"], frame["ci_low"], frame["ci_high"])]
    )
    pivot = cells.pivot(index="method", columns="weighting", values="cell")
    weightings = sorted(pivot.columns, key=lambda w: (WEIGHTING_ORDER.index(w) if w in WEIGHTING_ORDER else 99, w))
    pivot = pivot.reindex(index=list(dict.fromkeys(frame["method"])), columns=weightings).fillna(summary.MISSING)
    tests = pd.DataFrame({"system": frame["system"], "n": frame["n"]})
    for prefix, name in (("average", f"`{average_system}`"), ("zero_shot", f"`{BEST_ZERO_SHOT}` (oracle)")):

        def col(c: str) -> pd.Series:
            return frame.get(f"vs_{prefix}_{c}", pd.Series(np.nan, index=frame.index)).astype(float)

        tests[f"Δ vs {name} [95% CI]"] = [
            _interval(d, lo, hi) for d, lo, hi in zip(col("diff"), col("diff_ci_low"), col("diff_ci_high"))
        ]
        tests[f"W/T/L vs {name}"] = [
            f"{int(w)}/{int(t)}/{int(lo)}" if np.isfinite(w) else summary.MISSING
            for w, t, lo in zip(col("wins"), col("ties"), col("losses"))
        ]
        tests[f"p_holm vs {name}"] = [_p(p) for p in col("p_holm")]
    n = int(frame["n"].max()) if len(frame) else 0
    return "\n".join(
        [
            f"Mean accuracy over targets (up to {n}) of each merge method under each weighting, with "
            f"{_intervals_text(frame)}; every method at its defaults (nothing tuned on test labels).",
            "",
            summary.markdown_table(pivot.rename_axis("method")),
            "",
            f"{_tests_text(frame)} Holm-adjusted over every method × weighting tested against the same baseline "
            f"(`p_holm`). `{BEST_ZERO_SHOT}` is picked with each target's test labels: an upper bound on choosing "
            "one source.",
            "",
            summary.markdown_table(tests, index=False),
        ]
    )


def write(frame: pd.DataFrame, profile: str, contrasts_: pd.DataFrame | None = None) -> Path:
    """``reports/06_aggregation/<profile>/methods.csv`` and, given, ``methods_contrasts.csv`` (atomic)."""
    if contrasts_ is not None:
        paths.write_text(summary.summary_dir(profile) / CONTRASTS_CSV, contrasts_.to_csv(index=False))
    return paths.write_text(summary.summary_dir(profile) / CSV, frame.to_csv(index=False))


# --------------------------------------------------------------------------- the questions, in plain words

QUESTIONS = {  # family: (what is tested, baseline of a system merge/<m>/<w>)
    "method_vs_linear": ("the method against linear under the same weighting", lambda m, w: f"merge/linear/{w}"),
    "uriel_vs_equal": (
        "URIEL weights against equal weights, same method and sources",
        lambda m, w: f"merge/{m}/average",
    ),
    "transfer_vs_equal": (
        "transfer-chosen sources and weights against the equal-weight merge of the URIEL sources",
        lambda m, w: f"merge/{m}/average",
    ),
}
ALPHA = 0.05


def _pairs(merged: Sequence[str], family: str) -> list[tuple[str, str]]:
    have, out = set(merged), []
    for s in merged:
        _, m, w = s.split("/")
        if (
            (family == "method_vs_linear" and m != "linear")
            or (family == "uriel_vs_equal" and w == "similarity")
            or (family == "transfer_vs_equal" and w == "transfer")
        ):
            base = QUESTIONS[family][1](m, w)
            if base in have:
                out.append((s, base))
    return out


def contrasts(
    per_target: pd.DataFrame,
    *,
    n_boot: int = 10000,
    seed: int = 42,
    min_pairs: int = 5,
    items: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """One row per paired comparison of the three families of ``QUESTIONS`` (``family``, ``method``,
    ``weighting``, then ``mu.analysis.compare.head_to_head``'s columns: its sign-flip test over targets × items
    where ``items`` covers the pair, its named fallback where not), ``p_holm`` adjusted over the tests of the
    same family."""
    merged = systems(per_target.columns)
    rows = []
    for family in QUESTIONS:
        pairs = _pairs(merged, family)
        if not pairs:
            continue
        tests = pd.concat(
            [
                compare.head_to_head(per_target, [s], [b], items=items, n_boot=n_boot, seed=seed, min_pairs=min_pairs)
                for s, b in pairs
            ],
            ignore_index=True,
        )
        tests["p_holm"] = stats.holm(tests["p_value"].to_numpy(dtype=float))
        tests.insert(0, "family", family)
        rows.append(tests)
    cols = ["family", "method", "weighting", *compare.COLUMNS]
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.concat(rows, ignore_index=True)
    out["method"], out["weighting"] = out["system"].str.split("/").str[1], out["system"].str.split("/").str[2]
    return out[cols]


def _verdict(r: pd.Series) -> str:
    if not np.isfinite(r["p_holm"]):
        return "not testable"
    if r["p_holm"] < ALPHA:
        return "better" if r["mean_diff"] > 0 else "worse"
    return "no detectable difference"


def _cite(r: pd.Series) -> str:
    return (
        f"`{r['system']}` {r['mean_diff']:+.3f} vs `{r['baseline']}` ({int(r['wins'])}/{int(r['ties'])}/"
        f"{int(r['losses'])}, Holm p {_p(r['p_holm'])})"
    )


def answer(frame: pd.DataFrame, contrasts_: pd.DataFrame, *, alpha: float = ALPHA) -> str:
    """The method comparison in plain words: the best merge and the oracle, which methods differ from linear
    (and the seed's claims on DARE and TIES), whether URIEL weighting matters per method. Significance is
    Holm-adjusted p < ``alpha`` within each family; every number comes from ``frame`` / ``contrasts_``."""
    if frame.empty:
        return markdown(frame)
    best = frame.dropna(subset=["mean"]).sort_values("mean", ascending=False).iloc[0]
    out = [f"- **Best merge:** `{best['system']}`, mean {best['mean']:.3f} over {int(best['n'])} targets."]
    if "vs_zero_shot_diff" in frame and np.isfinite(best.get("vs_zero_shot_diff", np.nan)):
        above = frame[(frame["vs_zero_shot_diff"] > 0) & (frame["vs_zero_shot_p_holm"] < alpha)]
        out.append(
            f"  Against the oracle single source (`{BEST_ZERO_SHOT}`): {best['vs_zero_shot_diff']:+.3f} "
            f"(Holm p {_p(best['vs_zero_shot_p_holm'])}); merges significantly above it: "
            f"{', '.join(f'`{s}`' for s in above['system']) or 'none'}."
        )
    c = contrasts_.assign(verdict=[_verdict(r) for _, r in contrasts_.iterrows()])
    vs_lin = c[c["family"] == "method_vs_linear"]
    if len(vs_lin):
        for word in ("better", "worse"):
            hit = vs_lin[vs_lin["verdict"] == word]
            methods = sorted(set(hit["method"]))
            out.append(
                f"- **{word.capitalize()} than linear** (same sources and weights; {len(vs_lin)} tests, Holm): "
                + (", ".join(f"`{m}` ({', '.join(hit[hit['method'] == m]['weighting'])})" for m in methods) or "none")
                + "."
            )
        for family_name, names in (("DARE", ("dare_ties", "dare_linear")), ("TIES", ("ties",))):
            rows = vs_lin[vs_lin["method"].isin(names)]
            if len(rows):
                verdicts = set(rows["verdict"])
                word = (
                    "worse than linear under every weighting"
                    if verdicts == {"worse"}
                    else "better than linear under every weighting"
                    if verdicts == {"better"}
                    else "indistinguishable from linear under every weighting"
                    if verdicts == {"no detectable difference"}
                    else "mixed: " + ", ".join(sorted(verdicts))
                )
                out.append(
                    f"- **{family_name}** ({', '.join(names)}): {word}; "
                    + "; ".join(_cite(r) for _, r in rows.iterrows())
                    + "."
                )
    for family, label in (
        ("uriel_vs_equal", "URIEL weights vs equal weights"),
        ("transfer_vs_equal", "transfer-chosen sources vs the equal-weight merge"),
    ):
        rows = c[c["family"] == family]
        if len(rows):
            sig = rows[rows["verdict"].isin(["better", "worse"])]
            out.append(
                f"- **{label}** ({len(rows)} methods, Holm): "
                + (
                    f"significant for {', '.join(f'`{m}` ({v}, {d:+.3f})' for m, v, d in zip(sig['method'], sig['verdict'], sig['mean_diff']))}"
                    if len(sig)
                    else "significant for no method"
                )
                + f"; median difference over methods {rows['mean_diff'].median():+.3f}."
            )
    used = set(itemwise.tests_used(contrasts_)) | set(
        itemwise.tests_used(frame, [f"vs_{prefix}_test" for prefix in BASELINES])
    )
    out.append(f"- *Paired tests:* two-sided {' and '.join(sorted(used))}; Holm-adjusted within each family.")
    return "\n".join(out)


def references(means: pd.DataFrame, *, average_system: str = aggregate.AVERAGE_MERGE) -> dict[str, float]:
    """{baseline: mean over targets} of the two baselines, from ``mu.analysis.aggregate.means`` (those with a mean)."""
    found = means.set_index("system")["mean"]
    return {s: float(found[s]) for s in (average_system, BEST_ZERO_SHOT) if s in found and np.isfinite(found[s])}


def records(frame: pd.DataFrame) -> list[dict]:
    """The table as JSON-safe records (NaN → None) for a result record's ``results``."""
    import json

    return json.loads(frame.to_json(orient="records"))
