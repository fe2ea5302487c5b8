"""One job of a batch (a notebook for one target) and its state on disk: the key that says whether it is
done, its done-marker and failed output, and the lock it runs under.

A (notebook, target) is skipped when its done-marker holds the same key: a hash of the
injected parameters, the notebook's content and the done-markers of the batch's earlier
notebooks it depends on (same target, or any target for a per-profile notebook such as
06). So a notebook re-executes when its parameters or code change, or when an upstream
step of the batch finished anew (e.g. a target that failed before now succeeded).

Two runners on one ``MU_ROOT`` never execute the same job at once: each job runs under a lock
file (``<stem>/.<target>.lock``) and re-checks its done-marker once it holds it, so the second
waits and then skips what the first finished (and a job only reads what earlier, finished
jobs wrote).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock

from mu.core import paths, report


@dataclasses.dataclass(frozen=True)
class Job:
    """One papermill execution: a notebook for one target with its injected parameters.

    ``digest`` hashes the parameters and the notebook content; ``per_target`` is False
    for a notebook run once per profile (its ``target`` is then the profile name).
    """

    notebook: Path
    stem: str
    target: str
    parameters: dict[str, Any]
    output: Path
    marker: Path
    digest: str
    per_target: bool

    @property
    def failed_output(self) -> Path:
        return self.output.with_name(f"{self.target}.failed.ipynb")


def hash_json(obj: Any) -> str:
    """sha256 of ``obj`` as sorted-key JSON: a job's digest and its run key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _marker(job: Job) -> dict[str, Any] | None:
    try:
        return paths.read_json(job.marker) if job.output.is_file() else None
    except (OSError, ValueError):
        return None


def upstream(job: Job, jobs: Sequence[Job]) -> list[Job]:
    """The batch's earlier-notebook jobs ``job`` depends on: same target or per-profile
    ones; every earlier job when ``job`` itself runs once per profile."""
    earlier = [u for u in jobs if u.stem < job.stem]
    if not job.per_target:
        return earlier
    return [u for u in earlier if not u.per_target or u.target == job.target]


def _markers_on_disk(job: Job) -> dict[tuple[str, str], Path]:
    """Done-markers of earlier notebooks already in the reports folder that ``job`` reads:
    same target or per-profile ones; all of them when ``job`` runs once per profile."""
    found = {}
    for marker in job.marker.parent.parent.glob("*/*.done.json"):
        stem, target = marker.parent.name, marker.name[: -len(".done.json")]
        if stem >= job.stem:
            continue
        if job.per_target and target not in (job.target, job.parameters.get("profile")):
            continue
        found[(stem, target)] = marker
    return found


def run_key(job: Job, jobs: Sequence[Job]) -> str:
    """The job's digest combined with the current done-markers of what it depends on: the
    batch's upstream jobs and earlier results already on disk (so notebook 06 run alone
    reruns after notebook 03 was rerun in another batch)."""
    deps = _markers_on_disk(job)
    deps.update({(u.stem, u.target): u.marker for u in upstream(job, jobs)})
    state = []
    for (stem, target), marker in sorted(deps.items()):
        try:
            m = paths.read_json(marker)
        except (OSError, ValueError):
            m = {}
        state.append([stem, target, m.get("key"), m.get("run")])
    return hash_json({"digest": job.digest, "upstream": state})


def is_done(job: Job, key: str) -> bool:
    """True when the job's output exists and its done-marker holds ``key``."""
    return (_marker(job) or {}).get("key") == key


def job_lock(job: Job) -> filelock.FileLock:
    """The job's lock file ``<out>/<stem>/.<target>.lock``: held while the job executes and marks
    itself done, so two runners on one ``MU_ROOT`` never run the same job at once."""
    job.marker.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(job.marker.parent / f".{job.target}.lock"))


def sweep(job: Job) -> list[Path]:
    """Remove the temporaries a killed run of ``job`` left beside its outputs (the executed notebook, the
    failed one, their pages, the done-marker); a live writer's are kept (``paths.remove_stale_temporaries``).

    Writing an output sweeps only that output's temporaries, so a job a rerun skips (another runner, or
    the killed run's own worker, finished it) would keep them until it runs again: the runner sweeps
    every job it plans, run or skipped.
    """
    notebooks = (job.output, job.failed_output)
    outputs = (*notebooks, *(n.with_suffix(".html") for n in notebooks), job.marker)
    return [t for o in outputs for t in paths.remove_stale_temporaries(o)]


def clear_failure(job: Job) -> None:
    """Remove the job's failed notebook and its page: a success of the parameters asked for (just run, or
    done before and skipped) is the job's state now, whatever failed since with other parameters."""
    for stale in (job.failed_output, job.failed_output.with_suffix(".html")):
        stale.unlink(missing_ok=True)


def mark_done(job: Job, key: str, result: Mapping[str, Any]) -> None:
    paths.write_json(
        job.marker,
        {
            "notebook": job.stem,
            "target": job.target,
            "key": key,
            "digest": job.digest,
            "run": uuid.uuid4().hex,
            "parameters": job.parameters,
            "inputs": {"notebook": report.describe_input(job.notebook)},
            "output": str(job.output),
            "seconds": round(result["seconds"], 2),
            "versions": report.versions(),
            "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        },
    )
