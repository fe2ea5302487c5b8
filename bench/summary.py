"""Turn raw measurements into the figures of results.json, the targets, and the Markdown table."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GB = 1e9


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, torch build and threads, load, date."""
    import psutil
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "ram_total_gb": psutil.virtual_memory().total / GB,
        "ram_available_gb_at_start": psutil.virtual_memory().available / GB,
        "load_avg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def slope(xs: Sequence[float], ys: Sequence[float | None]) -> dict[str, float] | None:
    """Least-squares line y = slope·x + intercept over the points with a value (None with < 2)."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(pts) < 2:
        return None
    a, b = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
    return {"slope": float(a), "intercept": float(b), "points": len(pts)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def merge_row(
    measured: Mapping[str, Any], floor: Mapping[str, Any], model_bytes: int, own: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One (method, N) row: times, peaks, ratios (mu/mergekit on process wall, mu/floor on in-process time);
    ``own``: the method's own floor (``bench.merging.own_floor``), giving ``mu_over_own_floor``."""
    mu, mk = measured.get("mu", {}), measured.get("mergekit", {})
    mu_ok, mk_ok = mu.get("status") == "ok", mk.get("status") == "ok"
    n = measured["n"]
    io_floor = floor["warm_read_s"] + floor["write_s"]
    row = {
        "n": n,
        "method": measured["method"],
        "status": {
            "mu": mu.get("status", measured.get("status")),
            "mergekit": mk.get("status", measured.get("status")),
        },
        "mu_wall_s": mu.get("wall_s") if mu_ok else None,
        "mu_op_s": mu.get("op_s") if mu_ok else None,
        "mu_peak_rss_gb": mu["peak_rss_mb"] * 2**20 / GB if mu_ok else None,
        "mergekit_wall_s": mk.get("wall_s") if mk_ok else None,
        "mergekit_peak_rss_gb": mk["peak_rss_mb"] * 2**20 / GB if mk_ok else None,
        "floor_read_s": floor["warm_read_s"],
        "floor_first_read_s": floor["first_read_s"],
        "floor_touch_s": floor["touch_s"],
        "io_floor_s": io_floor,
        "mu_device": mu.get("device"),
        "hash_s": floor["hash_s"],
        "write_s": floor["write_s"],
        "input_gb": floor["bytes"] / GB,
        "model_gb": model_bytes / GB,
        "peak_limit_gb": (n + 2) * model_bytes / GB,
        "max_abs_diff": measured.get("max_abs_diff"),
        "diff_note": measured.get("diff_note"),
    }
    own = own or {}
    row.update({k: own.get(k) for k in ("floor_kind", "compute_floor_s", "own_floor_s", "floor_ops")})
    row["mu_over_own_floor"] = _ratio(row["mu_op_s"], row["own_floor_s"])
    row["mu_over_mergekit"] = _ratio(row["mu_wall_s"], row["mergekit_wall_s"])
    row["mergekit_over_mu"] = _ratio(row["mergekit_wall_s"], row["mu_wall_s"])
    row["mu_over_floor"] = _ratio(row["mu_op_s"], row["floor_read_s"])
    row["mu_over_io_floor"] = _ratio(row["mu_op_s"], row["io_floor_s"])
    row["mu_over_touch"] = _ratio(row["mu_op_s"], row["floor_touch_s"])
    row["mu_without_hash_over_floor"] = _ratio(
        None if row["mu_op_s"] is None else row["mu_op_s"] - row["hash_s"], row["floor_read_s"]
    )
    row["mu_wall_over_floor"] = _ratio(row["mu_wall_s"], row["floor_read_s"])
    row["mergekit_over_floor"] = _ratio(row["mergekit_wall_s"], row["floor_read_s"])
    row["mu_peak_over_model"] = _ratio(row["mu_peak_rss_gb"], row["model_gb"])
    return row


