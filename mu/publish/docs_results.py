"""The tables of a collected run for README.md and docs/ (``mu.publish.docs`` renders them between
markers): every system against its baselines, the README's headline, URIEL against measured transfer,
the spread of the URIEL weights, encoder STS, the notebooks' timings, and the pretraining objectives
compared; all from the committed files in ``docs/results/``.
"""

from __future__ import annotations

import fnmatch

import pandas as pd

from mu.analysis import families
from mu.publish.collect import RESULTS, checkout, collected, not_collected, pools, test_label, transfer_split
from mu.publish.collect import duration as _duration
from mu.publish.collect import md_table as _table
from mu.publish.collect import mean_ci as _mean_ci
from mu.publish.collect import num as _num
from mu.publish.collect import p_text as _p
from mu.publish.collect import read_csv as _csv
from mu.publish.collect import read_json as _json
from mu.publish.collect import results_path as _results

AVERAGE, ORACLE, TOP1 = "merge/linear/average", families.BEST_ZERO_SHOT, families.URIEL_TOP1
BASELINES = {"average": "the average merge of the same sources", "oracle": f"`{ORACLE}` (oracle)", "top1": f"`{TOP1}`"}
HEADLINE = {  # the README's systems, each with what it is
    families.NATIVE: "the target's own model (upper reference)",
    ORACLE: "best single other-language model, picked with the target's test labels (upper bound)",
    TOP1: "the single source URIEL ranks first",
    "merge/linear/similarity": "linear merge of the 5 URIEL-closest sources, URIEL weights",
    AVERAGE: "the same sources, equal weights",
    "merge/linear/transfer": "linear merge, sources and weights from measured transfer (leave-target-out)",
    "merge/iso_c/average": "Iso-C merge of the same sources (a flat singular spectrum per weight matrix), equal weights",
    "ensemble/soft/similarity": "soft-vote ensemble of the URIEL sources, URIEL weights",
    "ensemble/soft/transfer": "soft-vote ensemble, transfer weights",
    "adapted/adamerging*/similarity": "AdaMerging of the URIEL sources on the target's unlabeled text",
    "adapted/distilled-*/*": "one student distilled from the chosen ensemble on unlabeled text",
    "iterative/linear/similarity": "the URIEL sources trained together, merged every `merge_frequency` epochs "
    "(mini: as many epochs as the one-shot sources)",
    "iterative-adaptive/linear/similarity": "the same, merged when the sources' dev accuracy says so",
    "joint/similarity": "one model trained on the union of the same 5 URIEL sources' labeled data, the sources' "
    "epochs (the baseline for iterative training)",
    "joint/all": "one model trained on all other locales' labeled data, at `joint/similarity`'s example budget",
}
PROFILES = ("toy", "mini")


def _vs(tests: pd.DataFrame, system: str, which: str, name_test: bool = False) -> str:
    if which == "average":
        mine = tests[
            (tests["system"] == system)
            & tests["baseline"].str.startswith("merge/")
            & tests["baseline"].str.endswith("/average")
        ]
    else:
        mine = tests[(tests["system"] == system) & (tests["baseline"] == {"oracle": ORACLE, "top1": TOP1}[which])]
    if mine.empty or mine.iloc[0]["n"] == 0:
        return ""
    t = mine.iloc[0]
    holm = f", Holm {_p(t['p_holm'])}" if "p_holm" in t and pd.notna(t["p_holm"]) else ""
    named = name_test and isinstance(t.get("test"), str)  # the header cannot name one test for all rows
    test = f" {test_label(mine.iloc[:1])}" if named else ""
    return (
        f"{_num(t['mean_diff'], signed=True)} ({int(t['wins'])}/{int(t['ties'])}/{int(t['losses'])},"
        f"{test} p {_p(t['p_value'])}{holm})"
    )


