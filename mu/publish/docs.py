"""The results tables of README.md and docs/*.md, generated from committed result files.

A generated table sits between two markers in a Markdown file; the opening one names the table
and its arguments::

    <!-- mu:table systems profile=toy vs=average,oracle -->
    | ... generated ... |
    <!-- /mu:table -->

``python -m mu docs`` rewrites every block; ``--check`` changes nothing and exits 1 when a block
differs from what would be written (so a hand-edited number fails a test); ``--collect PROFILE``
first copies a finished run's small summary files into ``docs/results/<PROFILE>/`` (``mu.publish.collect`` lists
them), the committed inputs of the tables with ``reports/bench/*.json``. Paths resolve against the
checkout (code and docs), never ``MU_ROOT``; ``--from`` names the run's root.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from mu.analysis import families
from mu.core import paths
from mu.publish import docs_study
from mu.publish.collect import RESULTS, checkout, collect, collected, not_collected, transfer_split
from mu.publish.collect import duration as _duration
from mu.publish.collect import md_table as _table  # noqa: F401
from mu.publish.collect import mean_ci as _mean_ci
from mu.publish.collect import num as _num
from mu.publish.collect import p_text as _p
from mu.publish.collect import read_csv as _csv
from mu.publish.collect import read_json as _json
from mu.publish.collect import results_path as _results

OPEN = re.compile(r"^<!-- mu:table (?P<spec>[^>]*?) -->$")
CLOSE = "<!-- /mu:table -->"
PAGES = ("README.md", "docs/*.md")
BENCH = "reports/bench"
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
}
PROFILES = ("toy", "mini")


# --------------------------------------------------------------------------- reading committed results


def _vs(tests: pd.DataFrame, system: str, which: str) -> str:
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
    return f"{_num(t['mean_diff'], signed=True)} ({int(t['wins'])}/{int(t['ties'])}/{int(t['losses'])}, p {_p(t['p_value'])}{holm})"


# --------------------------------------------------------------------------- tables


def systems(profile: str, vs: str = "average,oracle", families_: str = "", systems_: str = "") -> str:
    """Every system of a profile (or those of ``families_`` / the listed ``systems_``): what it sees, targets,
    mean [95% bootstrap CI], and paired differences (wins/ties/losses, Wilcoxon p, Holm-adjusted p)."""
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
    head = ["system", "sees", "targets", "mean [95% CI]"] + [f"vs {BASELINES[c]} (w/t/l, p)" for c in cols]
    rows = [
        [
            f"`{r['system']}`",
            families.sees(r["system"], transfer_split=transfer_split(profile)),
            int(r["n"]),
            _mean_ci(r),
            *[_vs(tests, r["system"], c) for c in cols],
        ]
        for _, r in means.iterrows()
    ]
    return _table(head, rows)


def _subset(frame: pd.DataFrame, system: str) -> str:
    """`` (15 targets)`` when a system ran on fewer targets than the column's (a declared subset), else ''."""
    n, full = int(frame.loc[system, "n"]), int(frame["n"].max())
    return "" if n == full else f" ({n} targets)"


def headline(profiles: str = ",".join(PROFILES)) -> str:
    """The README's few systems, one column per profile (mean [95% CI] over its targets)."""
    names = profiles.split(",")
    frames = {p: _csv(p, "means.csv").set_index("system") for p in names if collected(p)}
    head = ["system", "what", "sees"] + [
        f"{p} ({int(frames[p]['n'].max())} targets)" if p in frames else p for p in names
    ]
    rows = []
    for key, what in HEADLINE.items():  # a key may be a pattern: the adapted systems are named by their chosen knobs
        found = {
            p: next((s for s in f.index if fnmatch.fnmatchcase(s, key) and f.loc[s, "n"] > 0), None)
            for p, f in frames.items()
        }
        cells = [
            (_mean_ci(frames[p].loc[found[p]]) + _subset(frames[p], found[p]))
            if found.get(p)
            else ("not yet collected" if p not in frames else "—")
            for p in names
        ]
        named = {p: s for p, s in found.items() if s}  # a pattern may name another system per profile: say which
        label = (
            f"`{next(iter(named.values()))}`"
            if len(set(named.values())) == 1
            else ", ".join(f"`{s}` ({p})" for p, s in named.items()) or f"`{key}`"
        )
        seen = {families.sees(s, transfer_split=transfer_split(p)) for p, s in named.items()}
        rows.append([label, what, " / ".join(sorted(seen)) or families.sees(key), *cells])
    return _table(head, rows)


