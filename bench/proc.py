"""Run one measured command in its own process: wall time and that process's peak RSS.

Peak RSS is the command's own ``ru_maxrss`` from ``os.wait4``. Linux carries a
process's high-water mark across ``exec`` into the new program, so a child forked
straight from this (large) process would report at least this process's RSS; the
command is therefore started by a tiny launcher (``python -S``, ~10 MB) that
spawns it, waits for it and writes its rusage. A watchdog samples the RSS of the
launcher and command and kills both (one process group) when it passes
``max_rss_bytes`` (so an oversized merge cannot push the shared machine into the
OOM killer) or runs past ``timeout_s``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from mu import paths

LAUNCHER = (
    "import json, os, sys\n"
    "pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1] + '.tmp', 'w') as f:\n"
    "    json.dump({'maxrss_kb': usage.ru_maxrss}, f)\n"
    "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _watch(
    proc: subprocess.Popen,
    done: threading.Event,
    lock: threading.Lock,
    max_rss_bytes: int | None,
    timeout_s: float,
    started: float,
    verdict: dict[str, Any],
) -> None:
    try:
        handle = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while not done.wait(0.1):
        try:
            rss = sum(p.memory_info().rss for p in [handle, *handle.children(recursive=True)])
        except psutil.NoSuchProcess:
            return
        verdict["sampled_peak_rss_mb"] = max(verdict.get("sampled_peak_rss_mb", 0.0), rss / 2**20)
        reason = None
        if max_rss_bytes is not None and rss > max_rss_bytes:
            reason = f"killed: RSS {rss / 2**30:.1f} GiB passed the limit {max_rss_bytes / 2**30:.1f} GiB"
        elif time.perf_counter() - started > timeout_s:
            reason = f"killed: ran past the {timeout_s:.0f} s timeout"
        if reason:
            with lock:
                if not done.is_set():
                    verdict["killed"] = reason
                    os.killpg(proc.pid, signal.SIGKILL)
            return


def run(
    cmd: Sequence[str],
    *,
    log: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    max_rss_bytes: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run ``cmd`` (stdout and stderr to ``log``; ``cmd[0]`` found on PATH); {wall_s, peak_rss_mb, rc, status, log}.

    ``status`` is ``"ok"``, ``"killed: ..."`` or ``"failed (rc N): <last log lines>"``.
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    verdict: dict[str, Any] = {}
    done, lock = threading.Event(), threading.Lock()
    usage_file = log.with_suffix(".rusage.json")
    usage_file.unlink(missing_ok=True)
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", LAUNCHER, str(usage_file), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
        )
        watcher = threading.Thread(
            target=_watch, args=(proc, done, lock, max_rss_bytes, timeout_s, started, verdict), daemon=True
        )
        watcher.start()
        try:
            _, status, _ = os.wait4(proc.pid, 0)
        except BaseException:  # e.g. Ctrl-C: the command runs in its own session, so stop it here
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            with lock:
                done.set()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    peak_kb = json.loads(usage_file.read_text())["maxrss_kb"] if usage_file.is_file() else None
    rc = proc.returncode
    if "killed" in verdict:
        state = verdict["killed"]
    elif rc != 0:
        tail = " | ".join(log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:])
        state = f"failed (rc {rc}): {tail}"
    else:
        state = "ok"
    return {
        "wall_s": wall,
        "peak_rss_mb": None if peak_kb is None else peak_kb / 1024,
        "rc": rc,
        "status": state,
        "log": str(log),
        "sampled_peak_rss_mb": verdict.get("sampled_peak_rss_mb"),
    }


def worker(
    task: str,
    args: Mapping[str, Any],
    *,
    workdir: str | os.PathLike,
    name: str,
    env: Mapping[str, str] | None = None,
    max_rss_bytes: int | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run ``python -m bench.worker task`` on ``args``; the measurement plus the worker's own result."""
    workdir = Path(workdir)
    args_file, result_file = workdir / f"{name}.args.json", workdir / f"{name}.result.json"
    result_file.unlink(missing_ok=True)
    paths.write_json(args_file, dict(args))
    repo = str(Path(__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep), **(env or {})}
    measured = run(
        [sys.executable, "-m", "bench.worker", task, str(args_file), str(result_file)],
        log=workdir / f"{name}.log",
        env=env,
        max_rss_bytes=max_rss_bytes,
        timeout_s=timeout_s,
    )
    if measured["status"] == "ok":
        measured.update(paths.read_json(result_file))
    return measured