def systems(profile: str, vs: str = "average,oracle", families_: str = "", systems_: str = "") -> str:
    """Every system of a profile (or those of ``families_`` / the listed ``systems_``): what it sees, targets,
    mean [95% CI], and paired differences (wins/ties/losses, the p-value of notebook 06's paired test, named in the
    header, or in each cell where the rows used several, and the Holm-adjusted p)."""
    cols = [c for c in vs.split(",") if c]
    unknown = [c for c in cols if c not in BASELINES]
    if unknown:
        raise ValueError(f"vs={unknown}: valid baselines are {sorted(BASELINES)}")
    if not collected(profile):
        return not_collected(profile)
    means, tests = _csv(profile, "means.csv"), _csv(profile, "tests.csv")
    means = means[means["n"] > 0]
    if families_:
        means = means[means["system"].str.split("/").str[0].isin(families_.split(","))]
    if systems_:  # names or fnmatch patterns (merge/linear/*)
        means = means[[any(fnmatch.fnmatchcase(s, pat) for pat in systems_.split(",")) for s in means["system"]]]
    means = means.sort_values(["mean", "system"], ascending=[False, True])
    groups = [means[means["n"] == n] for n in sorted(set(means["n"]), reverse=True)]
    if len(groups) > 1:  # one table per target set: a mean over 15 targets is not set beside one over 46
        return "\n\n".join(
            f"*On {int(g['n'].iloc[0])} targets:*\n\n{_systems_table(profile, g, tests, cols)}" for g in groups
        )
    return _systems_table(profile, means, tests, cols)


def _systems_table(profile: str, means: pd.DataFrame, tests: pd.DataFrame, cols: list[str]) -> str:
    used = test_label(tests)
    mixed = " / " in used
    p_head = "p: test in each cell" if mixed else f"{used} p".strip()
    head = ["system", "sees", "targets", "mean [95% CI]"] + [f"vs {BASELINES[c]} (w/t/l, {p_head})" for c in cols]
    rows = [
        [
            f"`{r['system']}`",
            families.sees(r["system"], transfer_split=transfer_split(profile)),
            int(r["n"]),
            _mean_ci(r),
            *[_vs(tests, r["system"], c, mixed) for c in cols],
        ]
        for _, r in means.iterrows()
    ]
    return _table(head, rows)


def _found(frames: dict[str, pd.DataFrame]) -> list[tuple[str, str, dict[str, str | None]]]:
    """(key, what, {profile: the system the key names there, or None}) for every headline row: a key may be a
    pattern (the adapted systems are named by their chosen knobs)."""
    return [
        (
            key,
            what,
            {
                p: next((s for s in f.index if fnmatch.fnmatchcase(s, key) and f.loc[s, "n"] > 0), None)
                for p, f in frames.items()
            },
        )
        for key, what in HEADLINE.items()
    ]


def _common(table: pd.DataFrame, systems: list[str]) -> list[str]:
    """The targets on which every one of ``systems`` has a result in ``table`` (``summary.csv`` by target)."""
    return sorted(table.index[table[[s for s in systems if s in table]].notna().all(axis=1)])


def headline(profiles: str = ",".join(PROFILES)) -> str:
    """The README's few systems, one column per profile (mean [95% CI] over all its targets), and, for a profile
    where some of them ran on a declared subset only, a column of plain means over the targets every one of
    them has: each column compares the systems on one set of targets."""
    names = profiles.split(",")
    frames = {p: _csv(p, "means.csv").set_index("system") for p in names if collected(p)}
    rows_found = _found(frames)
    full = {p: int(f["n"].max()) for p, f in frames.items()}
    subset: dict[str, list[str]] = {}
    per_target: dict[str, pd.DataFrame] = {}
    for p in frames:
        mine = [found[p] for _, _, found in rows_found if found.get(p)]
        if any(int(frames[p].loc[s, "n"]) < full[p] for s in mine):
            per_target[p] = _csv(p, "summary.csv").set_index("target")
            subset[p] = _common(per_target[p], mine)
    head = ["system", "what", "sees", "needs"]
    for p in names:
        head.append(f"{p} ({full[p]} targets)" if p in frames else p)
        if p in subset:
            head.append(f"{p}, the {len(subset[p])} targets all of them ran on (mean)")
    rows = []
    for key, what, found in rows_found:
        cells = []
        for p in names:
            s = found.get(p)
            if p not in frames:
                cells.append("not yet collected")
                continue
            ran_all = s is not None and int(frames[p].loc[s, "n"]) == full[p]
            cells.append(_mean_ci(frames[p].loc[s]) if ran_all else ("—" if s is None else "only a subset"))
            if p in subset:
                cells.append(_num(per_target[p].loc[subset[p], s].mean()) if s else "—")
        named = {p: s for p, s in found.items() if s}  # a pattern may name another system per profile: say which
        label = (
            f"`{next(iter(named.values()))}`"
            if len(set(named.values())) == 1
            else ", ".join(f"`{s}` ({p})" for p, s in named.items()) or f"`{key}`"
        )
        seen = {families.sees(s, transfer_split=transfer_split(p)) for p, s in named.items()}
        needs = families.needs(next(iter(named.values()), key))
        rows.append([label, what, " / ".join(sorted(seen)) or families.sees(key), needs, *cells])
    return _table(head, rows)


