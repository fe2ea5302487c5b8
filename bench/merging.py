"""Section 1: one merge by ``mu.merge.merge_models`` (beside the mergekit CLI for every method mergekit has),
the I/O floor, and each method's own floor (the I/O floor plus the compute it cannot avoid: ``bench.floors``).

Every measurement runs in its own process (``bench.proc``). Every data-free
method of ``mu.merge.METHODS`` (all but those needing data statistics or target
texts: ``mu.merge.STATISTICS``) is measured with ``mu`` at its defaults (e.g. TIES
density 0.5, DARE density 0.5 rescaled, breadcrumbs density 0.9 / gamma 0.01,
λ = 1, normalised; fp32 out): linear and TIES first, then the chunk-streamed
methods, then those holding whole tensors (``peak_estimate`` says beforehand
whether they fit the memory limit; a merge that would not is skipped, with why).
For ``MERGEKIT`` methods (the catalog's ``mergekit`` field) the mergekit CLI gets the
configuration ``mu.build.export`` writes beside a ``python -m mu merge`` (the same
checkpoints, weights, base and knobs), and the two outputs are compared tensor by
tensor (``max_abs_diff``) so the two timings are of the same computation; DARE and
DELLA draw their random masks apart, so theirs are not compared.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import proc
from mu import paths
from mu.merge import lazy


def data_free() -> tuple[str, ...]:
    """The measured methods in order (what the budget cuts first comes last): linear and TIES (beside
    mergekit), the other streamed methods, then those reading whole tensors, each in registry order."""
    from mu.merge import METHODS as ALL
    from mu.merge import STATISTICS, STREAMED

    rest = [m for m in ALL if m not in STATISTICS and m not in ("linear", "ties")]
    return ("linear", "ties", *sorted(rest, key=lambda m: (m not in STREAMED, rest.index(m))))


def shared() -> tuple[str, ...]:
    """The measured methods mergekit also has (the catalog's ``mergekit`` field), in measuring order."""
    from mu.merge import catalog

    return tuple(m for m in METHODS if catalog.get(m).mergekit)


METHODS = data_free()
MERGEKIT = shared()  # also timed with the mergekit CLI, on the configuration mu's exporter writes
TIES_DENSITY = 0.5
# mergekit's Karcher mean weighs its inputs equally, so with unequal weights it has no equivalent; both
# tools get equal weights there (the cost of the iteration does not depend on them)
EQUAL_WEIGHTS = ("karcher",)
RANDOM_MASKS = "random masks differ"
WARM_PASSES = 3  # warm reads per file in the floor; the fastest counts
# mergekit's working copies of the largest tensor per source (``mergekit_peak_estimate``), per method: its
# peaks at N = 2 on the quick size (fits: TIES 4.1, RAM 7.6, DELLA and multislerp 5.1, linear and slerp
# about 0), scaled by 0.76 (its TIES: 3.1 on the base size) and rounded up to halves
MERGEKIT_WORK = {
    "linear": 0.5,
    "slerp": 0.5,
    "task_arithmetic": 1.5,
    "dare_linear": 2.0,
    "karcher": 2.0,
    "model_stock": 2.0,
    "nearswap": 2.0,
    "arcee_fusion": 2.0,
    "dare_ties": 2.5,
    "sce": 2.5,
    "breadcrumbs": 3.0,
    "breadcrumbs_ties": 3.0,
    "nuslerp": 3.0,
    "ties": 3.5,
    "della": 4.0,
    "della_linear": 4.0,
    "multislerp": 4.0,
    "ram": 6.0,
    "ramplus_tl": 6.0,
}
MERGEKIT_PROCESS = 0.5e9  # bytes of Python, torch and mergekit's imports (its peak merging tiny models)


def weights(locales: list[str]) -> dict[str, float]:
    """Unequal, similarity-like weights w_i ∝ 1/(i+1), summing to 1."""
    raw = {loc: 1.0 / (i + 1) for i, loc in enumerate(locales)}
    total = sum(raw.values())
    return {loc: w / total for loc, w in raw.items()}


def weights_for(method: str, locales: list[str]) -> dict[str, float]:
    """The weights both tools merge ``locales`` with by ``method``: ``weights``, or equal ones for
    ``EQUAL_WEIGHTS``."""
    if method in EQUAL_WEIGHTS:
        return {loc: 1.0 / len(locales) for loc in locales}
    return weights(locales)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"the benchmark merges with {list(METHODS)}, not {method!r}")
    return method


