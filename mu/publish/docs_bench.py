"""The benchmark tables for README.md and docs/ (``mu.publish.docs`` renders them between markers):
the machine, merge and evaluation speed, the projected cost of the study, torch threads on a busy
machine, fine-tuning and evaluation against a matmul floor, notebook 02's wall time per seed and
``make test`` on a fresh clone; all from the committed ``reports/bench/*.json``.
"""

from __future__ import annotations

from typing import Any

from mu.publish.collect import checkout
from mu.publish.collect import duration as _duration
from mu.publish.collect import md_table as _table
from mu.publish.collect import num as _num
from mu.publish.collect import read_json as _json

BENCH = "reports/bench"


def _bench() -> dict[str, Any]:
    return _json(checkout(BENCH, "results.json"))


def bench_machine(file: str = "results") -> str:
    m = _json(checkout(BENCH, f"{file}.json"))["machine"]
    return _table(
        ["cores", "CPU", "RAM GB", "GPU", "torch (threads)", "load average at start", "date"],
        [
            [
                m["cpu_count"],
                m["cpu_model"],
                f"{m['ram_total_gb']:.0f}",
                m["gpu"] or "none",
                f"{m['torch']} ({m['torch_threads']})",
                ", ".join(f"{x:.1f}" for x in m["load_avg_at_start"]),
                m["date"][:10],
            ]
        ],
    )


def _mergekit_over_mu(r: dict[str, Any]) -> float | None:
    if r.get("mergekit_over_mu") is not None:
        return r["mergekit_over_mu"]
    mk, mu = r.get("mergekit_wall_s"), r.get("mu_wall_s")
    return mk / mu if mk and mu else None


def bench_merge() -> str:
    """Per method (in the catalog's order): mu's merge time at each N, its ratio to the I/O floor and to its own
    floor (the floor's kind), its peak memory, mergekit's time and peak, and mergekit's process wall time over
    mu's (rows from before that field: from their wall times)."""
    from mu.merge import catalog

    rows = _bench()["merge"]["rows"]
    order = {m.name: i for i, m in enumerate(catalog.METHODS)}
    head = [
        "method",
        "N",
        "mu merge s",
        "mu / I/O floor",
        "own floor",
        "mu / own floor",
        "mu peak GB",
        "(N+2)×model GB",
        "mergekit s (peak GB)",
        "mergekit / mu",
    ]
    out = []
    for method in sorted(dict.fromkeys(r["method"] for r in rows), key=lambda m: order.get(m, len(order))):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n"])
        ran = [r["mergekit_wall_s"] is not None for r in mine]
        mk = [
            f"{_num(r['mergekit_wall_s'], 1)} ({_num(r['mergekit_peak_rss_gb'], 1)})" if ok else "—"
            for r, ok in zip(mine, ran)
        ]
        ratio = [_num(_mergekit_over_mu(r), 2) for r in mine]
        out.append(
            [
                f"`{method}`",
                " / ".join(str(r["n"]) for r in mine),
                " / ".join(_num(r["mu_op_s"], 1) for r in mine),
                " / ".join(_num(r["mu_over_io_floor"], 2) for r in mine),
                mine[0].get("floor_kind") or "—",
                " / ".join(_num(r.get("mu_over_own_floor"), 2) for r in mine),
                " / ".join(_num(r["mu_peak_rss_gb"], 1) for r in mine),
                " / ".join(_num(r["peak_limit_gb"], 1) for r in mine),
                " / ".join(mk),
                " / ".join(ratio),
            ]
        )
    return _table(head, out)


def bench_eval() -> str:
    b = _bench()
    ev, en = b["evaluation"], b["ensemble"]
    rows = [
        [
            f"evaluation, {ev['n']} utterances",
            f"`mu.evaluate` {_num(ev['mu_examples_per_s'], 1)} ex/s",
            f"naive loop {_num(ev['naive_examples_per_s'], 1)} ex/s",
            f"{_num(ev['speedup'], 2)}×",
        ],
        [
            f"ensemble K = {en['k']} ({en['method']}), {en['n']} utterances",
            f"from cached logits {_num(en['cached_s'], 2)} s",
            f"recomputing {_num(en['recompute_s'], 1)} s",
            f"{_num(en['speedup'], 0)}×",
        ],
    ]
    return _table(["measurement", "mu", "reference", "ratio"], rows)


def study_cost() -> str:
    s = _json(checkout(BENCH, "study.json"))
    rows = [[unit, _num(sec, 1), _num(sec / 3600, 2)] for unit, sec in s["projection"]["unit_s"].items()]
    parts = [[part, _num(h, 1)] for part, h in s["projection"]["hours"].items()]
    return (
        _table(["projected unit (CPU)", "seconds", "hours"], rows)
        + "\n\n"
        + _table(["projected study part (CPU)", "hours"], parts)
    )


