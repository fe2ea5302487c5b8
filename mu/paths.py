"""Where things live on disk, and how they are written (atomically).

Everything the package writes goes under one project root:

    <root>/reports/<notebook>/<target>/...   results JSON, executed notebooks, figures
    <root>/models/<profile>/...              trained / merged models
    <root>/cache/...                         logits cache, similarity matrices, toy data

The root is ``$MU_ROOT`` when set, else the repository that holds this package
(editable install), else the current directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def root() -> Path:
    env = os.environ.get("MU_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd().resolve()


def reports_dir(*parts: str) -> Path:
    return root().joinpath("reports", *parts)


def models_dir(*parts: str) -> Path:
    return root().joinpath("models", *parts)


def cache_dir(*parts: str) -> Path:
    return root().joinpath("cache", *parts)


def resolve(path: str | os.PathLike) -> Path:
    """A user-given path: absolute as is, relative to the project root otherwise."""
    p = Path(path)
    return p if p.is_absolute() else root() / p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Works for files and directories (the caller creates whichever it wants at the
    yielded path). On error the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / ("out" + suffix)
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"atomic_path: nothing was written to {target} for {path}")
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
