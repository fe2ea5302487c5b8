"""Cache entries are caches: a corrupt or truncated entry is named in a warning, deleted, and
reported as absent, so the caller recomputes it. Never an exception from inside a reader.

    hit = mu.core.cache.read(path, reader)   # reader(path) -> value, raising on a bad entry
    if hit is None:
        value = compute(); write(path, value)
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mu.core import notes

T = TypeVar("T")
# What a damaged file makes a reader raise (truncated zip/npz, bad bytes, bad JSON, a missing array,
# a short read). Any other exception is a bug in the reader, not a bad entry: it propagates.
CORRUPT = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def read(path: str | os.PathLike, reader: Callable[[Path], T], what: str = "cache entry") -> T | None:
    """``reader(path)``; None when the file is absent, or when ``reader`` raises one of ``CORRUPT`` (the
    entry is then damaged: a warning names the file and the error, and the file is deleted)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return reader(path)
    except CORRUPT as e:
        notes.warn(f"corrupt {what} {path} ({type(e).__name__}: {e}); deleted, it will be recomputed", stacklevel=2)
        path.unlink(missing_ok=True)
        return None


_MEMO: dict[tuple, object] = {}


def memo(key: tuple, compute: Callable[[], T], size: int = 16) -> T:
    """``compute()`` once per process per ``key`` (e.g. a content digest: what parses a tokenizer the
    merges of one target share); the oldest of ``size`` entries goes first. The value is shared: never mutate it."""
    if key not in _MEMO:
        if len(_MEMO) >= size:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = compute()
    return _MEMO[key]  # type: ignore[return-value]