def provenance(profile: str) -> str:
    """What the collected run of ``profile`` could see and claim, in words, from its ``run.json``: the README's
    note under the headline, so it changes with the run it describes."""
    if not collected(profile):
        return not_collected(profile)
    if pools(profile) == "disjoint" and transfer_split(profile) == "dev":
        return (
            f"**The {profile} column comes from the pre-registered run** (`params/preregistration.yaml`): the "
            "text a target-side method adapts on comes from an unlabeled pool that shares no id with any labeled "
            "text a source trained on, in any locale; `transfer` weights rank sources on the dev N×N"
            + (
                "; intervals are two-way bootstraps over targets and their shared test items"
                if "Wilcoxon" not in test_label(_csv(profile, "tests.csv"))
                else "; its tests over targets treat targets as independent (Wilcoxon)"
            )
            + ". Only the "
            "[confirmatory tests](#confirmatory-results) are confirmatory; every other comparison here is "
            "exploratory. `needs`: what a system must have besides what it sees (joint and iterative training "
            "need the sources' labeled data; merges and ensembles only the source models)."
        )
    return (
        f"**These {profile} numbers are exploratory.** The run behind them had flaws a reviewer would name, and "
        "the code now fixes each: "
        + (
            "the adapted family's unlabeled text was translations of the sources' labeled data (now a disjoint "
            "unlabeled pool), "
            if pools(profile) != "disjoint"
            else ""
        )
        + (
            "`transfer` weights ranked sources on test items in translation (now the dev N×N), "
            if transfer_split(profile) != "dev"
            else ""
        )
        + (
            "there was no joint-training baseline (now `joint/<weighting>` and `joint/all`), "
            if not _csv(profile, "means.csv")["system"].str.startswith("joint/").any()
            else ""
        )
        + (
            "and the intervals and tests over targets treated targets as independent although they share their "
            "test items (now item-aware: `mu.analysis.inference`). "
            if "Wilcoxon" in test_label(_csv(profile, "tests.csv"))
            else ""
        )
        + "No claim below is confirmatory ([those](#confirmatory-results) come from the pre-registered run)."
    )


def uriel(profile: str) -> str:
    """Spearman's rho between URIEL cosine and measured transfer, per feature set (notebook 06)."""
    if not _results(profile, "uriel.csv").is_file():
        return not_collected(profile)
    u = _csv(profile, "uriel.csv")
    head = [
        "feature set",
        "mean per-target ρ [95% CI]",
        "targets with ρ > 0",
        "Wilcoxon p (per-target ρ vs 0)",
        "donor-adjusted ρ",
        "pooled ρ (pairs)",
    ]
    rows = [
        [
            f"`{r['feature_set']}`",
            f"{_num(r['mean_rho_per_target'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]",
            f"{int(r['targets_positive'])} / {int(r['targets'])}",
            _p(r["wilcoxon_p"]),
            _num(r["mean_rho_donor_adjusted"]),
            f"{_num(r['pooled_rho'])} ({int(r['pairs'])})",
        ]
        for _, r in u.iterrows()
    ]
    return _table(head, rows)


