"""Result records: every notebook ends with ``mu.core.report.save(...)``.

A record is one JSON file ``reports/<notebook>/<target>/<name>.json``::

    {"notebook": "03_merging", "target": "sw-KE", "name": "ties-similarity",
     "rows": [{"system": "merge/ties/similarity", "family": "merge",
               "accuracy": 0.61, "macro_f1": 0.55, "n": 2974,
               "sources": {"fi-FI": 0.3, ...}}, ...],
     "results": {...free-form extras...},
     "params": {...the notebook's parameters...},
     "inputs": {"<what>": {"path": ..., "sha256": ...}},
     "warnings": [...mu.notes warnings issued in this process, e.g. fewer sources than asked...],
     "versions": {"python": ..., "torch": ..., ...},
     "created": "2026-11-24T10:00:00+00:00"}

``rows`` is what the aggregation (``mu.analysis.aggregate``, notebook 06) reads: one row per
evaluated system on that target. It never parses notebooks.
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
) -> Path:
    """Write one result record atomically and return its path."""
    rows = [dict(r) for r in (rows or [])]
    for r in rows:
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise ValueError(f"result row {r} lacks {missing}; every row needs {list(ROW_KEYS)}")
        if r["family"] not in FAMILIES:
            raise ValueError(f"unknown row family {r['family']!r}; valid: {list(FAMILIES)}")
        r.setdefault("target", target)
    record = {
        "notebook": notebook,
        "target": target,
        "name": name,
        "rows": rows,
        "results": dict(results or {}),
        "params": dict(params or {}),
        "inputs": dict(inputs or {}),
        "warnings": notes.noted(),
        "versions": versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return paths.write_json(record_path(notebook, target, name), record)
