"""Collecting a finished run's small summary files into ``docs/results/<profile>/`` (``python -m mu docs
--collect PROFILE --from ROOT``): the committed inputs of the generated tables (``mu.publish.docs``), never MASSIVE data.

* ``means.csv``, ``tests.csv``, ``summary.csv``: notebook 06's mean over targets, paired tests and
  per-target table; ``methods.csv`` / ``methods_contrasts.csv``: its method × weighting table and the
  questions of ``mu.analysis.methods_table.contrasts``; ``seeds.csv`` / ``seeds_per_seed.csv``: the headline effects
  repeated over fine-tuning seeds (``mu.analysis.seeds``); ``confirmatory.csv`` / ``confirmatory.md``: the
  pre-registered hypotheses tested in every seed (``mu.analysis.confirm``), when the run was the
  confirmatory one (``reports/06_aggregation/<profile>/``);
* ``uriel.csv``, ``spread.csv``: its URIEL-vs-transfer correlations and weight spread (the record);
* ``sts.csv``: notebook 03's encoder STS (Spearman) of the base, each source and each merge, per target;
* ``costs.csv``: per system, the seconds its rows record per target (a merge's own time; the adapted
  family's fit included; records of notebooks 03–05): targets, median, max and total;
* ``sweep.csv``: notebook 03's ``compare_methods``: per target and method, the seconds of its merges and
  evaluations under every weighting; ``methods.png``: 06's figure of the method × weighting means;
* ``timings.json``: seconds per notebook from the runner's done-markers, and the study's stages
  (``reports/study/<profile>/timings.json``) when there are any;
* ``protocol.md`` (every knob, its value, what chose it, on which data), ``budget.md`` (minutes per
  stage from the recorded timings) and ``tuning/*.json`` (the grids the choices measured: fine-tuning
  recipe on dev, teacher, distillation lr, AdaMerging granularity × steps), from
  ``reports/study/<profile>/`` when the run was a study;
* ``run.json``: targets, notebook 06's parameters and the package versions of the run;
* ``docs/results/pretrain/<name>.json``: ``python -m mu compare-objectives`` comparisons found there.
Paths resolve against the checkout (code and docs), never ``MU_ROOT``. The readers below format them
for the generated tables (``mu.publish.docs``, ``mu.publish.docs_study``, ``mu.publish.docs_confirm``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mu.analysis import itemwise
from mu.core import paths

RESULTS = "docs/results"
COPIED = (
    "means.csv",
    "tests.csv",
    "summary.csv",
    "methods.csv",
    "methods_contrasts.csv",
    "seeds.csv",
    "seeds_per_seed.csv",
    "confirmatory.csv",
    "confirmatory.md",
)


def checkout(*parts: str) -> Path:
    return paths.source_dir(Path(*parts))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def collect(profile: str, root: str | Path) -> Path:
    """Copy a finished run's summary files (see the module doc) into ``docs/results/<profile>/``."""
    reports = Path(root).resolve() / "reports"
    agg = reports / "06_aggregation" / profile
    missing = [n for n in ("means.csv", "tests.csv", "summary.csv", "summary.json") if not (agg / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{agg} lacks {missing}: run notebook 06 for profile {profile!r} under {root} first")
    out = checkout(RESULTS, profile)
    for name in COPIED:
        if (agg / name).is_file():
            paths.write_text(out / name, (agg / name).read_text(encoding="utf-8"))
    study_dir = reports / "study" / profile
    for src in [study_dir / "protocol.md", study_dir / "budget.md", *sorted((study_dir / "tuning").glob("*.json"))]:
        if src.is_file():
            paths.write_text(out / src.relative_to(study_dir), src.read_text(encoding="utf-8"))
    record = read_json(agg / "summary.json")
    typology = record["results"].get("uriel_transfer")
    if typology:
        u = pd.DataFrame.from_dict(typology["summary"], orient="index").rename_axis("feature_set")
        paths.write_text(out / "uriel.csv", u.to_csv())
        s = pd.DataFrame.from_dict(typology["weight_spread"], orient="index").rename_axis("target")
        paths.write_text(out / "spread.csv", s.to_csv())
    scores = []
    for path in sorted(reports.glob("03_merging/*/*.json")):
        rec = read_json(path)
        if (rec.get("params") or {}).get("profile", profile) == profile and (rec.get("results") or {}).get("sts"):
            scores += [{"target": rec["target"], "model": m, "spearman": v} for m, v in rec["results"]["sts"].items()]
    if scores:
        frame = pd.DataFrame(scores).drop_duplicates(["target", "model"], keep="last")
        paths.write_text(out / "sts.csv", frame.to_csv(index=False))
    costs = [
        {"system": r["system"], "target": r.get("target", rec.get("target")), "seconds": r["seconds"]}
        for path in sorted(reports.glob("0[345]_*/*/*.json"))
        for rec in [read_json(path)]
        if (rec.get("params") or {}).get("profile", profile) == profile
        for r in rec.get("rows") or []
        if isinstance(r, dict) and r.get("seconds") is not None and "system" in r
    ]
    if costs:
        c = pd.DataFrame(costs).drop_duplicates(["system", "target"], keep="last").groupby("system")["seconds"]
        frame = pd.DataFrame({"targets": c.size(), "median_s": c.median(), "max_s": c.max(), "total_s": c.sum()})
        paths.write_text(out / "costs.csv", frame.round(2).reset_index().to_csv(index=False))
    sweep = [
        {"target": rec["target"], "method": path.stem.rsplit("-", 1)[0], "seconds": rec["results"]["seconds"]}
        for path in sorted(reports.glob("03_merging/*/*.json"))
        for rec in [read_json(path)]
        if (rec.get("params") or {}).get("profile", profile) == profile
        and (rec.get("results") or {}).get("run_by") == "compare_methods"
    ]
    if sweep:  # compare_methods: one method's merges and evaluations under every weighting, per target
        paths.write_text(out / "sweep.csv", pd.DataFrame(sweep).round(2).to_csv(index=False))
    if (agg / "methods.png").is_file():
        with paths.atomic_path(out / "methods.png", suffix=".png") as tmp:
            tmp.write_bytes((agg / "methods.png").read_bytes())
    jobs: dict[str, dict[str, float]] = {}
    for marker in sorted(reports.glob("*/*.done.json")):
        m = read_json(marker)
        if m.get("parameters", {}).get("profile", profile) == profile:
            entry = jobs.setdefault(m["notebook"], {"jobs": 0, "seconds": 0.0})
            entry["jobs"] += 1
            entry["seconds"] = round(entry["seconds"] + m["seconds"], 2)
    study = study_dir / "timings.json"
    paths.write_json(out / "timings.json", {"notebooks": jobs, "study": read_json(study) if study.is_file() else []})
    paths.write_json(
        out / "run.json",
        {
            "profile": profile,
            "targets": sorted(record["results"]["table"]),
            "params": record.get("params"),
            "versions": record.get("versions"),
            "created": record.get("created"),
            # what its transfer weighting ranked by: notebook 02 writes the dev N×N since transfer reads it
            "transfer_nxn": "dev"
            if (reports / "02_training" / profile / "evaluation_matrix_dev.csv").is_file()
            else "test",
            # the study's pool design (mu.corpus.pools): whether adapted text is disjoint from labeled text
            "pools": next((e["pools"] for e in reversed(read_json(study)) if e.get("pools")), None)
            if study.is_file()
            else None,
        },
    )
    for comparison in sorted(reports.glob("pretrain/*/comparison.json")):
        paths.write_text(
            checkout(RESULTS, "pretrain", f"{comparison.parent.name}.json"), comparison.read_text(encoding="utf-8")
        )
    return out


# --------------------------------------------------------------------------- reading them back (mu.publish.docs, mu.publish.docs_study)


def results_path(profile: str, name: str) -> Path:
    return checkout(RESULTS, profile, name)


def pools(profile: str) -> str | None:
    """The pool design of a collected run's study (``disjoint``, ``parallel``), None when it recorded none (runs
    collected before the pools existed: the parallel design, whose adapted text translates labeled text)."""
    run = results_path(profile, "run.json")
    return read_json(run).get("pools") if run.is_file() else None


def transfer_split(profile: str) -> str:
    """The split of the N×N a collected run's ``transfer`` weighting ranked by (runs collected before the dev N×N
    existed: ``test``); ``mu.analysis.families.sees`` says what that weighting saw."""
    run = results_path(profile, "run.json")
    return (read_json(run).get("transfer_nxn") if run.is_file() else None) or "test"


def collected(profile: str) -> bool:
    return results_path(profile, "means.csv").is_file()


def not_collected(profile: str, name: str | None = None) -> str:
    """The placeholder of a table whose input is missing: the whole profile, or (``name``) one file of it."""
    what = (
        f"`docs/results/{profile}/{name}` is not there (the run that was collected did not write it)"
        if name and collected(profile)
        else f"`docs/results/{profile}/` is empty"
    )
    return (
        f"*Not yet collected: {what}. After the run: "
        f"`python -m mu docs --collect {profile} --from <its MU_ROOT>`, then `python -m mu docs`.*"
    )


def read_csv(profile: str, name: str, **kwargs: Any) -> pd.DataFrame:
    return pd.read_csv(results_path(profile, name), **kwargs)


def num(v: Any, digits: int = 3, signed: bool = False) -> str:
    if v is None or pd.isna(v):
        return "—"
    return f"{float(v):+.{digits}f}" if signed else f"{float(v):.{digits}f}"


def p_text(v: Any) -> str:
    return "n.c." if v is None or pd.isna(v) else f"{float(v):.2g}"


SHORT_TESTS = {itemwise.WILCOXON: "Wilcoxon", itemwise.SIGN_FLIP: "sign-flip (targets × items)"}


def test_label(frame: pd.DataFrame, columns: tuple[str, ...] = ("test",)) -> str:
    """The paired test(s) a collected table's rows used, briefly, for a column's header
    (``mu.analysis.itemwise.tests_used``: a table collected before tests were named used the Wilcoxon test);
    '' where no row ran a test."""
    return " / ".join(SHORT_TESTS.get(u, u) for u in itemwise.tests_used(frame, columns))


def md_table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_ci(row: pd.Series) -> str:
    return f"{num(row['mean'])} [{num(row['ci_low'])}, {num(row['ci_high'])}]"


def duration(seconds: float) -> str:
    m, s = divmod(round(float(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")