def peak_estimate(method: str, n: int, base: Path) -> tuple[float, str] | None:
    """mu's peak bytes merging ``n`` checkpoints shaped like ``base`` with a method that holds whole tensors
    (None for the chunk-streamed ones, whose peak is measured and extrapolated): the output (4 bytes per
    parameter) plus, per tensor, what the method holds of it (see ``mu.merge.run`` / ``mu.merge.spectral``)."""
    from mu.merge import STREAMED, WHOLE_MATRICES, spectral

    if method in STREAMED:
        return None
    meta = lazy.open_model(base)
    shapes = {k: s for k, (s, _) in lazy.meta(meta).items()}
    out = 4.0 * sum(math.prod(s) for s in shapes.values())
    if method in WHOLE_MATRICES:  # one SVD-merged matrix at a time (~8 copies); the rest as task_arithmetic
        svd = max((math.prod(s) for k, s in shapes.items() if spectral.is_matrix(k, s)), default=0)
        rest = max((math.prod(s) for k, s in shapes.items() if not spectral.is_matrix(k, s)), default=0)
        return out + 4.0 * max(8 * svd, rest), (
            f"output + max(8 × largest SVD-merged matrix ({svd / 1e6:.1f}M), "
            f"the base's largest other tensor ({rest / 1e6:.0f}M))"
        )
    largest = max(math.prod(s) for s in shapes.values())  # every source's tensor, the base's, ~4 scratch
    return out + (n + 5) * 4.0 * largest, f"output + (N + 5) × largest tensor ({largest / 1e6:.0f}M)"


def uses_base(method: str) -> bool:
    from mu.merge import USES_BASE

    return method in USES_BASE


def mergekit_config(
    method: str, sources: Mapping[str, Path], w: Mapping[str, float], base: Path | None
) -> tuple[str | None, list[str]]:
    """(the mergekit YAML equivalent to ``mu.merge.merge_models(method, sources, w, base_model=base)`` at the
    method's default knobs, or None where mergekit has none; the exporter's notes): ``mu.build.export``'s
    translation, the one a ``python -m mu merge`` folder carries."""
    from mu.build import export
    from mu.merge import catalog

    if method not in MERGEKIT:
        raise ValueError(f"the benchmark runs mergekit for {list(MERGEKIT)}, not {method!r}")
    refs = {loc: str(folder) for loc, folder in sources.items()}
    base_ref = str(base) if base is not None and uses_base(method) else None
    cfg, notes = export.mergekit_config(method, refs, dict(w), catalog.resolve(method), base_ref)
    if cfg is None:
        return None, notes
    return export.mergekit_yaml(cfg, f"python -m bench ({method}, N = {len(sources)}, default knobs)"), notes


def mergekit_peak_estimate(method: str, n: int, base: Path) -> tuple[float, str]:
    """mergekit's peak bytes merging ``n`` checkpoints shaped like ``base`` before any of its merges by
    ``method`` was measured: the process itself, the input files it maps (RSS counts their pages once
    touched), the output it holds until written, and working copies of the largest tensor per source
    (``MERGEKIT_WORK``; a method without a fit gets the largest). At N = 2 on the base size: TIES 10.3 GB
    (measured 9.7), linear 4.6 GB (measured 3.8); after the first N the bench predicts from mergekit's
    measured peaks instead."""
    model = float((base / "model.safetensors").stat().st_size)
    files = n + uses_base(method)
    largest = 4.0 * max(math.prod(s) for s, _ in lazy.meta(lazy.open_model(base)).values())
    work = MERGEKIT_WORK.get(method, max(MERGEKIT_WORK.values()))
    return MERGEKIT_PROCESS + (files + 1) * model + work * n * largest, (
        f"{MERGEKIT_PROCESS / 1e9:g} GB + {files} input + 1 output models + {work:g} × N × largest tensor "
        f"({largest / 4e6:.0f}M)"
    )


def mergekit_cli() -> Path:
    cli = Path(sys.executable).parent / "mergekit-yaml"
    if not cli.is_file():
        raise ValueError(f"mergekit CLI not found at {cli}; install the project (make venv)")
    return cli


def max_abs_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between two model folders' weights (same tensor names required)."""
    sa, sb = lazy.open_model(a), lazy.open_model(b)
    if set(sa) != set(sb):
        raise ValueError(
            f"{a} and {b} hold different tensors: only in the first {sorted(set(sa) - set(sb))[:5]}, "
            f"only in the second {sorted(set(sb) - set(sa))[:5]}"
        )
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def floor(base: Path, sources: Mapping[str, Path], *, workdir: Path, name: str) -> dict[str, Any]:
    """Read floor of every input file (first and warm read, touch), their sha256 time, one output write;
    measured once per file, summed per merge by ``floor_for``."""
    files = {loc: str(folder / "model.safetensors") for loc, folder in sources.items()}
    files["<base>"] = str(base / "model.safetensors")
    folders = {loc: str(folder) for loc, folder in sources.items()} | {"<base>": str(base)}
    return proc.worker(
        "floor",
        {"files": files, "hash_folders": folders, "scratch": str(workdir), "warm_passes": WARM_PASSES},
        workdir=workdir,
        name=name,
        timeout_s=600,
    )


def floor_for(method: str, n: int, measured: Mapping[str, Any]) -> dict[str, float]:
    """The floor figures of one merge: the first n sources' files, plus the base's where the method uses it."""
    names = [k for k in measured["warm_read_s"] if k != "<base>"][:n] + (["<base>"] if uses_base(method) else [])
    if len(names) < n + uses_base(method):
        raise ValueError(f"the floor measured {len(names)} files; a {method} merge of {n} needs more")
    return {
        key: sum(measured[key][k] for k in names) for key in ("first_read_s", "warm_read_s", "touch_s", "hash_s")
    } | {"bytes": sum(measured["bytes"][k] for k in names), "write_s": measured["write_s"]}


