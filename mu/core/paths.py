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
import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[2]  # the folder that holds the package (a checkout, or site-packages)


def root() -> Path:
    env = os.environ.get("MU_ROOT")
    if env:
        return Path(env).resolve()
    if (CHECKOUT / "pyproject.toml").exists():
        return CHECKOUT
    return Path.cwd().resolve()


def check_root() -> Path:
    """The project root, created if missing; a ``ValueError`` naming ``MU_ROOT`` when it is not a
    folder this process can create and write (checked where a run enters: the command line, ``mu.batch.runner.run``)."""
    where = root()
    name = f"MU_ROOT={os.environ['MU_ROOT']!r}" if os.environ.get("MU_ROOT") else f"the project root {where}"
    if where.exists() and not where.is_dir():
        raise ValueError(f"{name} is not a directory; point MU_ROOT at a folder (it is created if missing)")
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{name} cannot be created: {e.strerror or e}") from None
    if not os.access(where, os.W_OK | os.X_OK):
        raise ValueError(f"{name} is not writable by this user")
    return where


def reports_dir(*parts: str) -> Path:
    return root().joinpath("reports", *parts)


def models_dir(*parts: str) -> Path:
    return root().joinpath("models", *parts)


def cache_dir(*parts: str) -> Path:
    return root().joinpath("cache", *parts)


def shared_cache_dir(*parts: str) -> Path:
    """A cache of pure functions of pinned packages' data (URIEL vectors), shared by every ``MU_ROOT`` of this
    user: ``$MU_SHARED_CACHE``, else ``$XDG_CACHE_HOME/mu``, else ``~/.cache/mu``."""
    env = os.environ.get("MU_SHARED_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mu"
    return base.joinpath(*parts)


def resolve(path: str | os.PathLike) -> Path:
    """A user-given path: absolute as is, relative to the project root otherwise."""
    p = Path(path)
    return p if p.is_absolute() else root() / p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Works for files and directories (the caller creates whichever it wants at the
    yielded path). On error the temporary is removed and ``path`` is untouched. The
    temporary's name records its owner (host, pid), so the next write to ``path`` removes
    those a killed run left (``remove_stale_temporaries``), never those of a live one.
    What is renamed into place has the modes of the umask (``follow_umask``), whatever
    wrote it; a write that fails for want of room or rights (disk full, file-size limit,
    read-only) is a ``WriteError`` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_OWNER}-{os.getpid()}-", suffix=".tmp", dir=path.parent))
    except Exception as e:
        _raise_write_error(e, path)
        raise
    target = tmp / ("out" + suffix)
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"atomic_path: nothing was written to {target} for {path}")
        follow_umask(target)
        if path.is_dir() and not path.is_symlink():
            old = tmp.with_name(tmp.name[: -len(".tmp")] + "-old.tmp")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    except Exception as e:
        _raise_write_error(e, path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class WriteError(OSError):
    """Writing an output failed for want of room or rights; the message names the output."""


# Why a write fails on a full disk, a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored), a quota, a
# read-only or failing disk, or missing rights.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM})


def _raise_write_error(e: Exception, path: Path) -> None:
    """Raise a ``WriteError`` naming ``path`` if ``e`` is a failed write (an OSError with one of
    ``WRITE_ERRNOS``, or what Rust writers raise for one: safetensors' ``SafetensorError`` and tokenizers'
    plain ``Exception`` carry "os error N" in their text); return otherwise (other errors are the caller's)."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None and (type(e) is Exception or type(e).__name__ == "SafetensorError"):
        found = re.search(r"os error (\d+)", str(e))
        code = int(found[1]) if found else None
    if code not in WRITE_ERRNOS:
        return
    cause = e.__cause__ if isinstance(e, WriteError) and e.__cause__ is not None else e  # a nested write's
    raise WriteError(code, f"cannot write {path}: {os.strerror(code)} ({type(cause).__name__}: {cause})") from cause


def umask() -> int:
    """The process's umask (Linux: read from /proc, so it is never changed, not even briefly)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a folder: with everything in it) the modes ``open`` and ``mkdir`` give under the
    umask (022: files 0644, folders 0755; executables keep their x bits). Writers that go through their
    own temporaries do not: ``tempfile.mkdtemp`` makes 0700, safetensors writes 0600, which another user of
    a shared ``MU_ROOT`` cannot read."""
    mask = umask()
    path = Path(path)
    for p in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else ())]:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        full = 0o777 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0o666
        if stat.S_IMODE(st.st_mode) != full & ~mask:
            os.chmod(p, full & ~mask)


_OWNER = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0]) or "host"
# A temporary whose name carries no owner (written before owners were recorded) is stale after this.
STALE_UNOWNED_S = 3600.0


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries ``atomic_path`` left beside ``path`` when a run writing it was killed.

    Only stale ones: made on this host by a process that is gone or a zombie (or whose pid now belongs
    to a process started after the temporary was made); one of another host is left alone (its
    owner cannot be checked), one without an owner in its name only after ``STALE_UNOWNED_S``.
    Returns what was removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefix = f".{path.name}."
    owned = re.compile(re.escape(prefix) + r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-.*\.tmp")
    removed = []
    for entry in path.parent.iterdir():
        if not entry.name.startswith(prefix) or not (entry.name.endswith(".tmp") or ".old-" in entry.name):
            continue
        try:
            made = entry.lstat().st_mtime
        except FileNotFoundError:
            continue
        m = owned.fullmatch(entry.name)
        if m is None:
            stale = time.time() - made > STALE_UNOWNED_S
        else:
            stale = m["host"] == _OWNER and not _alive(int(m["pid"]), made)
        if stale:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _alive(pid: int, since: float) -> bool:
    """True if process ``pid`` runs and was started before ``since`` (so it may own a file made then).

    A zombie is dead: a writer killed with its parent (a batch killed with ``kill -9``) stays a zombie
    until whoever adopted it reaps it, which may be long after the rerun that should remove its
    temporaries (a container's first process that never reaps, a slow subreaper).
    """
    import psutil

    try:
        process = psutil.Process(pid)
        return process.create_time() <= since + 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:  # cannot tell: keep it
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False


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


def source_dir(path: str | os.PathLike) -> Path:
    """Notebooks and params are code, not outputs: a relative path resolves against the
    checkout that holds ``mu`` (else the current directory), never against ``MU_ROOT``."""
    p = Path(path)
    if p.is_absolute():
        return p
    return (CHECKOUT if (CHECKOUT / "pyproject.toml").exists() else Path.cwd()) / p
