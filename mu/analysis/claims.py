"""The study's headline claims in plain words, computed from a run's per-target table (notebook 06's
``summary.csv``, ``mu.analysis.aggregate.aggregate(...)["table"]``), never typed by hand.

* ``single_models``: every *label-free single served model* (one set of weights, trained on nothing of
  the target's labels: merges, the adapted family, iterative training, URIEL top-1) against the oracle
  ``zero-shot/best`` (the best single source picked with the target's *test* labels), Holm-adjusted
  over those candidates.
* ``students``: each distilled student (``adapted/distilled-<m>[-from_<init>]/<w>``) against its teacher
  (``ensemble/<m>/<w>``) and its initialisation (``merge/<init>/<w>``, ``init`` linear unless named: the merge
  of the same sources it started from); "within ``WITHIN`` of its teacher" is a TOST with that margin.

Every paired test is ``mu.analysis.compare.head_to_head``'s: given ``items`` (notebook 06's
``aggregate(...)["items"]``) the sign-flip test with target and item clusters and the two-way interval; without
(a ``summary.csv`` read back, older records) the Wilcoxon test over targets. The text names the tests used.
* ``over_seeds``: the headline effects repeated over fine-tuning seeds (``mu.analysis.seeds.spread``'s frame,
  notebook 06's ``seeds.csv``), grouped by whether they hold in every seed.
* ``markdown``: the answer to "does one label-free model beat the oracle?", with the numbers; given the
  seeds' frame, each system it names says whether the seeds' runs repeated it, and whether it held.

    summary = mu.analysis.aggregate.aggregate("mini")
    print(mu.analysis.claims.markdown(summary["table"], items=summary["items"]))
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mu.analysis import compare, itemwise, stats
from mu.analysis.families import BEST_ZERO_SHOT, URIEL_TOP1, family
from mu.analysis.seeds import seed_ids

SINGLE_FAMILIES = ("merge", "adapted", "iterative", "iterative-adaptive")
ALPHA = 0.05
WITHIN = 0.005  # the declared margin of "a student within 0.005 of its teacher", tested by TOST


def is_single_label_free(system: str) -> bool:
    """One served model that saw no label of the target (an oracle weighting sees them: excluded)."""
    parts = system.split("/")
    if system == URIEL_TOP1:
        return True
    return family(system) in SINGLE_FAMILIES and len(parts) == 3 and "*" not in system and parts[2] != "oracle"


def single_models(
    per_target: pd.DataFrame,
    *,
    n_boot: int = 10000,
    seed: int = 42,
    min_pairs: int = 5,
    items: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Each label-free single model against ``zero-shot/best``: its mean and the oracle's (``oracle_mean``) over
    the targets both have, then ``mu.analysis.compare.head_to_head``'s columns (``p_holm`` over these candidates),
    largest paired gain over the oracle first: systems run on a declared subset of targets (notebook 05)
    are ranked by what they gain on their own targets, never by a mean over other targets than the rest's.
    Empty without the oracle or candidates."""
    candidates = [c for c in per_target.columns if is_single_label_free(c) and per_target[c].notna().any()]
    if BEST_ZERO_SHOT not in per_target.columns or not candidates:
        return pd.DataFrame(columns=["system", "mean", "oracle_mean", "n", "mean_diff", "p_value", "p_holm"])
    tests = compare.head_to_head(
        per_target, candidates, [BEST_ZERO_SHOT], items=items, n_boot=n_boot, seed=seed, min_pairs=min_pairs
    )
    both = {s: per_target[[s, BEST_ZERO_SHOT]].dropna() for s in tests["system"]}
    tests.insert(1, "mean", [float(both[s][s].mean()) for s in tests["system"]])
    tests.insert(2, "oracle_mean", [float(both[s][BEST_ZERO_SHOT].mean()) for s in tests["system"]])
    return tests.sort_values(["mean_diff", "mean"], ascending=False).reset_index(drop=True)