def compute_floor(base: Path, *, workdir: Path, name: str) -> dict[str, Any]:
    """The compute part of every method's own floor (``bench.floors``) at the shapes of ``base``, in its own
    process: one ``kthvalue`` / ``partition`` and one SVD per distinct shape (a few seconds)."""
    return proc.worker("compute_floor", {"model": str(base)}, workdir=workdir, name=name, timeout_s=900)


def own_floor(method: str, n: int, io: Mapping[str, float], compute: Mapping[str, Any] | None) -> dict[str, Any]:
    """One merge's own floor: its I/O floor (``floor_for``: warm read + write) plus the compute its method
    cannot avoid (``bench.floors``); without a measured compute floor, only the kind and None."""
    from bench import floors

    io_s = io["warm_read_s"] + io["write_s"]
    if not compute or compute.get("status", "ok") != "ok":
        return {"floor_kind": floors.kind(method), "compute_floor_s": None, "own_floor_s": None, "floor_ops": None}
    shapes = {k: tuple(v) for k, v in compute["shapes"].items()}
    return floors.of(method, n, io_s, shapes, compute)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run (its figures), with the highest peak RSS of all; the first failure if any failed."""
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        return failed[0]
    return {
        **min(runs, key=lambda r: r["wall_s"]),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "repeats": len(runs),
    }


def measure(
    method: str,
    base: Path,
    sources: Mapping[str, Path],
    *,
    workdir: Path,
    max_rss_bytes: int,
    deadline: float,
    repeats: int = 1,
    mergekit: str | None = "run",
    device: str | None = None,
) -> dict[str, Any]:
    """mu (then the mergekit CLI, for ``MERGEKIT`` methods) on the same inputs, ``repeats`` times (alternating):
    {"mu": best run, "mergekit": best run or why not run, "runs": every run, "max_abs_diff": ... (or
    "diff_note" where the masks are random), "elapsed_s": ...}.

    ``mergekit``: ``"run"``, or the reason it is not run (``"skipped: ..."``).
    ``device``: where mu merges (None: CUDA when available). Each process is killed
    when it passes ``max_rss_bytes`` or runs past ``deadline`` (``time.perf_counter()``
    value; at least 30 s are granted). The outputs are compared once, then removed.
    """
    from mu.build import export

    check_method(method)
    started = time.perf_counter()
    w = weights_for(method, list(sources))
    tag = f"{method}-n{len(sources)}"
    out_mu, out_mk = workdir / f"out-mu-{tag}", workdir / f"out-mergekit-{tag}"
    config = workdir / f"mergekit-{tag}.yml"
    text, notes = mergekit_config(method, sources, w, base) if method in MERGEKIT else (None, [])
    if method not in MERGEKIT:
        mergekit = "not run (mergekit has no such method)"
    elif text is None:
        mergekit = "not run (no mergekit equivalent: " + "; ".join(notes) + ")"
    with_mk = mergekit == "run"
    if with_mk:
        paths.write_text(config, text)
    args = {
        "method": method,
        "sources": {k: str(v) for k, v in sources.items()},
        "weights": w,
        "out_dir": str(out_mu),
        "base_model": str(base) if uses_base(method) else None,
        "device": device,
    }
    result: dict[str, Any] = {
        "method": method,
        "n": len(sources),
        "runs": {"mu": [], "mergekit": []},
        "mergekit_command": f"mergekit-yaml {config.name} {out_mk.name}" if with_mk else None,
    }
    try:
        for rep in range(repeats):
            for out in (out_mu, out_mk):
                shutil.rmtree(out, ignore_errors=True)
            mu = proc.worker(
                "merge",
                args,
                workdir=workdir,
                name=f"mu-{tag}-{rep}",
                max_rss_bytes=max_rss_bytes,
                timeout_s=max(deadline - time.perf_counter(), 30),
            )
            result["runs"]["mu"].append(mu)
            if not with_mk:
                if mu["status"] != "ok":
                    break
                continue
            mk = proc.run(
                [str(mergekit_cli()), str(config), str(out_mk)],
                log=workdir / f"mergekit-{tag}-{rep}.log",
                max_rss_bytes=max_rss_bytes,
                timeout_s=max(deadline - time.perf_counter(), 30),
            )
            result["runs"]["mergekit"].append(mk)
            if mu["status"] != "ok" or mk["status"] != "ok":
                break
            if method in export.RANDOM_DROPS:  # drawn from other generators: the same merge in distribution only
                result["diff_note"] = RANDOM_MASKS
            elif "max_abs_diff" not in result:
                result["max_abs_diff"] = max_abs_diff(out_mu, out_mk)
    finally:
        for out in (out_mu, out_mk):
            shutil.rmtree(out, ignore_errors=True)
    result["mu"] = _best(result["runs"]["mu"])
    result["mergekit"] = _best(result["runs"]["mergekit"]) if with_mk else {"status": mergekit}
    result["elapsed_s"] = time.perf_counter() - started
    return result