def uriel(profile: str) -> str:
    """Spearman's rho between URIEL cosine and measured transfer, per feature set (notebook 06)."""
    if not _results(profile, "uriel.csv").is_file():
        return not_collected(profile)
    u = _csv(profile, "uriel.csv")
    head = [
        "feature set",
        "mean per-target ρ [95% CI]",
        "targets with ρ > 0",
        "Wilcoxon p",
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


def _bench() -> dict[str, Any]:
    return _json(checkout(BENCH, "results.json"))


def bench_machine(file: str = "results") -> str:
    m = _json(checkout(BENCH, f"{file}.json"))["machine"]
    return _table(
        ["cores", "CPU", "RAM GB", "GPU", "torch (threads)", "load average at start", "date"],
        [
            [
                m["cpu_count"],
                m["cpu_model"],
                f"{m['ram_total_gb']:.0f}",
                m["gpu"] or "none",
                f"{m['torch']} ({m['torch_threads']})",
                ", ".join(f"{x:.1f}" for x in m["load_avg_at_start"]),
                m["date"][:10],
            ]
        ],
    )


def bench_merge() -> str:
    """Per method: mu's merge time at each N, its ratio to the I/O floor, its peak memory, and mergekit's."""
    rows = _bench()["merge"]["rows"]
    head = ["method", "N", "mu merge s", "mu / I/O floor", "mu peak GB", "(N+2)×model GB", "mergekit s (peak GB)"]
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        mk = [
            f"{_num(r['mergekit_wall_s'], 1)} ({_num(r['mergekit_peak_rss_gb'], 1)})"
            if r["mergekit_wall_s"] is not None
            else "—"
            for r in mine
        ]
        out.append(
            [
                f"`{method}`",
                " / ".join(str(r["n"]) for r in mine),
                " / ".join(_num(r["mu_op_s"], 1) for r in mine),
                " / ".join(_num(r["mu_over_io_floor"], 2) for r in mine),
                " / ".join(_num(r["mu_peak_rss_gb"], 1) for r in mine),
                " / ".join(_num(r["peak_limit_gb"], 1) for r in mine),
                " / ".join(mk),
            ]
        )
    return _table(head, out)


def bench_eval() -> str:
    b = _bench()
    ev, en = b["evaluation"], b["ensemble"]
    rows = [
        [
            f"evaluation, {ev['n']} utterances",
            f"`mu.evaluate` {_num(ev['mu_examples_per_s'], 1)} ex/s",
            f"naive loop {_num(ev['naive_examples_per_s'], 1)} ex/s",
            f"{_num(ev['speedup'], 2)}×",
        ],
        [
            f"ensemble K = {en['k']} ({en['method']}), {en['n']} utterances",
            f"from cached logits {_num(en['cached_s'], 2)} s",
            f"recomputing {_num(en['recompute_s'], 1)} s",
            f"{_num(en['speedup'], 0)}×",
        ],
    ]
    return _table(["measurement", "mu", "reference", "ratio"], rows)


def study_cost() -> str:
    s = _json(checkout(BENCH, "study.json"))
    rows = [[unit, _num(sec, 1), _num(sec / 3600, 2)] for unit, sec in s["projection"]["unit_s"].items()]
    parts = [[part, _num(h, 1)] for part, h in s["projection"]["hours"].items()]
    return (
        _table(["projected unit (CPU)", "seconds", "hours"], rows)
        + "\n\n"
        + _table(["projected study part (CPU)", "hours"], parts)
    )


def threads() -> str:
    """Pretraining seconds per step, torch's default threads against ``mu.core.threads.count()``, alone and beside a
    busy process (``python -m bench.threads`` → ``reports/bench/threads.json``)."""
    d = _json(checkout(BENCH, "threads.json"))
    rows = [
        [
            "torch default" if r["variant"] == "before" else "`mu.threads.count()`",
            "yes" if r["competitor"] else "no",
            _num(r["min_s"], 2),
            _num(r["median_s"], 2),
            r["runs"],
            "/".join(map(str, r["torch_threads"])),
        ]
        for r in d["summary"]
    ]
    loads = [r["load_1min_before"] for r in d["rows"]]
    return (
        _table(["threads", "competing busy process", "s/step min", "s/step median", "runs", "torch threads"], rows)
        + f"\n\n{len(d['cpus'])} allowed CPUs; 1-minute load average before the runs {min(loads):.1f}–{max(loads):.1f}."
    )


def make_test() -> str:
    """``make test`` on a fresh clone (``python -m bench.maketest`` → ``reports/bench/make-test.json``)."""
    r, head = _json(checkout(BENCH, "make-test.json")), ["date", "commit", "fresh clone `bash .ci/run` (venv included)"]
    return _table(
        head + ["pytest", "passed / skipped / failed", "workers", "load before"],
        [
            [
                r["date"],
                f"`{r['commit']}`",
                _duration(r["wall_s"]),
                _duration(r["pytest_s"]),
                f"{r['passed']} / {r['skipped']} / {r['failed']}",
                r["workers"],
                r["load_before"],
            ]
        ],
    )


TABLES: dict[str, Callable[..., str]] = {
    "make-test": make_test,
    "threads": threads,
    "headline": headline,
    "systems": systems,
    "uriel": uriel,
    "spread": spread,
    "sts": sts,
    "timings": timings,
    "objectives": objectives,
    "bench-machine": bench_machine,
    "bench-merge": bench_merge,
    "bench-eval": bench_eval,
    "study-cost": study_cost,
    **docs_study.TABLES,
}


def render(spec: str) -> str:
    """The Markdown of one table from its marker's spec: a name, then ``key=value`` arguments."""
    name, *args = spec.split()
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; valid: {sorted(TABLES)}")
    kwargs = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"table {name!r}: argument {arg!r} is not key=value")
        kwargs[{"families": "families_", "systems": "systems_"}.get(key, key)] = value
    try:
        return TABLES[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"table {name!r}: bad arguments {args}: {exc}") from None