def merge_scaling(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds per source model (least squares over N) for mu, mergekit and the read floor, per method."""
    out = {}
    for method in sorted({r["method"] for r in rows}):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        ns = [r["n"] for r in mine]
        out[method] = {
            tool: slope(ns, [r[key] for r in mine])
            for tool, key in (
                ("mu_op", "mu_op_s"),
                ("mu_wall", "mu_wall_s"),
                ("mergekit_wall", "mergekit_wall_s"),
                ("floor_read", "floor_read_s"),
            )
        }
    return out


def evaluation(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Throughput per test size, the naive loop on the largest, and the time-vs-size slope (s per 1000)."""
    mu_s = {int(n): t for n, t in (raw.get("mu_s") or {}).items()}
    sizes = sorted(mu_s)
    per_size = [{"n": n, "mu_s": mu_s[n], "mu_examples_per_s": n / mu_s[n]} for n in sizes]
    out: dict[str, Any] = {
        "status": raw["status"],
        "sizes": per_size,
        "fingerprint_s": raw.get("fingerprint_s"),
        "peak_rss_gb": None if raw.get("peak_rss_mb") is None else raw["peak_rss_mb"] * 2**20 / GB,
    }
    if raw.get("naive_s") is not None:
        n = int(raw["n"])
        mu_total = mu_s[n] + raw["fingerprint_s"]  # one evaluation in a fresh process also hashes the model once
        out.update(
            n=n,
            mu_total_s=mu_total,
            mu_examples_per_s=n / mu_total,
            naive_examples_per_s=n / raw["naive_s"],
            speedup=raw["naive_s"] / mu_total,
            tokens=raw["tokens"],
            naive={
                k: raw.get(k)
                for k in (
                    "naive_s",
                    "naive_load_s",
                    "naive_tokenize_s",
                    "naive_forward_s",
                    "argmax_agreement",
                    "max_abs_logit_diff",
                )
            },
        )
    fit = slope([n / 1000 for n in sizes], [mu_s[n] for n in sizes])
    out["slope_s_per_1000"] = fit and fit["slope"]
    out["intercept_s"] = fit and fit["intercept"]
    return out


def ensemble(measured: Mapping[str, Any]) -> dict[str, Any]:
    rec, cached = measured.get("recompute", {}), measured.get("cached", {})
    out = {
        "k": measured["k"],
        "method": measured["method"],
        "status": {"recompute": rec.get("status"), "cached": cached.get("status")},
        "recompute_s": rec.get("op_s"),
        "cached_s": cached.get("op_s"),
        "combine_s": cached.get("combine_s"),
        "n": rec.get("n"),
    }
    out["speedup"] = _ratio(out["recompute_s"], out["cached_s"])
    return out


def targets(rows: Sequence[Mapping[str, Any]], evaluation_: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it is met (None = not measured)."""
    out = []

    def add(name: str, value: float | None, limit: float, below: bool) -> None:
        met = None if value is None else (value <= limit if below else value >= limit)
        out.append({"target": name, "value": value, "limit": limit, "met": met})

    for r in rows:
        tag = f"{r['method']} N={r['n']}"
        limit = 1.5 if r["method"] == "linear" else 3.0
        add(f"merge {tag}: mu time / I/O floor ≤ {limit}", r["mu_over_io_floor"], limit, True)
        add(f"merge {tag}: mu peak RSS ≤ (N + 2) × model", r["mu_peak_over_model"], r["n"] + 2, True)
        if r["mu_over_mergekit"] is not None:
            add(f"merge {tag}: mu / mergekit (wall) ≤ 1", r["mu_over_mergekit"], 1.0, True)
    add("evaluation: mu / naive throughput ≥ 2", evaluation_.get("speedup"), 2.0, False)
    return out


OWN_FLOOR_TARGET = 2.0  # each merge within twice its method's own floor
OLD_NOT_RUN = "not run (mu only for this method)"  # how runs from before every shared method was timed say it


def mergekit_over_mu(r: Mapping[str, Any]) -> float | None:
    """mergekit's process wall time over mu's (rows from before the field: from their two wall times)."""
    return r.get("mergekit_over_mu") or _ratio(r.get("mergekit_wall_s"), r.get("mu_wall_s"))


def mergekit_cell(r: Mapping[str, Any]) -> tuple[str, str | None]:
    """(the mergekit wall-time cell of a row, the note saying why it has no time, if it should say)."""
    from mu.merge import catalog

    state = r["status"].get("mergekit")
    if state == "ok":
        return _f(r["mergekit_wall_s"], 1), None
    if catalog.get(r["method"]).mergekit is None:
        return "— (no such method)", None
    if state == OLD_NOT_RUN:
        return "not measured in this run", None
    if str(state).startswith("not run"):
        return "no equivalent", str(state)
    return ("skipped" if str(state).startswith("skipped") else "failed"), str(state)


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def markdown(results: Mapping[str, Any]) -> str:
    """The results table (as printed and as ``results.md``)."""
    m, s = results["machine"], results["settings"]
    ck, cold = results["checkpoints"], results["cold_read"]
    cold_note = (
        f" (a cold read of one checkpoint after dropping the page cache: {cold['read_s']:.1f} s, warm "
        f"{cold['warm_read_s']:.1f} s)"
        if cold.get("read_s") is not None
        else f" (page cache drop {cold['drop_caches']})"
    )
    lines = [
        f"Machine: {m['cpu_count']} cores ({m['cpu_model']}), {m['ram_total_gb']:.0f} GB RAM, torch {m['torch']} "
        f"({m['torch_threads']} threads), GPU: {m['gpu'] or 'none'}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}; {m['date']}. Linear merges: fastest of "
        f"{s['repetitions']['linear']} runs per tool; other methods, evaluation, ensembling: one run; read floor: fastest of "
        f"{s['repetitions']['floor_warm_reads']} warm reads per file. Page cache {s['page_cache']}{cold_note}.",
        "",
        f"### Merging ({ck['merge_size']} size: {ck['merge_params'] / 1e6:.0f}M parameters, "
        f"{ck['model_gb']:.2f} GB per checkpoint, fp32)",
        "",
        "| N | method | mu merge s | mu wall s | mu peak GB | I/O floor s | mu / I/O floor | floor kind | "
        "own floor s | mu / own floor | mergekit wall s | mergekit / mu | mergekit peak GB | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    compute = results["merge"].get("compute_floor") or {}
    compute_note = (
        f"measured in {compute['op_s']:.1f} s with {compute.get('threads')} torch threads"
        if compute.get("status") == "ok"
        else compute.get("status")
    )
    above: dict[str, list[str]] = {}
    for r in results["merge"]["rows"]:
        mu_state = r["status"]["mu"]
        note = "" if mu_state == "ok" else f" ({mu_state})"
        mk_cell, mk_note = mergekit_cell(r)
        if mk_note:
            notes.append(f"mergekit {r['method']} N={r['n']}: {mk_note}")
        own = r.get("mu_over_own_floor")
        if own is not None and own > OWN_FLOOR_TARGET:
            above.setdefault(r["method"], []).append(f"N = {r['n']}: {own:.1f}×")
        lines.append(
            f"| {r['n']} | {r['method']}{note} | {_f(r['mu_op_s'], 1)} | {_f(r['mu_wall_s'], 1)} | "
            f"{_f(r['mu_peak_rss_gb'], 1)} | {_f(r['io_floor_s'], 1)} | {_f(r['mu_over_io_floor'])} | "
            f"{r.get('floor_kind') or '—'} | {_f(r.get('own_floor_s'), 1)} | {_f(own)} | {mk_cell} | "
            f"{_f(mergekit_over_mu(r))} | {_f(r['mergekit_peak_rss_gb'], 1)} | "
            f"{r.get('diff_note') or _f(r['max_abs_diff'], 2)} |"
        )
    for r in results["merge"]["skipped"]:
        lines.append(f"| {r['n']} | {r['method']} (skipped: {r['reason']}) |" + " — |" * 12)
    gpu = results.get("gpu", {})
    lines += [
        "",
        "mu merge s: mu's in-process merge_models time (reading, merging, checking and writing the model "
        "folder); mu wall s: the whole process (Python start, imports). I/O floor: reading the same input "
        "files into memory with safetensors (load_file, then a copy; warm page cache; the fastest of "
        f"{s['repetitions']['floor_warm_reads']} passes) plus writing one model with safetensors' save_file, "
        "measured in the same run. Own floor: the I/O floor plus the compute the method cannot avoid, "
        "measured in the same run on random data of the model's shapes (bench.floors): floor kind 'select', "
        "one selection (the faster of torch.kthvalue and numpy.partition) of every tensor per source "
        "(TIES, DARE, breadcrumbs, DELLA, SCE, RAM); 'svd', one full-rank SVD of every SVD-merged matrix "
        "per source (tsv_m, iso_cts; iso_c: one per matrix), on the faster of the machine's thread count "
        "and one thread; 'io', nothing more (elementwise and Gram-matrix methods, karcher included). "
        + (f"Compute floor: {compute_note}. " if compute_note else "")
        + f"The target is mu / own floor ≤ {OWN_FLOOR_TARGET:g}. "
        "mergekit: its CLI (mergekit-yaml) for every method mergekit has, on the configuration mu's exporter "
        "writes beside `python -m mu merge` (mu.build.export: the same inputs, weights, base and knobs), "
        "where its peak is predicted to fit the memory limit; its process wall time and peak RSS. "
        "mergekit / mu: the two process wall times (each with Python's start and imports). Max abs diff: "
        "between the two outputs (DARE and DELLA draw their random masks apart, so not compared). "
        "Merges ran on: " + (", ".join(gpu.get("merges_ran_on") or []) or "—") + ".",
    ]
    if above:
        from bench import floors

        lines += ["", f"Above {OWN_FLOOR_TARGET:g}× their own floor, and the work the floor does not count:", ""]
        lines += [
            f"* {method} ({', '.join(got)}): {floors.BEYOND_FLOOR.get(method, 'no reason stated')}."
            for method, got in above.items()
        ]
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    lines += [
        "",
        "GPU: " + (f"{gpu['name']}; {gpu['figures']}." if gpu.get("available") else gpu.get("reason", "not recorded")),
        "",
    ]
    for method, fits in results["scaling"]["merge_s_per_model"].items():
        parts = [f"{tool} {fit['slope']:.2f} s/model" for tool, fit in fits.items() if fit]
        if parts:
            lines.append(f"Merge time vs N ({method}, least squares): " + ", ".join(parts) + ".")
    ev = results["evaluation"]
    lines += [
        "",
        f"### Evaluation ({ck['eval_size']} size: {ck['eval_params'] / 1e6:.0f}M parameters; "
        f"batch {s['batch_size']}, max length {s['max_seq_length']})",
        "",
    ]
    if ev.get("speedup") is not None:
        tok = ev["tokens"]
        lines += [
            "| test set | mu.evaluate ex/s | naive loop ex/s | speedup |",
            "|---|---|---|---|",
            f"| {ev['n']} utterances (tokens mean {tok['mean']:.1f}, p95 {tok['p95']:.0f}, max {tok['max']}) | "
            f"{_f(ev['mu_examples_per_s'], 1)} | {_f(ev['naive_examples_per_s'], 1)} | {_f(ev['speedup'])}× |",
            "",
        ]
    lines.append(
        "mu.evaluate: logits() with an empty cache, including the model's sha256 for the cache key "
        f"({_f(ev.get('fingerprint_s'), 2)} s, once per process); naive loop: padding to "
        f"{s['max_seq_length']}, batch {s['batch_size']}, file order; same model, same process, same device."
    )
    lines.append(
        "Evaluation time vs test size: "
        + ", ".join(f"{r['n']}: {_f(r['mu_s'], 1)} s" for r in ev["sizes"])
        + (
            f"; slope {ev['slope_s_per_1000']:.2f} s per 1000 examples (intercept {ev['intercept_s']:.1f} s)."
            if ev.get("slope_s_per_1000") is not None
            else "."
        )
    )
    en = results["ensemble"]
    lines += [
        "",
        f"### Ensembling (K = {en['k']}, {en['method']}, {en['n']} utterances)",
        "",
        f"Recomputing the {en['k']} forwards (mu.ensemble.source_logits, compute=True): "
        f"{_f(en['recompute_s'], 1)} s; from cached logits (mu.ensemble_eval.evaluate_ensemble in a fresh process: "
        f"sha256 of each source's weights for the cache key, the split, the {en['k']} logit files, combine): "
        f"{_f(en['cached_s'], 2)} s, of which combine {_f(en['combine_s'], 3)} s; speedup {_f(en['speedup'], 0)}×.",
        "",
        "### Targets",
        "",
        "| target | value | met |",
        "|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append(
            f"| {t['target']} | {_f(t['value'])} | {'—' if t['met'] is None else ('yes' if t['met'] else 'no')} |"
        )
    return "\n".join(lines) + "\n"