def threads() -> str:
    """Pretraining seconds per step, torch's default threads against ``mu.core.threads.count()``, alone and beside a
    busy process (``python -m bench.threads`` → ``reports/bench/threads.json``)."""
    d = _json(checkout(BENCH, "threads.json"))
    rows = [
        [
            "torch default" if r["variant"] == "before" else "`mu.threads.count()`",
            "yes" if r["competitor"] else "no",
            _num(r["min_s"], 2),
            _num(r["median_s"], 2),
            r["runs"],
            "/".join(map(str, r["torch_threads"])),
        ]
        for r in d["summary"]
    ]
    loads = [r["load_1min_before"] for r in d["rows"]]
    return (
        _table(["threads", "competing busy process", "s/step min", "s/step median", "runs", "torch threads"], rows)
        + f"\n\n{len(d['cpus'])} allowed CPUs; 1-minute load average before the runs {min(loads):.1f}–{max(loads):.1f}."
    )


def make_test() -> str:
    """``make test`` on a fresh clone (``python -m bench.maketest`` → ``reports/bench/make-test.json``)."""
    r, head = _json(checkout(BENCH, "make-test.json")), ["date", "commit", "fresh clone `bash .ci/run` (venv included)"]
    return _table(
        head + ["pytest", "passed / skipped / failed", "workers", "load before"],
        [
            [
                r["date"],
                f"`{r['commit']}`",
                _duration(r["wall_s"]),
                _duration(r["pytest_s"]),
                f"{r['passed']} / {r['skipped']} / {r['failed']}",
                r["workers"],
                r["load_before"],
            ]
        ],
    )


def training() -> str:
    """Fine-tuning and evaluation throughput of notebook 02's mini setting against a floor of the same matmuls,
    before and after, and the projected minutes of notebook 02 per seed (``python -m bench.training`` →
    ``reports/bench/training.json``; its projection is the bench's own, recorded in the JSON)."""
    d = _json(checkout(BENCH, "training.json"))
    runs = [("before", d["before"]), ("after", d["result"])] if d.get("before") else [("this run", d["result"])]
    rows = [
        [
            f"fine-tuning {loc} (epoch of {f['n']:,})",
            name,
            _num(f["examples_per_s"], 0),
            _num(f["real_gflops_per_s"], 1),
            _num(f["floor_gflops_per_s"], 1),
            f"{_num(f['ratio'], 2)}×",
        ]
        for name, r in runs
        for loc, f in r["fit"].items()
    ]
    rows += [
        [
            f"evaluation {split} ({e['n']:,} utterances)",
            name,
            _num(e["examples_per_s"], 0),
            _num(e["real_gflops_per_s"], 1),
            _num(e["floor_gflops_per_s"], 1),
            f"{_num(e['ratio'], 2)}× (N×N row {_num(e['row_ratio'], 2)}×)",
        ]
        for name, r in runs
        for split, e in r["eval"].items()
    ]
    rows.sort(key=lambda row: (not row[0].startswith("fine"), row[0], row[1] != "before"))
    proj = d["projection"]
    nb = proj["notebook"]
    minutes = [
        [name, _num(p["train_s"] / 60, 1), _num(p["nxn_s"] / 60, 1), _num(p["total_s"] / 60, 1)]
        for name, p in proj["runs"].items()
    ]
    before = f" Before: {d['before']['code']}." if d.get("before", {}).get("code") else ""
    return (
        _table(["measurement", "run", "examples/s", "GFLOP/s", "floor GFLOP/s", "ratio to the floor"], rows)
        + "\n\n"
        + _table(
            [
                f"notebook 02 per seed, projected ({nb['locales']} locales × {nb['epochs']} epochs, "
                f"{nb['workers']} processes)",
                "fine-tuning min",
                "dev + test N×N min",
                "total min",
            ],
            minutes,
        )
        + f"\n\nOne torch thread, {d['result']['cpu']}, torch {d['result']['torch']}; GFLOP/s counts the real "
        f"(non-pad) tokens.{before}"
    )


def notebook02() -> str:
    """Notebook 02's wall time per fine-tuning seed on the mini profile, before and after the training changes, from
    the study runs' own timings (``python -m bench.notebook02`` → ``reports/bench/notebook02.json``)."""
    d = _json(checkout(BENCH, "notebook02.json"))
    rows = [
        [
            f"{r['run']} ({r['code']})",
            "main" if r["seed"] is None else r["seed"],
            _num(r["epochs"], 0),
            r["workers"],
            _num(r["minutes"], 1) if r["whole"] else f"{_num(r['minutes'], 1)} (a resume: timed in part)",
            _num(r["fine_tuning_minutes"], 1),
            _num(r["source_epochs_per_minute"], 1),
        ]
        for r in d["rows"]
    ]
    return _table(
        [
            "run",
            "seed",
            "epochs",
            "processes",
            "wall min (one invocation)",
            "of which fine-tuning min",
            "source-epochs per wall min",
        ],
        rows,
    )


TABLES = {
    "notebook02": notebook02,
    "make-test": make_test,
    "training": training,
    "threads": threads,
    "bench-machine": bench_machine,
    "bench-merge": bench_merge,
    "bench-eval": bench_eval,
    "study-cost": study_cost,
}
