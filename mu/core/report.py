"""Result records: every notebook ends with ``mu.core.report.save(...)``.

A record is one JSON file ``reports/<notebook>/<target>/<name>.json``::

    {"notebook": "03_merging", "target": "sw-KE", "name": "ties-similarity",
     "rows": [{"system": "merge/ties/similarity", "family": "merge",
               "accuracy": 0.61, "macro_f1": 0.55, "n": 2974,
               "sources": {"fi-FI": 0.3, ...},
               "items": {"ids_sha256": "9f2c...", "correct": "0110..."}}, ...],
     "item_ids": {"9f2c...": ["1", "2", ...]},
     "results": {...free-form extras...},
     "params": {...the notebook's parameters...},
     "inputs": {"<what>": {"path": ..., "sha256": ...}},
     "warnings": [...mu.notes warnings issued in this process, e.g. fewer sources than asked...],
     "versions": {"python": ..., "torch": ..., ...},
     "created": "2026-11-24T10:00:00+00:00"}

``rows`` is what the aggregation (``mu.analysis.aggregate``, notebook 06) reads: one row per
evaluated system on that target. It never parses notebooks.

``items`` (optional) is a row's per-item correctness on the target's test split: MASSIVE's locales hold
translations of the same test items, so targets share one sample of items and the aggregation needs each
item's outcome, not only the accuracy, to account for it (``mu.analysis.inference``). A row builder gives
``items(ids, correct)`` (``{"ids": [...], "correct": "0110..."}``, one 0/1 character per item, in the
ids' order); ``save`` checks it against the row's ``accuracy`` and ``n`` and stores the ids once per record
under ``item_ids``, keyed by their sha256 (every system of one target shares them), so a row keeps only
``ids_sha256`` and the 0/1 string. ``row_items`` reads them back. Rows without items (older records) stay valid.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mu.core import cache, notes, paths

PACKAGES = (
    "mu",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "mergekit",
    "lang2vec",
    "numpy",
    "pandas",
    "scipy",
    "papermill",
)

ROW_KEYS = ("system", "family", "accuracy")
# The accuracy a row reports is the mean of its items' 0/1 string, up to float rounding.
_ITEMS_ATOL = 1e-9
FAMILIES = ("native", "zero-shot", "merge", "ensemble", "iterative", "joint", "adapted")


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of one file, memoised on disk (``cache/sha256/``) by absolute path, size and
    modification time: an unchanged 1 GB checkpoint is read once, not at every merge or evaluation."""
    p = Path(path).resolve()
    st = p.stat()
    key = hashlib.sha256(f"{p}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    memo = paths.cache_dir("sha256", key[:2], key)
    hit = cache.read(memo, _read_digest, "sha256 memo")
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    paths.write_text(memo, digest)
    return digest


def _read_digest(memo: Path) -> str:
    digest = memo.read_text(encoding="utf-8").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"not a sha256 hex digest: {digest[:80]!r}")
    return digest


def sha256(path: str | os.PathLike) -> str:
    """Content hash of a file, or of a directory (its files' relative paths and hashes, sorted)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    if not files:
        raise FileNotFoundError(f"cannot hash {p}: no such file or empty directory")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(p)}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def digest(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys; non-JSON values by ``str``): the fingerprint of
    parameters, weights and input descriptions."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def describe_input(path: str | os.PathLike) -> dict[str, str]:
    return {"path": str(path), "sha256": sha256(path)}


def ids_sha256(ids: Iterable[Any]) -> str:
    """sha256 of a list of item ids (as strings, in order): the key of a record's ``item_ids``."""
    return hashlib.sha256("\n".join(str(i) for i in ids).encode()).hexdigest()


def items(ids: Iterable[Any], correct: Iterable[Any]) -> dict[str, Any]:
    """A row's per-item correctness in its compact form: ``{"ids": [str], "correct": "0110..."}``
    (``correct``: truthy = right, one per id, in the ids' order)."""
    ids = [str(i) for i in ids]
    bits = "".join("1" if c else "0" for c in correct)
    if len(ids) != len(bits) or not ids:
        raise ValueError(f"items: need one correctness per item id (>0), got {len(ids)} ids and {len(bits)} values")
    if len(set(ids)) != len(ids):
        raise ValueError("items: duplicate item ids")
    return {"ids": ids, "correct": bits}


