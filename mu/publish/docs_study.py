"""The study's tables for README.md and docs/ (``mu.publish.docs`` renders them between markers): the method
comparison and its answer in words, the headline claims, each system's cost, the fine-tuning grid
measured on dev, and AdaMerging over steps on the tuning targets, all from ``docs/results/<profile>/``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import pandas as pd

from mu.analysis import claims as mu_claims
from mu.analysis import compare, methods_table, stats
from mu.analysis.seeds import seed_ids
from mu.core import protocol
from mu.publish.collect import (
    collected,
    duration,
    md_table,
    not_collected,
    num,
    p_text,
    read_csv,
    read_json,
    results_path,
    test_label,
)


def methods(profile: str, tests: str = "yes") -> str:
    """Notebook 06's method × weighting means (``methods.csv``) after the answer in plain words
    (``mu.analysis.methods_table.answer`` on ``methods_contrasts.csv``); ``tests=no``: the means table only."""
    if not results_path(profile, "methods.csv").is_file():
        return not_collected(profile, "methods.csv")
    frame = read_csv(profile, "methods.csv")
    text = methods_table.markdown(frame)
    if tests == "no":
        text = text.split("\n\nPaired over targets")[0]
    return text


def methods_answer(profile: str) -> str:
    """Which merge method works across languages, in plain words with the numbers (``mu.analysis.methods_table.answer``)."""
    if not results_path(profile, "methods_contrasts.csv").is_file():
        return not_collected(profile, "methods_contrasts.csv")
    return methods_table.answer(read_csv(profile, "methods.csv"), read_csv(profile, "methods_contrasts.csv"))


def claims(profile: str) -> str:
    """Whether one label-free served model beats the oracle, and each distilled student against its teacher
    (``mu.analysis.claims.markdown`` on the committed per-target table ``summary.csv``)."""
    if not collected(profile):
        return not_collected(profile)
    seeds = read_csv(profile, "seeds.csv") if results_path(profile, "seeds.csv").is_file() else None
    return mu_claims.markdown(read_csv(profile, "summary.csv", index_col="target"), seeds=seeds)


def seeds(profile: str) -> str:
    """The headline effects repeated over fine-tuning seeds (notebook 06's ``seeds.csv``, ``mu.analysis.seeds``): the
    effect (system − baseline, mean over the declared targets) in each seed, its mean, sd and range over seeds,
    the largest Holm p of any seed, and whether the claim holds in every seed."""
    if not results_path(profile, "seeds.csv").is_file():
        return not_collected(profile, "seeds.csv")
    frame = read_csv(profile, "seeds.csv")
    ids = seed_ids(frame)
    rows = [
        [
            f"`{r['system']}`",
            f"`{r['baseline']}`",
            int(r["n"]),
            *[num(r[f"s{i}"], 3, signed=True) for i in ids],
            num(r["mean"], 3, signed=True),
            num(r["sd"], 3),
            p_text(r["max_p_holm"]),
            r["holds"],
        ]
        for _, r in frame.iterrows()
    ]
    return md_table(
        [
            "system",
            "baseline",
            "targets",
            *[f"seed {i}" for i in ids],
            "mean",
            "sd",
            f"largest Holm p ({test_label(frame)})".replace(" ()", ""),
            "holds",
        ],
        rows,
    )


def costs(profile: str, families_: str = "merge,adapted,iterative,iterative-adaptive", systems_: str = "") -> str:
    """Seconds per target of each system (its rows' ``seconds``: a merge's own time; for the adapted family the
    fit included, e.g. teacher forwards and training; ``costs.csv``)."""
    if not results_path(profile, "costs.csv").is_file():
        return not_collected(profile, "costs.csv")
    c = read_csv(profile, "costs.csv")
    c = c[c["system"].str.split("/").str[0].isin(families_.split(","))].sort_values(["median_s", "system"])
    if systems_:  # names or fnmatch patterns
        c = c[[any(fnmatch.fnmatchcase(s, pat) for pat in systems_.split(",")) for s in c["system"]]]
    rows = [
        [f"`{r['system']}`", int(r["targets"]), num(r["median_s"], 1), num(r["max_s"], 1), duration(r["total_s"])]
        for _, r in c.iterrows()
    ]
    return md_table(["system", "targets", "median s per target", "max s", "total"], rows)


def sweep_cost(profile: str) -> str:
    """What the method comparison (notebook 03's ``compare_methods``, ``sweep.csv``) cost: per method, the
    median seconds per target of its merges and evaluations under every weighting, and the total."""
    if not results_path(profile, "sweep.csv").is_file():
        return not_collected(profile, "sweep.csv")
    s = read_csv(profile, "sweep.csv")
    per = s.groupby("method")["seconds"].agg(["size", "median", "sum"]).sort_values("sum", ascending=False)
    rows = [[f"`{m}`", int(r["size"]), num(r["median"], 1), duration(r["sum"])] for m, r in per.iterrows()]
    per_target = s.groupby("target")["seconds"].sum()
    timings = results_path(profile, "timings.json")
    study = read_json(timings).get("study") if timings.is_file() else None
    workers = int(study[-1].get("workers", 1)) if study else 1
    return (
        md_table(["method", "targets", "median s per target", "total"], rows)
        + f"\n\n{len(per)} methods over {len(per_target)} targets: {duration(per_target.sum())} of merging and "
        f"evaluating, one target per process (median {num(per_target.median(), 0)} s per target), so about "
        f"{duration(per_target.sum() / workers)} of wall time on the run's {workers} notebook worker(s), "
        "besides each kernel's start and notebook 03's other cells."
    )


def tuning(profile: str) -> str:
    """The fine-tuning grid measured on the probe sources' dev splits (``tuning/finetune.json``): mean dev
    accuracy per epochs × lr, the choice, and whether it lies on the grid's edge (values beyond untried)."""
    path = results_path(profile, "tuning/finetune.json")
    if not path.is_file():
        return not_collected(profile, "tuning/finetune.json")
    record = read_json(path)
    grid = pd.DataFrame(record["grid"])
    mean = grid.groupby(["epochs", "lr"])["dev_accuracy"].mean().unstack("lr")
    best = grid.groupby(["epochs", "lr"])["dev_accuracy"].mean().idxmax()
    rows = [
        [f"{e:g}", *[("**" + num(v) + "**") if (e, lr) == best else num(v) for lr, v in r.items()]]
        for e, r in mean.iterrows()
    ]
    words = {("epochs", "largest"): "most epochs", ("epochs", "smallest"): "fewest epochs"}
    edges = [
        words.get((name, at), f"{at} {name}")
        for name, v, values in (("epochs", best[0], mean.index), ("lr", best[1], mean.columns))
        if (at := protocol.edge(v, list(values)))
    ]
    edge = (
        f" It lies on the grid's edge ({', '.join(edges)}): values beyond it were not tried."
        if edges
        else " It lies inside the grid."
    )
    return (
        md_table(["epochs \\ lr", *[f"{lr:g}" for lr in mean.columns]], rows)
        + f"\n\nMean dev accuracy over the probe sources {', '.join(record['args']['locales'])} "
        f"({int(grid['n_dev'].iloc[0])} dev utterances each); chosen: {best[0]:g} epochs, lr {best[1]:g}.{edge} "
        f"{len(grid)} fits, {duration(grid['seconds'].sum())} of fitting."
    )


def adamerging(profile: str) -> str:
    """AdaMerging on the tuning targets over steps (``tuning/adamerging.json``), step 0 being the plain merge:
    mean dev accuracy, dev entropy and held-out entropy per granularity; the diagnostic of why it gains or loses."""
    path = results_path(profile, "tuning/adamerging.json")
    if not path.is_file():
        return not_collected(profile, "tuning/adamerging.json")
    rows = pd.DataFrame(read_json(path)["rows"])
    mean = rows.groupby(["granularity", "step"])[["dev_accuracy", "dev_entropy", "held_out_entropy"]].mean()
    table = md_table(
        ["granularity", "step", "mean dev accuracy", "mean dev entropy", "mean held-out entropy"],
        [
            [g, int(s), num(r["dev_accuracy"]), num(r["dev_entropy"]), num(r["held_out_entropy"])]
            for (g, s), r in mean.iterrows()
        ],
    )
    lines = []
    for g, m in mean.groupby(level="granularity"):
        m = m.droplevel("granularity")
        first, last = m.iloc[0], m.iloc[-1]
        lines.append(
            f"`{g}`: from step 0 to {int(m.index[-1])}, held-out entropy {num(first['held_out_entropy'])} → "
            f"{num(last['held_out_entropy'])}, dev accuracy {num(first['dev_accuracy'])} → {num(last['dev_accuracy'])} "
            f"(best {num(m['dev_accuracy'].max())} at step {int(m['dev_accuracy'].idxmax())})"
        )
    targets = sorted(rows["target"].unique())
    return (
        table
        + f"\n\nOver the tuning targets {', '.join(targets)}: "
        + "; ".join(lines)
        + ". Entropy that falls while dev accuracy does not rise means a more confident merge, not a better one."
    )


def _best_bold(mean: pd.DataFrame, key: object, col: str) -> str:
    """``mean[col]`` at ``key`` as text, in bold where it is that column's largest value."""
    text = num(mean.at[key, col])
    return f"**{text}**" if key == mean[col].idxmax() else text


def distill_init(profile: str) -> str:
    """Which merge the distilled student starts from (``tuning/distill_init.json``, ``mu.combine.selection_student.choose_student_init``):
    per method, its merge's mean dev accuracy and mean held-out agreement with the teacher over the tuning
    targets, best first by dev accuracy; the best of each column in bold (``distill_selection`` reads one of them)."""
    path = results_path(profile, "tuning/distill_init.json")
    if not path.is_file():
        return not_collected(profile, "tuning/distill_init.json")
    every = pd.DataFrame(read_json(path)["rows"]).reindex(
        columns=["target", "method", "dev_accuracy", "held_out_agreement", "note"]
    )
    rows = every.dropna(subset=["dev_accuracy"])
    mean = (
        rows.groupby("method")[["dev_accuracy", "held_out_agreement"]]
        .mean()
        .sort_values(["dev_accuracy", "held_out_agreement"], ascending=False)
    )
    table = md_table(
        ["init (merge method)", "mean dev accuracy", "mean held-out agreement with the teacher"],
        [
            [f"`{m}`", _best_bold(mean, m, "dev_accuracy"), _best_bold(mean, m, "held_out_agreement")]
            for m in mean.index
        ],
    )
    skipped = every[~every["method"].isin(mean.index)].drop_duplicates("method")
    return (
        table + f"\n\nOver the tuning targets {', '.join(sorted(rows['target'].unique()))}; "
        f"{len(mean)} methods at their defaults"
        + "".join(f"; `{m}` not applicable ({n})" for m, n in zip(skipped["method"], skipped["note"]))
        + ". The choice is `04.distill.init` in the protocol."
    )


def distill_lr(profile: str) -> str:
    """The student's lr grid on the tuning targets (``tuning/distill_lr.json``, ``mu.combine.selection_student.choose_distill_lr``):
    per lr, the students' mean dev accuracy, mean best held-out agreement with the teacher, the mean step the
    label-free rule kept (0: the init itself) and the steps trained; the best of the first two in bold."""
    path = results_path(profile, "tuning/distill_lr.json")
    if not path.is_file():
        return not_collected(profile, "tuning/distill_lr.json")
    rows = pd.DataFrame(read_json(path)["rows"])
    mean = rows.groupby("lr")[["dev_accuracy", "held_out_agreement", "best_step", "steps"]].mean()
    table = md_table(
        ["lr", "mean dev accuracy", "mean held-out agreement", "mean step kept", "mean steps trained"],
        [
            [
                f"{lr:g}",
                _best_bold(mean, lr, "dev_accuracy"),
                _best_bold(mean, lr, "held_out_agreement"),
                num(r["best_step"], 0),
                num(r["steps"], 0),
            ]
            for lr, r in mean.iterrows()
        ],
    )
    return table + (
        f"\n\nOver the tuning targets {', '.join(sorted(rows['target'].unique()))}; step 0 kept means the "
        "label-free rule found no checkpoint agreeing better with the teacher than the init."
    )


def pairs(profile: str, systems_: str, baselines: str) -> str:
    """Chosen systems against chosen baselines, each pair over the targets both have (``mu.analysis.compare.head_to_head``
    on the committed per-target table ``summary.csv``): mean difference [95% CI], wins/ties/losses, the p-value of
    its test, and Holm over every test of this table (one family). The per-target table carries no per-item
    results, so the test is the Wilcoxon fallback over targets and the header says so."""
    if not collected(profile):
        return not_collected(profile)
    table = read_csv(profile, "summary.csv", index_col="target")
    wanted, base = systems_.split(","), baselines.split(",")
    missing = [s for s in [*wanted, *base] if s not in table.columns]
    if missing:
        raise ValueError(f"pairs: {missing} are not systems of {profile}'s summary.csv")
    t = compare.head_to_head(table, wanted, base, n_boot=10000, seed=42)
    t["p_table"] = stats.holm(t["p_value"].to_numpy(dtype=float))
    rows = [
        [
            f"`{r['system']}`",
            f"`{r['baseline']}`",
            int(r["n"]),
            f"{r['mean_diff']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]",
            f"{int(r['wins'])}/{int(r['ties'])}/{int(r['losses'])}",
            p_text(r["p_value"]),
            p_text(r["p_table"]),
        ]
        for _, r in t.iterrows()
    ]
    return md_table(
        [
            "system",
            "baseline",
            "targets",
            "mean difference [95% CI]",
            "w/t/l",
            f"{test_label(t)} p".strip(),
            f"Holm ({len(t)} tests)",
        ],
        rows,
    )


def budget(profile: str) -> str:
    """The whole study's time budget as the run priced it (the collected ``budget.md``, ``mu.experiment.budget``), without
    its title."""
    if not results_path(profile, "budget.md").is_file():
        return not_collected(profile, "budget.md")
    text = results_path(profile, "budget.md").read_text(encoding="utf-8")
    return "\n".join(line for line in text.strip().splitlines() if not line.startswith("# "))


TABLES: dict[str, Callable[..., str]] = {
    "methods": methods,
    "methods-answer": methods_answer,
    "claims": claims,
    "costs": costs,
    "tuning": tuning,
    "adamerging": adamerging,
    "sweep-cost": sweep_cost,
    "pairs": pairs,
    "seeds": seeds,
    "distill-init": distill_init,
    "distill-lr": distill_lr,
    "budget": budget,
}
