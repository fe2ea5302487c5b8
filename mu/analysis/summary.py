"""Notebook 06's summary: the aggregated tables (``mu.analysis.aggregate.aggregate``) as Markdown
(per-target table, means, tests, sources, notes; ``—`` for a missing value), written as
summary.md and CSVs under ``summary_dir(profile)``, and as JSON-safe ``results`` for the record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mu.analysis import families
from mu.analysis.aggregate import column_order
from mu.analysis.families import BEST_SOURCE, BEST_ZERO_SHOT
from mu.core import paths

MISSING = "—"


def summary_dir(profile: str) -> Path:
    return paths.reports_dir("06_aggregation", profile)


def _cell(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return MISSING
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(frame: pd.DataFrame, digits: int = 3, index: bool = True) -> str:
    """A pipe table; NaN / None shown as ``—`` (missing)."""
    frame = frame.reset_index() if index else frame
    head = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return "\n".join(lines)


def sources_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per target: each merge's sources with weights, the best source and best zero-shot model."""
    out = []
    for t, mine in rows.groupby("target"):
        by = mine.set_index("system")
        entry = {"target": t}
        for system in column_order(s for s in by.index if s.startswith("merge/")):
            srcs = by.at[system, "sources"]
            if isinstance(srcs, dict):
                entry[system] = ", ".join(f"{k} {v:.2f}" for k, v in srcs.items())
        for system in (BEST_SOURCE, BEST_ZERO_SHOT):
            if system in by.index and isinstance(by.at[system, "sources"], dict):
                entry[system] = next(iter(by.at[system, "sources"]))
        out.append(entry)
    return pd.DataFrame(out).set_index("target")


# The tests table as summary.md shows it: effect sizes first, the method last.
TEST_SHOWN = ["system", "baseline", "n", "n_items", "mean_diff", "ci", "wins", "ties", "losses"]
TEST_SHOWN += ["items_favouring", "targets_favouring", "p_value", "p_holm", "test", "note"]


def methods_text(summary: Mapping[str, Any]) -> str:
    """Which method produced the intervals and tests, from the ``interval`` / ``test`` columns."""
    used_i = set(summary["means"]["interval"].dropna()) - {""}
    used_t = set(summary["tests"]["test"].dropna()) - {""}
    text = (
        "The targets' test splits hold translations of the same items, so targets are not independent "
        "samples. Where rows carry per-item results, a mean's 95% interval is the two-way bootstrap (targets "
        "and items resampled independently, mu.analysis.inference) and a paired test the two-sided sign-flip "
        "test with target and item clusters flipped independently, reported with the mean difference, its "
        "two-way interval and the shares of items and of targets favouring the system (`items_favouring`, "
        "`targets_favouring`: among those not tied). Rows without per-item results (older records) fall back "
        "to the bootstrap over targets and the Wilcoxon signed-rank test over targets, which ignore the sampling "
        "of items (too narrow). The `interval` and `test` columns name each row's method; `p_holm` is "
        "Holm-adjusted over every system tested against the same baseline."
    )
    if used_i or used_t:
        text += " Used here: intervals " + (", ".join(sorted(used_i)) or MISSING)
        text += "; tests " + (", ".join(sorted(used_t)) or MISSING) + "."
    return text


