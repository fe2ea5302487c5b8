"""Sections 2 and 3: evaluation throughput (mu vs naive loop) and K-source ensembling (cached vs recomputed).

Each section runs in a fresh process whose ``MU_ROOT`` is a scratch folder, so
``mu.evaluate``'s logits cache starts empty (we time compute, not the cache) and
nothing is left in the project; every test set is a different split, so no call
hits the cache of another. The cached-ensemble process shares the scratch root of
the recompute process, whose logits it then reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import proc, utterances

BATCH_SIZE = 32  # both loops; the naive one pads every utterance to MAX_SEQ_LENGTH
MAX_SEQ_LENGTH = 128
ENSEMBLE_METHOD = "soft"


def write_test_sets(workdir: Path, sizes: list[int]) -> dict[int, Path]:
    """{n: MASSIVE-layout folder}; the utterances of a smaller set are the first n of the larger ones."""
    return {n: utterances.write_test_set(workdir / f"test-{n}", n) for n in sizes}


def throughput(model: Path, sets: Mapping[int, Path], *, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """``mu.evaluate.logits`` (empty cache) on every test set, then the naive loop on the largest; one process."""
    root = workdir / "root-evaluate"
    shutil.rmtree(root, ignore_errors=True)
    try:
        return proc.worker(
            "evaluate",
            {
                "model": str(model),
                "locale": utterances.LOCALE,
                "data": {str(n): str(folder) for n, folder in sets.items()},
                "batch_size": BATCH_SIZE,
                "max_seq_length": MAX_SEQ_LENGTH,
                "naive_batch_size": BATCH_SIZE,
            },
            workdir=workdir,
            name="evaluate",
            env={"MU_ROOT": str(root)},
            timeout_s=timeout_s,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def ensemble(
    models_dir: Path, weights: Mapping[str, float], data: Path, *, workdir: Path, timeout_s: float
) -> dict[str, Any]:
    """{"recompute": K forwards + combine, "cached": ``evaluate_ensemble`` from the cache just filled}."""
    root = workdir / "root-ensemble"
    shutil.rmtree(root, ignore_errors=True)
    args = {
        "models_dir": str(models_dir),
        "data": str(data),
        "target": utterances.LOCALE,
        "weights": dict(weights),
        "method": ENSEMBLE_METHOD,
        "batch_size": BATCH_SIZE,
        "max_seq_length": MAX_SEQ_LENGTH,
    }
    out: dict[str, Any] = {"k": len(weights), "method": ENSEMBLE_METHOD}
    try:
        for label, compute in (("recompute", True), ("cached", False)):
            out[label] = proc.worker(
                "ensemble",
                {**args, "compute": compute},
                workdir=workdir,
                name=f"ensemble-{label}",
                env={"MU_ROOT": str(root)},
                timeout_s=timeout_s,
            )
            if out[label]["status"] != "ok":
                break
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out