def spread(profile: str) -> str:
    """How spread the URIEL weights are over the targets: min / median / max of each statistic."""
    if not _results(profile, "spread.csv").is_file():
        return not_collected(profile)
    s = _csv(profile, "spread.csv")
    what = {
        "kept": ("sources kept by top-K", 0),
        "max": ("largest Sinkhorn weight in a row", 3),
        "min": ("smallest Sinkhorn weight in a row", 3),
        "max_over_min": ("largest / smallest in a row", 2),
        "effective": ("effective number of sources (1/Σw²)", 2),
        "chosen_max": ("largest of the weights a merge gets", 3),
        "chosen_min": ("smallest of the weights a merge gets", 3),
        "chosen_effective": ("effective number among those", 2),
    }
    rows = [
        [label, *[_num(f(s[c]), digits) for f in (pd.Series.min, pd.Series.median, pd.Series.max)]]
        for c, (label, digits) in what.items()
    ]
    rows[0][0] += f" (of {int(s['candidates'].iloc[0])} candidates; {len(s)} targets)"
    return _table(["statistic over targets", "min", "median", "max"], rows)


def sts(profile: str) -> str:
    """Encoder STS (Spearman) per target: the untrained base, the best source and each merge (notebook 03)."""
    if not _results(profile, "sts.csv").is_file():
        return not_collected(profile)
    s = _csv(profile, "sts.csv")
    merges = sorted(m for m in s["model"].unique() if "/" in m)
    rows = []
    for target, g in s.groupby("target"):
        v = dict(zip(g["model"], g["spearman"]))
        src = {m: x for m, x in v.items() if m != "base" and "/" not in m}
        best = max(src, key=src.get)
        rows.append([target, _num(v.get("base")), f"{_num(src[best])} ({best})", *[_num(v.get(m)) for m in merges]])
    return _table(["target", "base", "best source"] + [f"`{m}`" for m in merges], rows)


def timings(profile: str) -> str:
    """Seconds per notebook (sum over its jobs, from the runner's done-markers) and, for a study, per stage."""
    path = _results(profile, "timings.json")
    if not path.is_file():
        return not_collected(profile)
    t = _json(path)
    rows = [[f"`{nb}`", v["jobs"], _duration(v["seconds"])] for nb, v in sorted(t["notebooks"].items())]
    out = _table(["notebook", "jobs", "job time (sum)"], rows)
    if t.get("study"):
        ran: dict[str, tuple[int, dict]] = {}  # stage: (invocation, its record) of the last invocation that ran it
        for i, inv in enumerate(t["study"], 1):
            for stage, rec in (inv.get("stages") or {}).items():
                if rec.get("ran"):
                    ran[stage] = (i, rec)
        stages = [
            [stage, f"{rec['ran']} / {rec['jobs']}", _duration(rec["seconds"]), i] for stage, (i, rec) in ran.items()
        ]
        last = t["study"][-1]
        out += (
            "\n\n"
            + _table(["study stage", "jobs run / planned", "wall time", "invocation"], stages)
            + f"\n\nEach stage as measured in the last invocation of `python -m mu study` that ran it "
            f"({len(t['study'])} invocations recorded; a resumed invocation skips what is done); "
            f"{last['targets']} targets, {last['workers']} notebook worker(s)."
        )
    return out


def objectives(name: str) -> str:
    """A ``python -m mu compare-objectives`` comparison: native accuracy and N×N transfer per encoder."""
    path = checkout(RESULTS, "pretrain", f"{name}.json")
    if not path.is_file():
        return (
            f"*Not yet collected: no `docs/results/pretrain/{name}.json`. Run `python -m mu compare-objectives "
            f"--name {name} ...`, then `python -m mu docs --collect <profile> --from <its MU_ROOT>`.*"
        )
    c = _json(path)
    cols = [
        k for k in ("native", "transfer", "same_script", "cross_script", "transfer_over_native") if k in c["table"][0]
    ]
    rows = [[r["system"], _num(r.get("dev_mlm_loss_mean"), 2), *[_num(r[k]) for k in cols]] for r in c["table"]]
    ft = c["finetune"]
    return (
        _table(["system", "dev MLM loss"] + cols, rows)
        + f"\n\nLocales: {', '.join(c['locales'])}; fine-tuning {ft['epochs']} epochs, lr {ft['lr']}; "
        f"pretraining {c['pretrain'].get('steps')} steps, `{c['pretrain'].get('embedding_init', 'random')}` init."
    )


TABLES = {
    "headline": headline,
    "provenance": provenance,
    "systems": systems,
    "uriel": uriel,
    "spread": spread,
    "sts": sts,
    "timings": timings,
    "objectives": objectives,
}