def check_items(row: Mapping[str, Any], ids: list[str]) -> None:
    """A row's items agree with it: a 0/1 string as long as ``ids``, as many as ``n``, whose mean is ``accuracy``."""
    where = f"result row {row.get('system')!r}"
    bits = row["items"].get("correct")
    if not isinstance(bits, str) or not bits or set(bits) - {"0", "1"}:
        raise ValueError(f"{where}: items.correct must be a non-empty string of 0/1 characters")
    if len(bits) != len(ids) or len(set(ids)) != len(ids):
        raise ValueError(f"{where}: {len(bits)} correctness values for {len(ids)} item ids (distinct ids needed)")
    if row.get("n") is not None and int(row["n"]) != len(bits):
        raise ValueError(f"{where}: n={row['n']} but {len(bits)} items")
    mean = bits.count("1") / len(bits)
    if abs(mean - float(row["accuracy"])) > _ITEMS_ATOL:
        raise ValueError(f"{where}: accuracy {row['accuracy']} is not the mean of its items ({mean})")


def row_items(row: Mapping[str, Any], item_ids: Mapping[str, list[str]] | None) -> tuple[list[str], str] | None:
    """(item ids, 0/1 string) of a stored row (``item_ids``: its record's), or None when the row has none;
    a row whose ids are missing or do not hash to their key is an error (a record edited by hand)."""
    stored = row.get("items")
    if not isinstance(stored, Mapping):
        return None
    key = stored.get("ids_sha256")
    ids = (item_ids or {}).get(key) if key else stored.get("ids")  # "ids": a row not yet saved
    if ids is None or (key and ids_sha256(ids) != key):
        raise ValueError(f"result row {row.get('system')!r}: its item ids are missing or do not match {key}")
    check_items(row, list(ids))
    return list(ids), stored["correct"]


def _store_items(row: dict[str, Any], table: dict[str, list[str]]) -> None:
    """Check a row's items and move its ids to the record's ``table`` (one copy per distinct id list)."""
    given = row["items"]
    if not isinstance(given, Mapping) or "correct" not in given:
        raise ValueError(f"result row {row.get('system')!r}: items must be mu.core.report.items(ids, correct)")
    if "ids" in given:
        ids = [str(i) for i in given["ids"]]
        key = ids_sha256(ids)
        table.setdefault(key, ids)
    else:  # already stored (a row copied from another record): its ids must come along
        key = given.get("ids_sha256")
        if key not in table:
            raise ValueError(f"result row {row.get('system')!r}: items refer to ids {key} this record does not hold")
    check_items(row, table[key])
    row["items"] = {"ids_sha256": key, "correct": given["correct"]}


def record_path(notebook: str, target: str, name: str) -> Path:
    return paths.reports_dir(notebook, target, f"{name}.json")


def save(
    notebook: str,
    target: str,
    name: str,
    *,
    rows: list[Mapping[str, Any]] | None = None,
    results: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    item_ids: Mapping[str, list[str]] | None = None,
) -> Path:
    """Write one result record atomically and return its path. Rows' ``items`` are checked and their ids
    stored once (``item_ids``: ids of rows copied from another record, by sha256)."""
    rows = [dict(r) for r in (rows or [])]
    table = {k: [str(i) for i in v] for k, v in (item_ids or {}).items()}
    for r in rows:
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"result row {r} lacks {missing}; every row needs {list(ROW_KEYS)}")
        if r["family"] not in FAMILIES:
            raise ValueError(f"unknown row family {r['family']!r}; valid: {list(FAMILIES)}")
        r.setdefault("target", target)
        if r.get("items") is None or (isinstance(r["items"], float) and r["items"] != r["items"]):
            r.pop("items", None)  # none, or NaN: a row of a frame where other rows have items
        else:
            _store_items(r, table)
    used = {r["items"]["ids_sha256"] for r in rows if "items" in r}
    record = {
        "notebook": notebook,
        "target": target,
        "name": name,
        "rows": rows,
        **({"item_ids": {k: table[k] for k in sorted(used)}} if used else {}),
        "results": dict(results or {}),
        "params": dict(params or {}),
        "inputs": dict(inputs or {}),
        "warnings": notes.noted(),
        "versions": versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return paths.write_json(record_path(notebook, target, name), record)
