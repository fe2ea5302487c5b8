"""Training checkpoints that hold tensors and plain data only, read without running any code.

    checkpoint.save(path, state)      # state: dicts / lists / tuples of tensors, str, int, float, bool, None
    state = checkpoint.load(path, {"step": int, "model": dict})   # None: start from scratch
    checkpoint.discard(path)          # the run finished

``save`` refuses anything else (an object would need pickle to come back), writes atomically and keeps
the checkpoint it replaces as ``previous(path)``. ``load`` reads with ``torch.load(weights_only=True)``, so
a planted pickle that would run code on loading is refused like a truncated or damaged file: a warning
names the file (``mu.core.cache.read``), which is deleted, and the previous checkpoint is tried, then nothing.
Optimizer and scheduler ``state_dict()`` s and ``torch.get_rng_state()`` are plain data already.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mu.core import cache, notes, paths

PLAIN = (str, int, float, bool, type(None))


def previous(path: str | os.PathLike) -> Path:
    """Where the checkpoint ``save`` replaced is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """TypeError naming the entry unless ``obj`` is tensors and plain data (dicts with str / int keys,
    lists, tuples, str, int, float, bool, None): what ``torch.load(weights_only=True)`` reads back.
    Exact types: a numpy float is a float subclass that would come back only through pickle."""
    if type(obj) is torch.Tensor or type(obj) in PLAIN:
        return
    if type(obj) in (list, tuple):
        for i, x in enumerate(obj):
            check_plain(x, f"{where}[{i}]")
        return
    if type(obj) in (dict, collections.OrderedDict):  # a state_dict() is an OrderedDict
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} ({type(k).__name__}) is not a str or int")
            check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where}: {type(obj).__name__} is neither a tensor nor plain data; a checkpoint holds only "
        "those (it is read back with torch.load(weights_only=True))"
    )


def save(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically, keeping the checkpoint it replaces as ``previous(path)``."""
    path = Path(path)
    check_plain(dict(state))
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    if path.is_file():  # killed right after this, ``load`` finds the previous one
        os.replace(path, previous(path))
    with paths.atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


# What torch.load raises on a damaged file or a refused pickle (UnpicklingError: "Weights only load failed").
UNREADABLE = (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile)


def read(path: Path, required: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """One checkpoint file, tensors and plain data only; ValueError when it is unreadable, a pickle
    ``weights_only`` refuses, or lacks an entry of ``required`` ({key: type})."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as e:
        raise ValueError(_reason(e)) from None
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a dict")
    for key, kind in required.items():
        if not isinstance(state.get(key), kind):
            raise ValueError(f"entry {key!r} is {type(state.get(key)).__name__}, expected {kind}")
    return state


def _reason(e: Exception) -> str:
    """One line on why ``torch.load`` failed (its own messages run to a dozen lines)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        why = text.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
        return f"a pickle refused by weights_only=True: loading it could run code ({why})"
    first = text.strip().split("\n")[0].split(". ")[0]
    return f"not a readable checkpoint of tensors and plain data ({type(e).__name__}: {first})"


def load(
    path: str | os.PathLike, required: Mapping[str, type | tuple[type, ...]] | None = None
) -> dict[str, Any] | None:
    """The newest good checkpoint: ``path``, else ``previous(path)``, else None (start from scratch).
    A bad one is named in a warning and deleted (so the next ``save`` never keeps it as the previous)."""
    path = Path(path)
    met_bad = False
    for candidate in (path, previous(path)):
        existed = candidate.is_file()
        state = cache.read(candidate, lambda p: read(p, required or {}), "checkpoint")
        if state is not None:
            if met_bad:
                notes.warn(f"resuming from the previous checkpoint {candidate}", stacklevel=2)
            return state
        met_bad = met_bad or existed
    if met_bad:
        notes.warn(f"no readable checkpoint left at {path}: training restarts from scratch", stacklevel=2)
    return None


def discard(path: str | os.PathLike) -> None:
    """Delete ``path`` and its previous checkpoint (a finished run needs neither)."""
    for p in (Path(path), previous(path)):
        p.unlink(missing_ok=True)
