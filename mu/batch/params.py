"""Notebooks and their parameters: the ``parameters`` cell of each numbered notebook and the
``params/<stem>.yaml`` files the runner injects (``shared`` ∪ ``profiles[profile]``).

Notebooks and params are code, not outputs: relative paths resolve against the checkout,
never against ``MU_ROOT``. A notebook records what it ran with through
``mu.batch.params.current_params(stem, globals())``.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mu.core import paths

KERNEL = "python3"
INJECTED = ("profile", "target_lang")


def notebook_parameters(path: str | os.PathLike) -> dict[str, Any]:
    """The ``parameters`` cell of a notebook as {name: default value} (literals only).

    Read from the notebook's JSON with ``ast`` (as ``papermill.inspect_notebook`` reads it, which
    tests/test_checks.py compares), without importing nbformat: its schema validator takes
    seconds to import, and the runner reads every notebook before any kernel starts."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the notebook: {exc}") from exc
    spec = nb.get("metadata", {}).get("kernelspec", {})
    if spec.get("name") != KERNEL:
        raise ValueError(
            f"{path}: metadata.kernelspec must name the {KERNEL!r} kernel "
            f"(papermill needs it to read the parameters cell), got {spec or None}"
        )
    cells = [
        c
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    if not cells:
        return {}
    source = cells[0].get("source", "")
    out = {}
    for node in ast.parse(source if isinstance(source, str) else "".join(source)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            raise ValueError(
                f"{path}: the parameters cell holds only `name = literal` lines, got {ast.unparse(node)!r}"
            )
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(
                f"{path}: parameter {name} = {ast.unparse(value)} is not a flat literal (str/int/float/bool/list)"
            ) from exc
    return out


def current_params(
    stem: str, namespace: Mapping[str, Any], notebooks_dir: str | os.PathLike = "notebooks"
) -> dict[str, Any]:
    """The current values of a notebook's parameters, read from its namespace.

    A notebook records what it ran with as
    ``mu.core.report.save(..., params=mu.batch.params.current_params("03_merging", globals()))``:
    the names come from the notebook's ``parameters`` cell, the values are the
    ones in effect (defaults, or what papermill injected).
    """
    names = notebook_parameters(find_notebooks([stem], notebooks_dir)[0])
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ValueError(f"parameters {missing} of notebook {stem} are not defined in this namespace")
    return {n: namespace[n] for n in names}


def params_file(stem: str, params_dir: str | os.PathLike = "params") -> Path:
    return paths.source_dir(params_dir) / f"{stem}.yaml"


def read_params_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a params YAML ``{shared: {...}, profiles: {name: {...}}}`` and check its shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no params file {path}; every notebook needs params/<stem>.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or set(data) - {"shared", "profiles"}:
        raise ValueError(f"{path}: top-level keys must be 'shared' and 'profiles', got {list(data)}")
    shared = data.get("shared") or {}
    profiles = data.get("profiles") or {}
    if not isinstance(shared, dict) or not isinstance(profiles, dict):
        raise ValueError(f"{path}: 'shared' and 'profiles' must be mappings")
    for name, values in profiles.items():
        if not isinstance(values, dict | None):
            raise ValueError(f"{path}: profile {name!r} must be a mapping, got {values!r}")
    return {"shared": shared, "profiles": {k: v or {} for k, v in profiles.items()}}


def load_params(stem: str, profile: str, params_dir: str | os.PathLike = "params") -> dict[str, Any]:
    """shared ∪ profiles[profile] from ``params/<stem>.yaml``."""
    path = params_file(stem, params_dir)
    data = read_params_file(path)
    if profile not in data["profiles"]:
        raise ValueError(f"{path}: unknown profile {profile!r}; valid: {sorted(data['profiles'])}")
    return {**data["shared"], **data["profiles"][profile]}


def check_keys(where: str, keys: Iterable[str], parameters: Mapping[str, Any]) -> None:
    """Every key must be a notebook parameter (and not one the runner injects itself)."""
    keys = list(keys)
    injected = [k for k in keys if k in INJECTED]
    if injected:
        raise ValueError(f"{where}: {injected} are injected by the runner; remove them")
    unknown = [k for k in keys if k not in parameters]
    if unknown:
        raise ValueError(f"{where}: {unknown} are not parameters of the notebook; valid: {sorted(parameters)}")


def find_notebooks(names: Sequence[str], notebooks_dir: str | os.PathLike = "notebooks") -> list[Path]:
    """Notebooks by number prefix ("03") or stem ("03_merging"), sorted by number."""
    folder = paths.source_dir(notebooks_dir)
    available = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        raise ValueError(f"no notebooks given; valid: {[p.stem for p in available]}")
    found = []
    for name in names:
        stem = Path(name).stem if name.endswith(".ipynb") else name
        hits = [p for p in available if p.stem == stem or p.stem.split("_", 1)[0] == stem]
        if len(hits) != 1:
            raise ValueError(
                f"notebook {name!r} matches {[p.name for p in hits]} in {folder}; valid: {[p.stem for p in available]}"
            )
        found.append(hits[0])
    return sorted(set(found))


def all_notebooks(notebooks_dir: str | os.PathLike = "notebooks") -> list[str]:
    """Stems of every numbered notebook (``NN_name.ipynb``), in order."""
    folder = paths.source_dir(notebooks_dir)
    stems = [p.stem for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))]
    if not stems:
        raise ValueError(f"no numbered notebooks (NN_name.ipynb) in {folder}")
    return stems
