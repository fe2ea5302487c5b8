"""The study driver's bookkeeping: each stage's wall time, jobs and jobs run (``timings.json``, the budget's
input), a file's modification stamp (did a cached stage run?), and running under another project root (an extra
seed's)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mu.core import paths


def mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


class Stages:
    """Wall seconds, jobs and jobs that ran (not skipped) per stage of one ``run``, written to ``path``
    (``timings.json``: one entry per invocation) after every stage, so an interrupted run keeps what it measured."""

    def __init__(self, path: Path, **meta: Any) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.path, self.meta = path, meta
        self.prior = paths.read_json(path) if path.is_file() else []

    def add(self, name: str, t0: float, jobs: int, ran: int, *, partial: bool = False) -> None:
        """``partial``: the stage is still running; ``seconds`` runs to its last finished job (a run stopped
        mid-stage keeps that, and loses only the jobs it had not finished)."""
        self.stages[name] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "jobs": jobs,
            "ran": ran,
            **({"partial": True} if partial else {}),
        }
        self.save()

    def save(self, **meta: Any) -> None:
        self.meta.update(meta)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"seconds": {k: v["seconds"] for k, v in self.stages.items()}, "stages": self.stages, **self.meta}
        paths.write_json(self.path, [*self.prior, entry])

    def notebook(
        self, name: str, nb: str, targets: Sequence[str], profile: str, workers: int, extra: dict[str, Any]
    ) -> pd.DataFrame:
        from mu.batch import runner
        from mu.core import protocol

        t0, ended = time.perf_counter(), []

        def progress(row: Mapping[str, Any]) -> None:
            ended.append(row["status"] != "skipped")
            if ended[-1]:  # a skipped job costs nothing: no write per resumed target
                self.add(name, t0, len(targets), sum(ended), partial=True)

        frame = runner.run([nb], targets, profile=profile, workers=workers, extra_params=extra, on_job=progress)
        self.add(name, t0, len(frame), int((frame["status"] != "skipped").sum()))
        protocol.write(profile)  # the choices its kernels recorded, in protocol.md even if the run stops here
        print(f"{name}:\n{runner.format_summary(frame)}", flush=True)
        return frame


@contextlib.contextmanager
def project_root(root: Path) -> Iterator[None]:
    """Run with ``MU_ROOT`` set to another project root (an extra seed's), restored afterwards."""
    old = os.environ.get("MU_ROOT")
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MU_ROOT"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MU_ROOT", None)
        else:
            os.environ["MU_ROOT"] = old
