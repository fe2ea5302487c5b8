"""The whole benchmark in one run, within a time budget; writes results.json and results.md atomically.

Order: checkpoints (generated once, cached) → a cold read (if the page cache can
be dropped) → the I/O floor (reading every input file, writing one output) → the
compute floors (one selection and one SVD per distinct shape: ``bench.floors``) →
one untimed warm-up merge → linear merges for every N → TIES → the other data-free
methods (each by mu, and by the mergekit CLI where mergekit has the method and it fits
in memory) → evaluation → ensembling.
Before each merge the time and peak memory of each tool are predicted from the
same method at smaller N (linear in N), or for the first N, estimated from the checkpoint's
shapes (mu's for the methods that hold whole tensors: ``merging.peak_estimate``; mergekit's
always: ``merging.mergekit_peak_estimate``); a merge
predicted to overrun the budget or the memory limit (``max_rss_gb``, and what the machine
has available) is skipped and recorded as skipped (with why), never silently dropped.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
from tqdm.auto import tqdm

from bench import checkpoints, evaluation, merging, sizes, summary
from mu import paths, report

MEMORY_MARGIN = 1.5 * 2**30  # bytes left to the rest of the (shared) machine
MIN_LEFT_S = 60.0  # a merge is not started with less budget left than this


def results_path(quick: bool) -> Path:
    return paths.reports_dir("bench", "results-quick.json" if quick else "results.json")


def drop_page_cache() -> str:
    """Try ``sync; echo 3 > /proc/sys/vm/drop_caches``; say whether it was permitted."""
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "permitted"
    except OSError as e:
        return f"not permitted ({e.strerror})"


def _predict(done: list[Mapping[str, Any]], n: int, tool: str) -> tuple[float, float] | None:
    """(wall seconds, peak bytes) of ``tool`` merging n sources, extrapolated linearly in N from smaller ones."""
    ok = [d for d in done if d[tool]["status"] == "ok"]
    if not ok:
        return None
    pts = sorted(ok, key=lambda d: d["n"])[-2:]
    wall = [d[tool]["wall_s"] * len(d["runs"][tool]) for d in pts]
    peak = [d[tool]["peak_rss_mb"] * 2**20 for d in pts]
    if len(pts) == 1:
        return wall[0] * n / pts[0]["n"], peak[0] * (n + 2) / (pts[0]["n"] + 2)
    (n0, n1) = pts[0]["n"], pts[1]["n"]
    return tuple(y0 + (y1 - y0) * (n - n0) / (n1 - n0) for y0, y1 in (wall, peak))


def _merges(
    method: str,
    ns: list[int],
    base: Path,
    sources: Mapping[str, Path],
    *,
    workdir: Path,
    deadline: float,
    repeats: int,
    skipped: list[dict[str, Any]],
    max_rss_bytes: int,
    device: str | None = None,
) -> list[dict[str, Any]]:
    done: list[dict[str, Any]] = []
    for n in tqdm(ns, desc=f"merge {method}", unit="N"):
        limit = int(min(psutil.virtual_memory().available - MEMORY_MARGIN, max_rss_bytes))
        left = deadline - time.perf_counter()
        why: dict[str, list[str]] = {}
        for tool in ("mu", "mergekit"):
            guess = _predict(done, n, tool)
            reasons = why.setdefault(tool, [f"{max(left, 0):.0f} s left of the budget"] if left < MIN_LEFT_S else [])
            if guess and guess[0] > left:
                reasons.append(f"predicted {guess[0]:.0f} s > {max(left, 0):.0f} s left of the budget")
            if guess and guess[1] > limit:
                reasons.append(f"predicted peak {guess[1] / 1e9:.1f} GB > {limit / 1e9:.1f} GB limit")
        estimate = merging.peak_estimate(method, n, base) if not _predict(done, n, "mu") else None
        if estimate and estimate[0] > limit:  # whole tensors per source: known before the first run
            why["mu"].append(f"estimated peak {estimate[0] / 1e9:.1f} GB ({estimate[1]}) > {limit / 1e9:.1f} GB limit")
        if method in merging.MERGEKIT and not _predict(done, n, "mergekit"):  # none of its runs measured yet
            first = merging.mergekit_peak_estimate(method, n, base)
            if first[0] > limit:
                why["mergekit"].append(
                    f"estimated peak {first[0] / 1e9:.1f} GB ({first[1]}) > {limit / 1e9:.1f} GB limit"
                )
        if why["mu"]:
            skipped.append({"method": method, "n": n, "reason": "; ".join(why["mu"])})
            continue
        mk = "run" if not why["mergekit"] else "skipped: " + "; ".join(why["mergekit"])
        done.append(
            merging.measure(
                method,
                base,
                dict(list(sources.items())[:n]),
                workdir=workdir,
                max_rss_bytes=limit,
                deadline=deadline,
                repeats=repeats,
                mergekit=mk,
                device=device,
            )
        )
    return done


def _row(
    measured: Mapping[str, Any], floor: Mapping[str, Any], compute: Mapping[str, Any] | None, model_bytes: int
) -> dict[str, Any]:
    """The results row of one merge, against its I/O floor and its method's own floor."""
    io = merging.floor_for(measured["method"], measured["n"], floor)
    return summary.merge_row(
        measured, io, model_bytes, own=merging.own_floor(measured["method"], measured["n"], io, compute)
    )


