"""Aggregation (notebook 06): every result record's rows + the N×N matrix -> per-target
tables with baselines, means with intervals and paired tests (``mu.analysis.summary`` writes them as
summary.md and CSVs).

Where rows carry per-item results (``mu.core.report.items``), intervals are two-way bootstraps over targets
and items and paired tests sign-flip tests with target and item clusters (``mu.analysis.itemwise``): the
targets share one sample of translated items, so a bootstrap or Wilcoxon over targets alone understates the
uncertainty. Rows without items (older records) fall back to those, and each table names its method.

Reads records written by ``mu.core.report.save``; never parses notebooks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mu.analysis import itemwise
from mu.analysis import stats as stats_
from mu.analysis.families import BEST_SOURCE, BEST_ZERO_SHOT, NATIVE, URIEL_TOP1
from mu.analysis.stats import bootstrap_ci, wilson_interval  # noqa: F401 (their home is mu.analysis.stats; callers use these names)
from mu.core import paths
from mu.core.report import ROW_KEYS, describe_input, row_items

AVERAGE_MERGE = "merge/linear/average"
# Column groups every summary shows; a group without any result gets this empty column.
PLACEHOLDERS = ("merge/*/similarity", "merge/*/average", "ensemble/*", "iterative/*")
SYSTEM_FAMILIES = ["merge", "ensemble", "iterative", "joint", "adapted"]  # a target with one of these is aggregated


def nxn_path(profile: str, split: str = "test") -> Path:
    """``reports/02_training/<profile>/evaluation_matrix.csv`` (notebook 02's N×N matrix on the test split: rows =
    source model, columns = target; reported, and the oracle baselines read it) or, ``split="dev"``,
    ``evaluation_matrix_dev.csv`` (what ``transfer`` weighting ranks sources by); torch-free, ``mu.learn.evaluate``
    uses this one."""
    return paths.reports_dir(
        "02_training", profile, "evaluation_matrix" + ("" if split == "test" else f"_{split}") + ".csv"
    )


def nxn_items_path(nxn_csv: str | os.PathLike) -> Path:
    """The per-item correctness of every N×N cell, beside the matrix (``evaluation_items.json`` for the test
    matrix, ``evaluation_items_dev.json`` for the dev one)."""
    csv = Path(nxn_csv)
    return csv.with_name(csv.stem.replace("evaluation_matrix", "evaluation_items") + ".json")


def load_records(profile: str, reports: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every result record ``reports/<notebook>/<target>/<name>.json`` of ``profile``.

    A record whose ``params.profile`` names another profile is left out; JSON files that
    are not records (no ``notebook``/``rows``) are not read as results. Each record gets
    its file path under ``"path"``.
    """
    base = paths.resolve(reports) if reports is not None else paths.reports_dir()
    records = []
    for path in sorted(base.glob("*/*/*.json")):
        rec = paths.read_json(path)
        if not (isinstance(rec, dict) and {"notebook", "target", "rows"} <= set(rec)):
            continue
        if (rec.get("params") or {}).get("profile", profile) != profile:
            continue
        records.append({**rec, "path": str(path)})
    return records


