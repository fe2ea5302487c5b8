"""The study's tuning protocol: every knob the study chose, its value, what chose it and on which data.

A choice is one JSON record, ``reports/study/<profile>/protocol/<knob>.json``, written by whatever made
it (``mu.learn.tuning`` for the fine-tuning recipe, the study driver for declared values, the adapted family's
label-free selections); ``write`` renders them all as ``reports/study/<profile>/protocol.md``.

``chosen_by`` says what chose a value, and nothing may be chosen on test labels:

* ``declared``: fixed before any result (the seed's defaults, a documented budget), no measurement;
* ``dev``: the sources' own dev splits (source side: the target is never read);
* ``label-free``: a criterion on the target's unlabeled text (entropy, agreement with a teacher);
* ``tuning-targets``: dev labels of the declared tuning targets, which the main table excludes.

    mu.core.protocol.record("mini", "02.lr", 1e-3, chosen_by="dev", data="dev split of en-US, hi-IN, sw-KE",
                       evidence=[{"lr": 1e-3, "dev_accuracy": 0.61}, ...])
    mu.core.protocol.write("mini")  # -> reports/study/mini/protocol.md
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mu.core import paths, report

CHOSEN_BY = {
    "declared": "fixed before any result, no measurement",
    "dev": "the sources' own dev splits (the target is never read)",
    "label-free": "a label-free criterion on the target's unlabeled text",
    "tuning-targets": "dev labels of the declared tuning targets (excluded from the main table)",
}
_KNOB = re.compile(r"^[A-Za-z0-9_.\-]+$")


def protocol_dir(profile: str) -> Path:
    return paths.reports_dir("study", profile, "protocol")


def record(
    profile: str,
    knob: str,
    value: Any,
    *,
    chosen_by: str,
    data: str,
    evidence: Sequence[Mapping[str, Any]] = (),
    note: str = "",
    grid: Sequence[Any] | None = None,
) -> Path:
    """Write (atomically, replacing an earlier choice of the same knob) the record of one choice.
    ``chosen_by`` must be one of ``CHOSEN_BY``: a choice made on test labels has no name here.
    ``grid``: the values a measured choice was made among (``protocol.md`` lists the choices at a grid's edge)."""
    if chosen_by not in CHOSEN_BY:
        raise ValueError(
            f"chosen_by={chosen_by!r} is not a protocol criterion; valid: {sorted(CHOSEN_BY)} "
            "(nothing is chosen on test labels)"
        )
    if not _KNOB.match(knob):
        raise ValueError(f"knob name {knob!r} must match {_KNOB.pattern} (e.g. '02.lr')")
    if not data.strip():
        raise ValueError(f"knob {knob!r}: say on which data it was chosen (data=...)")
    if grid is not None and value not in list(grid):
        raise ValueError(f"knob {knob!r}: the chosen value {value!r} is not in its grid {list(grid)}")
    return paths.write_json(
        protocol_dir(profile) / f"{knob}.json",
        {
            "knob": knob,
            "value": value,
            "chosen_by": chosen_by,
            "data": data,
            "note": note,
            **({"grid": list(grid)} if grid is not None else {}),
            "evidence": [dict(e) for e in evidence],
            "versions": report.versions(),
        },
    )


def edge(value: Any, grid: Sequence[Any] | None) -> str:
    """``"smallest"`` or ``"largest"`` when ``value`` is at that end of a numeric ``grid`` of at least two
    values, else ``""``: the best value may then lie beyond what was tried."""

    def real(v: Any) -> bool:  # numpy numbers too (a grid read from a frame), never a bool
        return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))

    values = sorted({float(v) for v in grid or () if real(v)})
    if len(values) < 2 or not real(value):
        return ""
    return "smallest" if float(value) == values[0] else "largest" if float(value) == values[-1] else ""


def load(profile: str) -> dict[str, dict[str, Any]]:
    """Every recorded choice of ``profile``, by knob name (sorted)."""
    folder = protocol_dir(profile)
    found = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rec = paths.read_json(path)
        if rec.get("chosen_by") not in CHOSEN_BY:
            raise ValueError(
                f"{path}: chosen_by={rec.get('chosen_by')!r} is not a protocol criterion ({sorted(CHOSEN_BY)})"
            )
        found[rec["knob"]] = rec
    return found


def value(profile: str, knob: str) -> Any:
    """The recorded value of ``knob``; a ``KeyError`` naming the recorded knobs when there is none."""
    records = load(profile)
    if knob not in records:
        raise KeyError(f"no protocol record for {knob!r} in {protocol_dir(profile)}; recorded: {sorted(records)}")
    return records[knob]["value"]


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown(profile: str) -> str:
    """protocol.md: one row per knob (value, chosen by, data, note), then each choice's evidence."""
    records = load(profile)
    lines = [
        f"# Tuning protocol — profile `{profile}`",
        "",
        "Every knob the study chose: its value, what chose it and on which data. "
        "No knob was chosen on test labels; test accuracy is only reported.",
        "",
        "| criterion | meaning |",
        "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in CHOSEN_BY.items()],
        "",
        "| knob | value | chosen by | data | note |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{k}` | {_cell(r['value'])} | `{r['chosen_by']}` | {_cell(r['data'])} | {_cell(r.get('note', ''))} |"
        for k, r in records.items()
    ]
    edges = {k: edge(r["value"], r.get("grid")) for k, r in records.items()}
    if any(edges.values()):
        lines += [
            "",
            "## Choices at a grid's edge",
            "",
            "Each of these values is the smallest or largest its grid held: the best value may lie beyond the "
            "grid, so the choice bounds the knob rather than settling it.",
            "",
            "| knob | value | grid | edge |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{k}` | {_cell(records[k]['value'])} | {_cell(records[k]['grid'])} | {e} |"
            for k, e in edges.items()
            if e
        ]
    for k, r in records.items():
        if r.get("evidence"):
            cols = list(dict.fromkeys(c for e in r["evidence"] for c in e))
            lines += ["", f"## `{k}`: evidence", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_cell(_round(e.get(c, ""))) for c in cols) + " |" for e in r["evidence"]]
    return "\n".join(lines) + "\n"


def _round(v: Any) -> Any:
    """4 decimals (accuracies), but a small value keeps 4 significant digits: an lr of 1e-05 is not 0.0."""
    if not isinstance(v, float):
        return v
    return round(v, 4) if v == 0 or abs(v) >= 1e-3 else float(f"{v:.4g}")


def write(profile: str) -> Path:
    """Render ``reports/study/<profile>/protocol.md`` from the recorded choices (atomic)."""
    return paths.write_text(paths.reports_dir("study", profile, "protocol.md"), markdown(profile))