def _ns(method: str, ns: list[int]) -> list[int]:
    """The numbers of sources ``method`` is measured at: ``ns``, or 2 for the pairwise methods (slerp, ...)."""
    from mu.merge.catalog import EXACT_SOURCES

    return [EXACT_SOURCES[method]] if method in EXACT_SOURCES else list(ns)


def update(
    methods: list[str], *, ns: list[int], out: str | Path, max_rss_gb: float = 14.0, device: str | None = None
) -> dict[str, Any]:
    """Measure ``methods`` again (N in ``ns``; pairwise ones at 2) on the checkpoints of the run in ``out``
    and replace their rows there, set against that run's stored I/O floor and compute floor (measured earlier
    in it; a run without a compute floor gets one now; the rows say ``"updated"``). For a method fixed after
    a run, without rerunning the other methods."""
    for method in methods:  # every name checked before anything is measured
        merging.check_method(method)
    out = Path(out)
    results = paths.read_json(out)
    base, sources = checkpoints.build(results["settings"]["merge_size"], max(ns))
    workdir = paths.cache_dir("bench", "runs", results["settings"]["merge_size"])
    workdir.mkdir(parents=True, exist_ok=True)
    floor, skipped, merged = results["merge"]["floor"], [], []
    compute = results["merge"].get("compute_floor")
    if not compute or compute.get("status") != "ok":  # a run from before own floors: measured now, once
        compute = results["merge"]["compute_floor"] = merging.compute_floor(base, workdir=workdir, name="compute-floor")
    for method in methods:
        merged += _merges(
            method,
            _ns(method, ns),
            base,
            sources,
            workdir=workdir,
            deadline=time.perf_counter() + 3600,
            repeats=1,
            skipped=skipped,
            max_rss_bytes=int(max_rss_gb * 1e9),
            device=device,
        )
    model_bytes = (base / "model.safetensors").stat().st_size
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    rows = [_row(m, floor, compute, model_bytes) | {"updated": stamp} for m in merged]
    keep = lambda r: r["method"] not in methods  # noqa: E731
    results["merge"]["rows"] = [r for r in results["merge"]["rows"] if keep(r)] + rows
    results["merge"]["raw"] = [r for r in results["merge"]["raw"] if keep(r)] + merged
    results["merge"]["skipped"] = [r for r in results["merge"]["skipped"] if keep(r)] + skipped
    results["settings"]["updated"] = results["settings"].get("updated", []) + [{"methods": methods, "at": stamp}]
    results["targets"] = summary.targets(results["merge"]["rows"], results["evaluation"])
    paths.write_json(out, results)
    paths.write_text(out.with_suffix(".md"), summary.markdown(results))
    return results