def summary_markdown(summary: Mapping[str, Any], profile: str, sections: Mapping[str, str] | None = None) -> str:
    """The aggregated report as Markdown: per-target table, means, tests, sources, ``sections``
    (``{title: markdown}``, e.g. ``mu.analysis.typology.markdown``), notes."""
    rows, table = summary["rows"], summary["table"]
    m = summary["means"].assign(
        ci=[f"[{_cell(a)}, {_cell(b)}]" for a, b in zip(summary["means"]["ci_low"], summary["means"]["ci_high"])],
        n_items=[_cell(int(v)) if np.isfinite(v) else MISSING for v in summary["means"]["n_items"]],
        sees=[families.sees(s) for s in summary["means"]["system"]],
        needs=[families.needs(s) for s in summary["means"]["system"]],
    )
    t = summary["tests"]
    tests = t.assign(
        ci=[f"[{_cell(a)}, {_cell(b)}]" for a, b in zip(t["ci_low"], t["ci_high"])],
        **{c: [f"{p:.4g}" if np.isfinite(p) else MISSING for p in t[c]] for c in ("p_value", "p_holm")},
    )[TEST_SHOWN]
    src = sources_table(rows)
    parts = [
        f"# Aggregated results — profile `{profile}`",
        "",
        f"{len(table)} targets. Accuracy on each target's test split; `{MISSING}` = missing "
        "(no result; never filled in). native, best source (best single model among the "
        "URIEL-similarity merge's sources), best zero-shot (best single non-target model) and "
        "URIEL top-1 (the source URIEL ranks first) come from the N×N matrix unless a record "
        "reports them. Best source and best zero-shot are *selected with the target's test "
        "labels* (the seed's baselines: upper bounds on choosing one source); URIEL top-1 is "
        "the single-source choice made without target data. " + methods_text(summary),
        "",
        "## Accuracy per target",
        "",
        markdown_table(table.rename_axis("target")),
        "",
        "## Mean over targets (95% interval; `interval` names its method)",
        "",
        markdown_table(m[["system", "n", "n_items", "mean", "ci", "interval", "sees", "needs"]], index=False),
        "",
        "## What each family sees of the target",
        "",
        markdown_table(families.table(table.columns), index=False),
        "",
        "## Paired tests (two-sided; `test` names the method of each row)",
        "",
        markdown_table(tests, index=False),
        "",
        "## Sources (weights) and the single models behind the baselines",
        "",
        markdown_table(src),
        "",
    ]
    tuning = summary.get("tuning")
    if tuning is not None and len(tuning):
        mean = tuning.mean().to_frame("mean over them").T
        parts += [
            "## Tuning targets (reported apart)",
            "",
            f"{len(tuning)} targets whose dev labels target-side "
            "settings may have used (protocol criterion `tuning-targets`): not in the tables, means or tests "
            "above.",
            "",
            markdown_table(pd.concat([tuning, mean]).rename_axis("target")),
            "",
        ]
    for title, body in (sections or {}).items():
        parts += [f"## {title}", "", body, ""]
    if summary["notes"]:
        parts += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    return "\n".join(parts)


def write_summary(
    summary: Mapping[str, Any], profile: str, sections: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """Write summary.csv (per-target table), rows/means/tests CSVs and summary.md (with ``sections``) atomically."""
    out = summary_dir(profile)
    rows = summary["rows"].assign(
        sources=[json.dumps(s) if isinstance(s, dict) else None for s in summary["rows"]["sources"]]
    )
    if "items" in rows.columns:  # the per-item results stay in the records; here only how many there are
        rows = rows.assign(items=[len(v[1]) if isinstance(v, tuple) else None for v in rows["items"]])
    written = {
        "summary.csv": paths.write_text(out / "summary.csv", summary["table"].rename_axis("target").to_csv()),
        "rows.csv": paths.write_text(out / "rows.csv", rows.to_csv(index=False)),
        "means.csv": paths.write_text(out / "means.csv", summary["means"].to_csv(index=False)),
        "tests.csv": paths.write_text(out / "tests.csv", summary["tests"].to_csv(index=False)),
        "tuning.csv": paths.write_text(out / "tuning.csv", summary["tuning"].rename_axis("target").to_csv()),
        "summary.md": paths.write_text(out / "summary.md", summary_markdown(summary, profile, sections)),
    }
    return written


def summary_results(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary as JSON-safe ``results`` for ``save`` (NaN -> None)."""

    def records(frame: pd.DataFrame) -> list[dict]:
        return json.loads(frame.to_json(orient="records"))

    return {
        "table": json.loads(summary["table"].to_json(orient="index")),
        "means": records(summary["means"]),
        "tests": records(summary["tests"]),
        "notes": list(summary["notes"]),
        "tuning_targets": json.loads(summary["tuning"].to_json(orient="index")),
        "families": records(families.table(summary["table"].columns)),
    }