def read_nxn(nxn: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """The N×N transfer matrix (rows = source model locale, columns = target locale, floats) from a
    frame, a ``.csv`` path, or a profile name (``nxn_path(profile)``); the one reader of it."""
    if isinstance(nxn, pd.DataFrame):
        frame = nxn.astype(float)
    else:
        path = Path(nxn) if Path(nxn).suffix == ".csv" else nxn_path(str(nxn))
        if not path.is_file():
            raise FileNotFoundError(f"no N×N matrix at {path}; run notebook 02_training (mu.learn.evaluate.nxn) first")
        frame = pd.read_csv(path, index_col=0).astype(float)
    frame.index.name, frame.columns.name = "source", "target"
    return frame


def record_rows(records: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, list[str]]:
    """Long frame of every record row (one per target × system) and notes on duplicates.

    When the same (target, system) appears in several records the most recent wins and
    a note names the ones dropped. ``items``: (item ids, 0/1 string) of a row that has them, else None.
    """
    rows = []
    columns = ["target", "system", "family", "accuracy", "macro_f1", "n", "sources", "items", "origin", "created"]
    for rec in records:
        for r in rec["rows"]:
            missing = [k for k in ROW_KEYS if k not in r]
            if missing:
                raise ValueError(f"{rec['path']}: row {r} lacks {missing}")
            rows.append(
                {
                    "target": r.get("target", rec["target"]),
                    "system": r["system"],
                    "family": r["family"],
                    "accuracy": float(r["accuracy"]),
                    "macro_f1": r.get("macro_f1"),
                    "n": r.get("n"),
                    "sources": r.get("sources"),
                    "items": _items(r, rec),
                    "origin": rec["path"],
                    "created": rec.get("created", ""),
                }
            )
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.sort_values("created", kind="stable")
    dup = frame.duplicated(["target", "system"], keep="last")
    notes = [
        f"{r.target} / {r.system}: older result in {r.origin} superseded by a newer record"
        for r in frame[dup].itertuples()
    ]
    return frame[~dup].reset_index(drop=True), notes


def _items(row: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    found = row_items(row, record.get("item_ids"))
    return None if found is None else (tuple(found[0]), found[1])


def _best(column: pd.Series, among: Iterable[str]) -> tuple[float, str | None]:
    values = column.reindex(list(among)).dropna()
    if values.empty:
        return (np.nan, None)
    return (float(values.max()), str(values.idxmax()))


def baseline_rows(rows: pd.DataFrame, nxn: pd.DataFrame, targets: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Native, best zero-shot, best source and URIEL top-1 of each target, looked up in the N×N matrix.

    native = N×N[target, target]; best zero-shot = max of the target's column over every
    other source; best source = max over the sources of the target's URIEL-similarity
    merges (``merge/*/similarity``; the union of all its merges' sources, with a note, when
    there is none); URIEL top-1 = the source with the largest weight in a similarity merge.
    Best zero-shot and best source are chosen with the target's test labels (oracle
    selection, as in the seed); URIEL top-1 is not. A value the matrix lacks stays out
    (missing), with a note.
    """
    out, notes = [], []
    for t in targets:
        mine = rows[rows["target"] == t]
        sizes = {int(v) for v in mine["n"].dropna()}
        n = sizes.pop() if len(sizes) == 1 else None
        if t not in nxn.columns:
            notes.append(f"{t}: not a column of the N×N matrix; native / zero-shot baselines missing")
            continue
        col = nxn[t]
        found = []
        if t in nxn.index and np.isfinite(col[t]):
            found.append((NATIVE, "native", float(col[t]), {t: 1.0}))
        acc, src = _best(col, [s for s in nxn.index if s != t])
        if src is not None:
            found.append((BEST_ZERO_SHOT, "zero-shot", acc, {src: 1.0}))
        merges = mine[mine["family"] == "merge"]
        similarity = merges[merges["system"].str.endswith("/similarity")]
        if similarity.empty and not merges.empty:
            notes.append(f"{t}: no URIEL-similarity merge; best source is over the sources of all its merges")
        chosen = similarity if not similarity.empty else merges
        sources = sorted({s for m in chosen["sources"].dropna() for s in m})
        absent = [s for s in sources if s not in nxn.index]
        if absent:
            notes.append(f"{t}: merge sources {absent} are not rows of the N×N matrix; best source missing")
        elif sources:
            acc, src = _best(col, sources)
            if src is not None:
                found.append((BEST_SOURCE, "zero-shot", acc, {src: 1.0}))
        tops = {max(m, key=lambda k: (m[k], k)) for m in similarity["sources"].dropna() if m}
        if len(tops) == 1 and (top := tops.pop()) in nxn.index and np.isfinite(col[top]):
            found.append((URIEL_TOP1, "zero-shot", float(col[top]), {top: 1.0}))
        elif len(tops) > 1:
            notes.append(f"{t}: similarity merges disagree on the top URIEL source {sorted(tops)}; URIEL top-1 missing")
        for system, family, acc, srcs in found:
            out.append(
                {
                    "target": t,
                    "system": system,
                    "family": family,
                    "accuracy": acc,
                    "macro_f1": None,
                    "n": n,
                    "sources": srcs,
                    "origin": "N×N",
                    "created": "",
                }
            )
    return pd.DataFrame(out, columns=rows.columns), notes


def column_order(systems: Iterable[str]) -> list[str]:
    """native, merges (similarity, then average), best source, best zero-shot, ensembles, iterative."""

    def key(s: str) -> tuple:
        parts = s.split("/")
        if s == NATIVE:
            return (0, 0, s)
        if parts[0] == "merge":
            mode = parts[-1]
            return (1, {"similarity": 0, "*": 0, "average": 1}.get(mode, 2), parts[1], s)
        if s == BEST_SOURCE:
            return (2, 0, s)
        if s == BEST_ZERO_SHOT:
            return (2, 1, s)
        if s == URIEL_TOP1:
            return (2, 2, s)
        rank = {"zero-shot": 2, "ensemble": 3, "iterative": 4, "joint": 4, "adapted": 5}.get(parts[0], 6)
        return (rank, 3, s)

    return sorted(systems, key=key)


def per_target_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy table: one row per target, one column per system (NaN = missing).

    native, best source and best zero-shot are always columns; a group with no result
    at all (similarity merge, average merge, ensembles, iterative) gets one empty column
    named like ``iterative/*`` so its absence shows.
    """
    table = rows.pivot(index="target", columns="system", values="accuracy")
    systems = set(table.columns) | {NATIVE, BEST_SOURCE, BEST_ZERO_SHOT, URIEL_TOP1}
    for placeholder in PLACEHOLDERS:
        family, _, mode = placeholder.partition("/*")
        if not any(s.startswith(family + "/") and s.endswith(mode) for s in systems):
            systems.add(placeholder)
    table = table.reindex(columns=column_order(systems)).sort_index()
    table.columns.name = None
    return table


def means(
    table: pd.DataFrame, *, n_boot: int = 10000, seed: int = 42, items: Mapping[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """Mean accuracy over targets per system with a seeded 95% interval: the two-way bootstrap over targets
    and items when ``items`` (``mu.analysis.itemwise.matrices``) covers every target the system has, else
    the bootstrap over the per-target accuracies; ``interval`` names which, ``n_items`` the items."""
    out = []
    for system in table.columns:
        values = table[system].dropna()
        v = values.to_numpy()
        row = {"system": system, "n": len(v), "mean": float(v.mean()) if len(v) else np.nan}
        if itemwise.covers(items, [system], list(values.index)):
            ci = itemwise.interval(items[system], list(values.index), n_boot=n_boot, seed=seed)
            row.update(mean=ci.mean, ci_low=ci.low, ci_high=ci.high, n_items=items[system].shape[1])
            row["interval"] = itemwise.TWO_WAY
        else:
            lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
            row.update(ci_low=lo, ci_high=hi, n_items=np.nan, interval=itemwise.OVER_TARGETS if len(v) > 1 else "")
        out.append(row)
    return pd.DataFrame(out, columns=["system", "n", "mean", "ci_low", "ci_high", "n_items", "interval"])


def average_baseline(system: str, columns: Iterable[str], default: str = AVERAGE_MERGE) -> str:
    """The average merge a system is tested against: same merge method if present, else ``default``."""
    parts = system.split("/")
    if len(parts) == 3:
        same = f"merge/{parts[1]}/average"
        if same in set(columns):
            return same
    return default


TEST_COLUMNS = ["system", "baseline", "n", "n_items", "mean_diff", "ci_low", "ci_high", "wins", "ties", "losses"]
TEST_COLUMNS += ["items_favouring", "targets_favouring", "statistic", "p_value", "test", "note"]


def paired_tests(
    table: pd.DataFrame,
    *,
    min_pairs: int = 5,
    average_system: str = AVERAGE_MERGE,
    others: Sequence[str] = (),
    items: Mapping[str, pd.DataFrame] | None = None,
    n_boot: int = 2000,
    seed: int = 42,
) -> pd.DataFrame:
    """Two-sided paired test of each system against the average merge (``average_baseline``), the best
    zero-shot (oracle-selected) and the URIEL top-1 source (selected without target data), and each of
    ``others``, over the targets having both.

    Where ``items`` (``mu.analysis.itemwise.matrices``) holds both systems on every paired target: the
    sign-flip test with target and item clusters (``n_boot`` flips), the mean difference with its two-way
    bootstrap interval and the shares of items / targets favouring the system. Otherwise (records without
    items) the Wilcoxon signed-rank test over targets, with a bootstrap interval over targets. ``test``
    names the method of each row; wins/ties/losses count targets either way.

    With fewer than ``min_pairs`` paired targets (Wilcoxon: non-tied ones, which it drops) the p-value is
    left NaN and ``note`` says why. ``p_holm``: Holm-adjusted over every system tested against the same baseline.
    """
    out = []
    for system in table.columns:
        if table[system].isna().all():
            continue
        for baseline in dict.fromkeys(
            (average_baseline(system, table.columns, average_system), BEST_ZERO_SHOT, URIEL_TOP1, *others)
        ):
            if baseline != system:
                out.append(
                    itemwise.test_pair(
                        table, system, baseline, items=items, min_pairs=min_pairs, n_boot=n_boot, seed=seed
                    )
                )
    return stats_.holm_by(pd.DataFrame(out, columns=TEST_COLUMNS))


def collect(
    profile: str,
    *,
    nxn: str | os.PathLike | pd.DataFrame | None = None,
    reports: str | os.PathLike | None = None,
    tuning_targets: Sequence[str] = (),
    nxn_items: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The long frame of every result row of ``profile`` plus the baselines taken from the N×N matrix, with
    95% Wilson intervals and per-item results where known (``items``): ``{"rows", "tuning_rows" (the
    ``tuning_targets``' rows, apart), "notes", "inputs", "nxn"}``. ``nxn_items``: the matrix's per-item file
    (``mu.analysis.itemwise.read_nxn_items``), read beside ``nxn`` when that is a path."""
    records = load_records(profile, reports)
    rows, notes = record_rows(records)
    unmarked = [r["path"] for r in records if "profile" not in (r.get("params") or {})]
    if unmarked:
        notes.append(f"{len(unmarked)} records carry no params.profile and were counted as {profile!r}: {unmarked}")
    targets = sorted(set(rows.loc[rows["family"].isin(SYSTEM_FAMILIES), "target"]))
    if not targets:
        where = paths.resolve(reports) if reports is not None else paths.reports_dir()
        raise ValueError(
            f"no merge, ensemble or iterative results for profile {profile!r} under {where}; run notebooks 03-05 first"
        )
    if nxn is None:
        nxn = nxn_path(profile)
    matrix = read_nxn(nxn)
    inputs = {} if isinstance(nxn, pd.DataFrame) else {"nxn": describe_input(nxn)}
    if nxn_items is None and not isinstance(nxn, pd.DataFrame):
        nxn_items = itemwise.read_nxn_items(nxn_items_path(paths.resolve(nxn)))
    rows = rows[rows["target"].isin(targets)]
    derived, more = baseline_rows(rows, matrix, targets)
    derived, stale = itemwise.attach_nxn(derived, nxn_items)
    notes += more + stale
    have = set(zip(rows["target"], rows["system"]))
    derived = derived[[(t, s) not in have for t, s in zip(derived["target"], derived["system"])]]
    rows = pd.concat([rows, derived], ignore_index=True) if len(derived) else rows
    ci = [wilson_interval(a, n) for a, n in zip(rows["accuracy"], rows["n"])]
    rows = rows.assign(ci_low=[c[0] for c in ci], ci_high=[c[1] for c in ci])
    rows = rows.sort_values(["target", "system"]).reset_index(drop=True)
    apart = rows["target"].isin(list(tuning_targets))
    if apart.all():
        raise ValueError(f"every target {targets} is a tuning target: nothing left for the main table")
    if apart.any():
        notes.append(
            f"tuning targets {sorted(set(rows.loc[apart, 'target']))} are left out of the tables and "
            "tests above (their dev labels may have chosen target-side settings); reported apart"
        )
    used = sorted({o for o in rows.loc[~apart, "origin"] if o != "N×N"})
    root = paths.root()
    inputs.update(
        {Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else p: describe_input(p) for p in used}
    )
    return {
        "rows": rows[~apart].reset_index(drop=True),
        "tuning_rows": rows[apart],
        "notes": notes,
        "inputs": inputs,
        "nxn": matrix,
    }


def aggregate(
    profile: str,
    *,
    nxn: str | os.PathLike | pd.DataFrame | None = None,
    reports: str | os.PathLike | None = None,
    n_boot: int = 10000,
    seed: int = 42,
    min_pairs: int = 5,
    average_system: str = AVERAGE_MERGE,
    tuning_targets: Sequence[str] = (),
    nxn_items: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything notebook 06 reports, as plain frames.

    Records come from ``reports`` (default ``reports/``), the N×N matrix from ``nxn``
    (default ``nxn_path(profile)``; its per-item file beside it, or ``nxn_items``). Targets are those with at
    least one merge, ensemble or iterative result. Returns
    ``{"rows": long frame (with 95% Wilson intervals where n is known), "table": per-target
    accuracy, "means": mean with its 95% interval, "tests": paired tests, "items": {system: targets × items
    frame} of the rows with per-item results, "notes": [str], "inputs": {name: {path, sha256}}, "nxn": the
    N×N matrix, "tuning": per-target table of the ``tuning_targets``}``. Means and tests are item-aware where
    the rows carry items (see the module's docstring). Tuning targets (whose dev labels target-side
    selections may use) are left out of rows, table, means and tests, and reported apart in ``tuning``.
    """
    got = collect(profile, nxn=nxn, reports=reports, tuning_targets=tuning_targets, nxn_items=nxn_items)
    rows, tuning = got["rows"], got["tuning_rows"]
    table = per_target_table(rows)
    items = itemwise.matrices(rows)
    tests = paired_tests(
        table, min_pairs=min_pairs, average_system=average_system, items=items, n_boot=n_boot, seed=seed
    )
    return {
        "rows": rows,
        "table": table,
        "means": means(table, n_boot=n_boot, seed=seed, items=items),
        "tests": tests,
        "items": items,
        "notes": got["notes"],
        "inputs": got["inputs"],
        "nxn": got["nxn"],
        "tuning": per_target_table(tuning).reindex(columns=table.columns) if len(tuning) else table.iloc[:0],
    }
