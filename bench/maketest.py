"""``python -m bench.maketest``: ``make test`` as CI runs it, on a fresh clone, timed; the README's
*Measured on this machine* table is generated from what it writes (``reports/bench/make-test.json``).

The clone (of ``HEAD``, or ``--commit``) goes into a temporary folder *beside* this checkout, so that
``../shared`` (real MASSIVE) is where the tests look for it; ``bash .ci/run`` there creates ``.venv``
from scratch and runs ``make test``. Recorded: the wall time of the whole run (venv included), pytest's
own time and counts from its summary line, the worker count, the 1-minute load average before the run
(a busy machine is slower) and the tail of the log. ``--parse LOG --wall-s S`` records an earlier run
from its saved log instead of running one. The clone is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mu import paths

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "reports" / "bench" / "make-test.json"
_SUMMARY = re.compile(r"=+ (?P<body>.*?) in (?P<seconds>[\d.]+)s")
_WORKERS = re.compile(r"created: (\d+)/\d+ workers")


def parse(log: str) -> dict:
    """Counts and seconds from pytest's last summary line (``670 passed, 24 skipped in 368.58s``) and the
    xdist worker count; a log without a summary line is an error (the run did not finish)."""
    found = list(_SUMMARY.finditer(log))
    if not found:
        raise ValueError("no pytest summary line ('... passed ... in N.NNs') in the log: the run did not finish")
    body, seconds = found[-1]["body"], float(found[-1]["seconds"])
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed|errors?|xfailed|xpassed)", body)}
    workers = _WORKERS.search(log)
    return {
        "pytest_s": seconds,
        "passed": counts.get("passed", 0),
        "skipped": counts.get("skipped", 0),
        "failed": counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0),
        "workers": int(workers.group(1)) if workers else None,
    }


def record(log: str, *, wall_s: float, commit: str, load_before: str, rc: int | None) -> dict:
    """Write ``reports/bench/make-test.json`` (``rc``: the run's exit status; None when parsed from a log)."""
    out = {
        "date": dt.date.today().isoformat(),
        "commit": commit,
        "wall_s": round(wall_s, 1),
        **parse(log),
        "exit_code": rc,
        "load_before": load_before,
        "log": "bash .ci/run in a fresh clone beside ../shared; last lines: "
        + " | ".join(log.strip().splitlines()[-3:]),
    }
    paths.write_json(OUT, out)
    return out


def _commit(ref: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def run(ref: str, keep: bool) -> dict:
    commit = _commit(ref)
    clone = Path(tempfile.mkdtemp(prefix="mu-fresh-", dir=REPO.parent))  # beside the checkout: ../shared resolves
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "checkout", "--quiet", commit], cwd=clone, check=True)
        load = f"1-minute load average {os.getloadavg()[0]:.2f}"
        env = {k: v for k, v in os.environ.items() if k not in ("MU_ROOT", "VIRTUAL_ENV", "PYTHONPATH")}
        started = time.perf_counter()
        done = subprocess.run(["bash", ".ci/run"], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        log = done.stdout + done.stderr
        paths.write_text(REPO / "reports" / "bench" / "make-test.log", log)  # the whole log, beside the record
        return record(log, wall_s=wall, commit=commit, load_before=load, rc=done.returncode)
    finally:
        if not keep:
            shutil.rmtree(clone, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.maketest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--commit", default="HEAD", help="what to clone and test (default HEAD)")
    ap.add_argument("--keep", action="store_true", help="keep the fresh clone")
    ap.add_argument("--parse", metavar="LOG", help="record an earlier run from its log instead of running one")
    ap.add_argument("--wall-s", type=float, help="with --parse: that run's wall seconds")
    ap.add_argument("--load-before", default="not recorded", help="with --parse: the load before that run")
    args = ap.parse_args(argv)
    if args.parse:
        if args.wall_s is None:
            ap.error("--parse needs --wall-s (the run's wall seconds, e.g. from `time`)")
        got = record(
            Path(args.parse).read_text(encoding="utf-8"),
            wall_s=args.wall_s,
            commit=_commit(args.commit),
            load_before=args.load_before,
            rc=None,
        )
    else:
        got = run(args.commit, args.keep)
    print({k: v for k, v in got.items() if k != "log"})
    return 0 if got["failed"] == 0 and got["exit_code"] in (0, None) else 1


if __name__ == "__main__":
    sys.exit(main())