def students(
    per_target: pd.DataFrame,
    *,
    n_boot: int = 10000,
    seed: int = 42,
    min_pairs: int = 5,
    items: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Each distilled student against its teacher and its initialisation (rows: ``system``, ``baseline``,
    ``role`` teacher | init, and ``head_to_head``'s columns; ``p_holm`` within each role). Against the teacher
    also the TOST of equivalence within ``WITHIN`` (``itemwise.equivalence``: ``delta``, ``p_tost``,
    ``equivalence_test``; ``p_tost_holm`` over the students)."""
    rows = []
    for s in per_target.columns:
        parts = s.split("/")
        if family(s) != "adapted" or not parts[1].startswith("distilled-") or len(parts) != 3:
            continue
        teacher = f"ensemble/{parts[1].removeprefix('distilled-').split('-')[0]}/{parts[2]}"
        init = parts[1].split("-from_")[1] if "-from_" in parts[1] else "linear"  # mu.combine.distill.name
        for role, base in (("teacher", teacher), ("init", f"merge/{init}/{parts[2]}")):
            if base in per_target.columns:
                kw = {"items": items, "n_boot": n_boot, "seed": seed}
                t = compare.head_to_head(per_target, [s], [base], min_pairs=min_pairs, **kw).assign(role=role)
                if role == "teacher":
                    eq = itemwise.equivalence(
                        per_target, s, base, WITHIN, items=items, alpha=ALPHA, n_perm=n_boot, seed=seed
                    )
                    t = t.assign(**eq)
                rows.append(t)
    if not rows:
        return pd.DataFrame(columns=["system", "baseline", "role", "mean_diff", "p_value", "p_holm", "p_tost"])
    out = pd.concat(rows, ignore_index=True)
    out = out.reindex(columns=list(dict.fromkeys([*out.columns, "delta", "p_tost", "equivalence_test"])))
    out = stats.holm_by(out, by="role")
    teacher = out["role"] == "teacher"
    out.loc[teacher, "p_tost_holm"] = stats.holm(out.loc[teacher, "p_tost"].to_numpy(dtype=float))
    return out


def _cite(r: pd.Series, baseline: str | None = None) -> str:
    p = "not computable" if not np.isfinite(r["p_value"]) else f"p {r['p_value']:.2g}, Holm {r['p_holm']:.2g}"
    return (
        f"{r['mean_diff']:+.3f} vs `{baseline or r['baseline']}` over {int(r['n'])} targets "
        f"({int(r['wins'])}/{int(r['ties'])}/{int(r['losses'])} wins/ties/losses, {p})"
    )


def _word(r: pd.Series) -> str:
    if not np.isfinite(r["p_holm"]):
        return "cannot be tested against"
    if r["p_holm"] < ALPHA:
        return "beats" if r["mean_diff"] > 0 else "is below"
    return "is not distinguishable from"


def _within(r: pd.Series) -> str:
    """Equivalence to the teacher as the TOST found it: shown only when both one-sided tests reject after Holm."""
    if not np.isfinite(r.get("p_tost", np.nan)):
        return f"equivalence within ±{WITHIN} not testable"
    shown = r["p_tost_holm"] < ALPHA
    return (
        f"{'within' if shown else 'not shown to be within'} ±{WITHIN} of it "
        f"(TOST p {r['p_tost']:.2g}, Holm {r['p_tost_holm']:.2g})"
    )


def _sd(v: float) -> str:
    return f"sd {v:.3f}" if np.isfinite(v) else "sd n.c."


def over_seeds(spread: pd.DataFrame) -> str:
    """One bullet: each headline effect repeated over seeds (``mu.analysis.seeds.spread``), by whether it held: the
    mean over seeds, its sd and range, in the order held (sign and Holm in every seed), sign only, not held."""
    seeds = seed_ids(spread)
    groups = {
        "Held in every seed (same sign, Holm p < 0.05 in each)": spread["holds"].str.startswith("yes"),
        "Same sign in every seed, not significant in each": spread["holds"].str.startswith("sign only"),
        "Did not hold (the sign changes, or a seed lacks it)": ~spread["holds"].str.startswith(("yes", "sign only")),
    }
    parts = []
    for label, mask in groups.items():
        items = [
            f"`{r['system']}` vs `{r['baseline']}` "
            + (
                f"({r['mean']:+.3f}, {_sd(r['sd'])}, range {r['min']:+.3f} to {r['max']:+.3f})"
                if np.isfinite(r["mean"])
                else "(missing in every seed)"
            )
            for _, r in spread[mask].iterrows()
        ]
        parts.append(f"{label}: " + ("; ".join(items) if items else "none"))
    n = int(spread["n"].max()) if len(spread) else 0
    return (
        f"- **Over fine-tuning seeds** ({', '.join(seeds)}; the sources fine-tuned again per seed, "
        f"{n} declared targets): " + ". ".join(parts) + "."
    )


def _repeated(system: str, spread: pd.DataFrame | None) -> str:
    """`` (over seeds: ...)`` for a system against the oracle, from the seeds' frame; '' without one."""
    if spread is None or spread.empty:
        return ""
    row = spread[(spread["system"] == system) & (spread["baseline"] == BEST_ZERO_SHOT)]
    if row.empty:
        return " (not repeated over fine-tuning seeds: this rests on one seed)"
    r = row.iloc[0]
    return f" (over {len(seed_ids(spread))} fine-tuning seeds: {r['holds']}; mean {r['mean']:+.3f}, {_sd(r['sd'])})"


def markdown(
    per_target: pd.DataFrame,
    *,
    seeds: pd.DataFrame | None = None,
    n_boot: int = 10000,
    seed: int = 42,
    min_pairs: int = 5,
    items: Mapping[str, pd.DataFrame] | None = None,
) -> str:
    """Does one label-free served model beat the oracle best single source? The best such model, every
    one significantly above the oracle, and each distilled student against its teacher (TOST within
    ``WITHIN``) and its init; ``seeds``: the headline effects over fine-tuning seeds (``over_seeds``), and for
    each model named against the oracle whether the seeds repeated it; ``items``: the per-item matrices the
    tests use where they cover a pair; a line names the tests used."""
    kw = {"n_boot": n_boot, "seed": seed, "min_pairs": min_pairs, "items": items}
    single = single_models(per_target, **kw)
    if single.empty:
        return f"*No label-free single model or no `{BEST_ZERO_SHOT}` in this run.*"
    n_all = int(per_target[BEST_ZERO_SHOT].notna().sum())
    best = single.iloc[0]
    above = single[(single["mean_diff"] > 0) & (single["p_holm"] < ALPHA)]
    where = f"its {int(best['n'])} targets" + ("" if int(best["n"]) == n_all else f", a declared subset of the {n_all}")
    out = [
        f"- **One label-free model against the oracle.** The best label-free single model (largest paired gain "
        f"over the oracle) is `{best['system']}` (mean {best['mean']:.3f} over {where}); it {_word(best)} the "
        f"oracle `{BEST_ZERO_SHOT}` (mean {best['oracle_mean']:.3f} on the same targets, picked with each target's "
        f"test labels): {_cite(best)}; Holm over the {len(single)} label-free single models"
        + _repeated(best["system"], seeds)
        + ".",
        "- Label-free single models significantly above the oracle: "
        + (
            ", ".join(
                f"`{s}` ({d:+.3f}" + ("" if n == n_all else f", {n} targets") + ")" + _repeated(s, seeds)
                for s, d, n in zip(above["system"], above["mean_diff"], above["n"].astype(int))
            )
            or "none"
        )
        + ".",
    ]
    distilled = students(per_target, **kw)
    for _, g in distilled.groupby("system", sort=False):
        by = g.set_index("role")
        line = f"- **Distilled student** `{g['system'].iloc[0]}`"
        if "teacher" in by.index:
            t = by.loc["teacher"]
            line += f": against its teacher {_cite(t, t['baseline'])}, {_within(t)}"
        if "init" in by.index:
            line += f"; against its initialisation (the merge of the same sources) {_cite(by.loc['init'])}"
        out.append(line + ".")
    used = itemwise.tests_used(pd.concat([single, distilled]))
    tost = sorted(set(distilled.get("equivalence_test", pd.Series(dtype=object)).dropna()) - {""})
    out.append(
        f"- *Tests:* two-sided {' and '.join(used) or 'none'}"
        + (f"; equivalence within ±{WITHIN}: {' and '.join(tost)}, Holm over the students" if tost else "")
        + "."
    )
    if seeds is not None and not seeds.empty:
        out.append(over_seeds(seeds))
    return "\n".join(out)