def gpu_section(raw: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Where the mu merges ran, and the GPU figures or why there are none."""
    import torch

    devices = sorted({m["mu"].get("device") for m in raw if m["mu"].get("status") == "ok"} - {None})
    if torch.cuda.is_available():
        return {
            "available": True,
            "name": torch.cuda.get_device_name(0),
            "merges_ran_on": devices,
            "figures": "the merge rows of this run (mu merges on CUDA)",
        }
    return {
        "available": False,
        "merges_ran_on": devices,
        "reason": "torch.cuda.is_available() is False on this machine: there is no GPU (the session that "
        "produced these results was not lent a GPU machine), so every mu merge ran on the CPU and no "
        "GPU figure exists. `make bench` on a GPU machine merges on CUDA (the default device) and "
        "fills this section.",
    }


def run(
    *,
    merge_size: str,
    eval_size: str,
    ns: list[int],
    ties_ns: list[int],
    test_sizes: list[int],
    k: int,
    ensemble_size: int,
    budget_s: float,
    out: str | Path,
    repeats: int = 2,
    cold_read: bool = True,
    other_methods: tuple[str, ...] = merging.METHODS[2:],
    max_rss_gb: float = 14.0,
    device: str | None = None,
) -> dict[str, Any]:
    """Run every section and write ``out`` (results.json) and ``out`` with ``.md`` (the table); return the results.

    Linear merges run ``repeats`` times per tool (fastest kept, highest peak kept); TIES
    and ``other_methods`` (N in ``ties_ns``; slerp only N = 2) once; evaluation and
    ensembling once. No measured process may pass ``max_rss_gb`` (killed, recorded).
    ``device``: where mu merges (None: CUDA when available).
    """
    started = time.perf_counter()
    deadline = started + budget_s
    sizes.check_size(merge_size)
    sizes.check_size(eval_size)
    bad = [n for n in [*ns, *ties_ns, k] if not 1 <= n <= len(checkpoints.SOURCE_LOCALES)] + [
        n for n in [*test_sizes, ensemble_size] if n < 1
    ]
    if bad or not ns or not test_sizes:
        raise ValueError(
            f"bad benchmark sizes {bad or '(empty)'}: N and K in [1, {len(checkpoints.SOURCE_LOCALES)}], "
            "test sizes ≥ 1, at least one N and one test size"
        )
    machine = summary.machine()
    workdir = paths.cache_dir("bench", "runs", merge_size)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    t0 = time.perf_counter()
    base, sources = checkpoints.build(merge_size, max([*ns, *ties_ns]))
    eval_base, eval_sources = checkpoints.build(eval_size, k)
    generation_s = time.perf_counter() - t0
    model_bytes = (base / "model.safetensors").stat().st_size

    cold: dict[str, Any] = {"drop_caches": drop_page_cache() if cold_read else "not tried"}
    if cold["drop_caches"] == "permitted":
        measured = merging.floor(base, {}, workdir=workdir, name="cold-read")
        cold.update(
            read_s=measured.get("first_read_s", {}).get("<base>"),
            warm_read_s=measured.get("warm_read_s", {}).get("<base>"),
            gb=model_bytes / 1e9,
        )

    floor = merging.floor(base, sources, workdir=workdir, name="floor")
    if floor["status"] != "ok":
        raise RuntimeError(f"the read floor failed: {floor['status']}")
    compute = merging.compute_floor(base, workdir=workdir, name="compute-floor")  # a failure leaves own floors None
    # Untimed: the first merges after a pause run up to 2-3x slower on this VM (fresh guest memory, page
    # cache); one small merge by each tool first keeps that out of the first measured figure.
    warm_up = merging.measure(
        "linear",
        base,
        dict(list(sources.items())[:2]),
        workdir=workdir,
        max_rss_bytes=int(psutil.virtual_memory().available - MEMORY_MARGIN),
        deadline=deadline,
        device=device,
    )
    skipped: list[dict[str, Any]] = []
    cap = int(max_rss_gb * 1e9)
    merged = _merges(
        "linear",
        ns,
        base,
        sources,
        workdir=workdir,
        deadline=deadline,
        repeats=repeats,
        skipped=skipped,
        max_rss_bytes=cap,
        device=device,
    )
    merged += _merges(
        "ties",
        ties_ns,
        base,
        sources,
        workdir=workdir,
        deadline=deadline,
        repeats=1,
        skipped=skipped,
        max_rss_bytes=cap,
        device=device,
    )
    for method in other_methods:
        merged += _merges(
            method,
            _ns(method, ties_ns),
            base,
            sources,
            workdir=workdir,
            deadline=deadline,
            repeats=1,
            skipped=skipped,
            max_rss_bytes=cap,
            device=device,
        )

    sets = evaluation.write_test_sets(workdir, sorted(set(test_sizes) | {ensemble_size}))
    evals = evaluation.throughput(
        next(iter(eval_sources.values())),
        {n: sets[n] for n in test_sizes},
        workdir=workdir,
        timeout_s=max(deadline - time.perf_counter(), 300),
    )
    ens = evaluation.ensemble(
        eval_base.parent,
        merging.weights(list(eval_sources)),
        sets[ensemble_size],
        workdir=workdir,
        timeout_s=max(deadline - time.perf_counter(), 300),
    )

    rows = [_row(m, floor, compute, model_bytes) for m in merged]
    ev = summary.evaluation(evals)
    results = {
        "machine": machine,
        "settings": {
            "merge_size": merge_size,
            "eval_size": eval_size,
            "ns": ns,
            "ties_ns": ties_ns,
            "test_sizes": test_sizes,
            "k": k,
            "ensemble_size": ensemble_size,
            "budget_s": budget_s,
            "methods": ["linear", "ties", *other_methods],
            "max_rss_gb": max_rss_gb,
            "device": device,
            "repetitions": {
                "linear": repeats,
                "others": 1,
                "evaluation": 1,
                "ensemble": 1,
                "floor_warm_reads": merging.WARM_PASSES,
            },
            "batch_size": evaluation.BATCH_SIZE,
            "max_seq_length": evaluation.MAX_SEQ_LENGTH,
            "ties": {"density": merging.TIES_DENSITY, "lambda": 1.0, "normalize": True},
            "weights": "w_i ∝ 1/(i+1), normalised",
            "page_cache": "warm for every merge and floor figure",
            "drop_caches": cold["drop_caches"],
        },
        "checkpoints": {
            "merge_size": merge_size,
            "merge_dims": sizes.SIZES[merge_size],
            "merge_params": sizes.num_parameters(merge_size),
            "model_gb": model_bytes / 1e9,
            "eval_size": eval_size,
            "eval_dims": sizes.SIZES[eval_size],
            "eval_params": sizes.num_parameters(eval_size),
            "generation_s": generation_s,
            "folder": str(checkpoints.models_dir(merge_size)),
        },
        "cold_read": cold,
        "merge": {
            "rows": rows,
            "skipped": skipped,
            "raw": merged,
            "floor": floor,
            "compute_floor": compute,
            "warm_up": warm_up,
        },
        "gpu": gpu_section(merged),
        "evaluation": ev | {"raw": evals},
        "ensemble": summary.ensemble(ens) | {"raw": ens},
        "scaling": {
            "merge_s_per_model": summary.merge_scaling(rows),
            "eval_s_per_1000_examples": ev.get("slope_s_per_1000"),
        },
        "targets": summary.targets(rows, ev),
        "versions": report.versions(),
        "elapsed_s": time.perf_counter() - started,
    }
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    out = Path(out)
    paths.write_json(out, results)
    paths.write_text(out.with_suffix(".md"), summary.markdown(results))
    return results