# --------------------------------------------------------------------------- rewriting pages


def rewrite(text: str, where: str = "<text>") -> str:
    """``text`` with every marked block regenerated; an unclosed or nested marker is an error naming the line."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        out.append(lines[i])
        match = OPEN.match(lines[i].strip())
        i += 1
        if not match:
            continue
        start = i
        while i < len(lines) and lines[i].strip() != CLOSE:
            if OPEN.match(lines[i].strip()):
                raise ValueError(f"{where}:{i + 1}: a table opens inside the one opened at line {start}")
            i += 1
        if i == len(lines):
            raise ValueError(f"{where}:{start}: `{lines[start - 1].strip()}` is never closed by `{CLOSE}`")
        try:
            out += [render(match["spec"]), lines[i]]
        except (ValueError, KeyError, FileNotFoundError) as exc:
            raise ValueError(f"{where}:{start}: {exc}") from None
        i += 1
    return "\n".join(out)


def pages() -> list[Path]:
    return sorted(p for pattern in PAGES for p in checkout().glob(pattern))


def update(check: bool = False) -> list[Path]:
    """Regenerate every page's tables; the pages that differ (``check``: left as they are)."""
    changed = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = rewrite(text, str(page.relative_to(checkout())))
        if new != text:
            changed.append(page)
            if not check:
                paths.write_text(page, new)
    return changed


# --------------------------------------------------------------------------- command line


def add_parser(sub) -> None:
    p = sub.add_parser("docs", help="rewrite the results tables of README.md and docs/ from committed result files")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    p.add_argument("--collect", metavar="PROFILE", help="first copy PROFILE's summary files into docs/results/")
    p.add_argument(
        "--from", dest="root", default=None, help="the run's root for --collect (default: MU_ROOT or the checkout)"
    )


def main(args: argparse.Namespace) -> int:
    try:
        if args.collect:
            print(f"collected: {collect(args.collect, args.root or paths.root())}")
        changed = update(check=args.check)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for page in changed:
        print(f"{'differs' if args.check else 'rewritten'}: {page.relative_to(checkout())}")
    if args.check and changed:
        print("run `python -m mu docs` to regenerate them from the committed result files", file=sys.stderr)
        return 1
    return 0
