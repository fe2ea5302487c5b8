"""``python -m bench.study``: unit costs of the real study, measured, and the whole study projected from them.

A random-init classifier of xlm-roberta-base size (``bench.sizes`` "base": 278M
parameters) with a tokenizer trained locally on the locale's MASSIVE train text
(the hub's sentencepiece model is unreachable offline; utterance lengths in
tokens are recorded), on the real MASSIVE 1.1 text (``--massive``, the
``<locale>.jsonl.gz`` files). Each unit is measured on a bounded number of
steps or examples, twice at two sizes, so a fixed cost and a per-step /
per-example cost are separated; full-size units are *projected* from them:

* fine-tuning one locale: 11,514 utterances × 3 epochs, batch 32, seq ≤ 128 (``mu.train.fit``);
* one N×N cell: ``mu.evaluate.logits`` on the 2,974 test utterances;
* Fisher (256 examples, batch 1) and RegMean Grams (256, batch 8) of one source;
* one merge of 5 sources per method: the ``make bench`` rows (``reports/bench/results.json``, N = 5);
* one iterative cycle: 5 sources × ``merge_frequency`` epochs + one linear merge + one evaluation.

The device is the one torch sees (a GPU when there is one). Writes
``reports/bench/study.json`` and ``study.md`` (measured and projected figures
kept apart).
"""

from __future__ import annotations

import argparse
import gzip
import math
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import sizes, summary
from mu import data, paths, report

LOCALE = "sw-KE"
TRAIN_UTTERANCES, TEST_UTTERANCES = 11514, 2974  # MASSIVE 1.1 per locale
STUDY = {
    "locales": 51,
    "epochs": 3,
    "batch_size": 32,
    "max_seq_length": 128,
    "sources": 5,
    "merge_modes": 6,  # similarity, average, transfer, average-of-transfer, oracle, average-of-oracle
    "iterative_epochs": 15,
    "merge_frequency": 3,
    "fisher_examples": 256,
    "regmean_examples": 256,
}


def write_locale(massive: Path, locale: str, out: Path, test_limit: int | None = None) -> Path:
    """``<out>/<locale>.jsonl`` from MASSIVE's ``<locale>.jsonl.gz`` (its test split cut to ``test_limit``)."""
    src = massive / f"{locale}.jsonl.gz"
    if not src.is_file():
        raise ValueError(f"no MASSIVE file {src}; --massive must be the folder of <locale>.jsonl.gz files")
    out.mkdir(parents=True, exist_ok=True)
    kept, tests = [], 0
    with gzip.open(src, "rt", encoding="utf-8") as f:
        for line in f:
            if '"partition": "test"' in line:
                tests += 1
                if test_limit is not None and tests > test_limit:
                    continue
            kept.append(line)
    paths.write_text(out / f"{locale}.jsonl", "".join(kept))
    return out


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _two_point(small: int, large: int, measure: Callable[[int], float]) -> dict[str, float]:
    """Seconds at two sizes → per-unit slope and fixed cost (both measured)."""
    t_small, t_large = measure(small), measure(large)
    per = (t_large - t_small) / (large - small)
    return {
        "sizes": [small, large],
        "seconds": [t_small, t_large],
        "per_unit_s": per,
        "fixed_s": max(t_small - per * small, 0.0),
    }


def measure(
    massive: Path, workdir: Path, *, steps: tuple[int, int], eval_sizes: tuple[int, int], stat_sizes: tuple[int, int]
) -> dict[str, Any]:
    from transformers import XLMRobertaForSequenceClassification

    from mu import bases, evaluate, models, train
    from mu.merge import fisher_diagonal, regmean_grams

    folder = write_locale(massive, LOCALE, workdir / "massive")
    split = data.load_split(LOCALE, "train", folder)
    tokenizer = bases.train_tokenizer(list(split["text"]), 8000)
    lengths = [len(x) for x in tokenizer(list(split["text"][:2000]), truncation=True, max_length=128)["input_ids"]]
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(sizes.config("base"))
    model_dir = models.save_classifier(model, tokenizer, workdir / "model")
    out: dict[str, Any] = {
        "locale": LOCALE,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "tokens_per_utterance": {"mean": sum(lengths) / len(lengths), "max": max(lengths)},
        "train_utterances_available": len(split),
    }

    def fit(n_steps: int) -> float:
        subset = split.select(range(n_steps * STUDY["batch_size"]))
        return _timed(
            lambda: train.fit(
                model,
                tokenizer,
                subset,
                epochs=1,
                batch_size=STUDY["batch_size"],
                lr=2e-5,
                max_seq_length=STUDY["max_seq_length"],
                seed=42,
                output_dir=workdir / "trainer",
            )
        )

    out["train_step"] = _two_point(*steps, fit)
    models.save_classifier(model, tokenizer, model_dir)

    def evaluate_n(n: int) -> float:
        sub = write_locale(massive, LOCALE, workdir / f"test-{n}", test_limit=n)
        return _timed(
            lambda: evaluate.logits(
                model_dir, LOCALE, "test", data=sub, batch_size=32, max_seq_length=STUDY["max_seq_length"]
            )
        )

    out["eval_example"] = _two_point(*eval_sizes, evaluate_n)
    out["fisher_example"] = _two_point(
        *stat_sizes,
        lambda n: _timed(
            lambda: fisher_diagonal(model, tokenizer, split, num_examples=n, batch_size=1, max_seq_length=128)
        ),
    )
    out["regmean_example"] = _two_point(
        *[8 * s for s in stat_sizes],
        lambda n: _timed(
            lambda: regmean_grams(model, tokenizer, split, num_examples=n, batch_size=8, max_seq_length=128)
        ),
    )
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def merges_at_5(bench_results: Path) -> dict[str, float]:
    """mu's in-process time of one 5-source merge per method, from the bench's results (measured there)."""
    if not bench_results.is_file():
        return {}
    rows = paths.read_json(bench_results)["merge"]["rows"]
    return {r["method"]: r["mu_op_s"] for r in rows if r["n"] == 5 and r["mu_op_s"] is not None}


def project(units: dict[str, Any], merge_s: dict[str, float]) -> dict[str, Any]:
    """The whole study in hours from the unit costs (every figure here is projected)."""
    s = STUDY
    steps_per_epoch = math.ceil(TRAIN_UTTERANCES / s["batch_size"])
    step, ev = units["train_step"]["per_unit_s"], units["eval_example"]
    eval_s = ev["fixed_s"] + TEST_UTTERANCES * ev["per_unit_s"]
    train_s = steps_per_epoch * s["epochs"] * step
    fisher_s = s["fisher_examples"] * units["fisher_example"]["per_unit_s"]
    regmean_s = s["regmean_examples"] * units["regmean_example"]["per_unit_s"]
    data_free = {m: t for m, t in merge_s.items()}
    linear = merge_s.get("linear")
    per_method = dict(data_free)
    if linear is not None:  # the data-dependent methods: one weighted pass like linear, plus statistics
        per_method.update({m: linear for m in ("fisher_simple", "fisher_dataset", "regmean") if m not in per_method})
    merges_s = sum(s["locales"] * s["merge_modes"] * (t + eval_s) for t in per_method.values())
    stats_s = s["locales"] * (fisher_s + regmean_s)
    cycles = s["iterative_epochs"] // s["merge_frequency"]
    cycle_s = s["sources"] * s["merge_frequency"] * steps_per_epoch * step + (linear or 0.0) + eval_s
    parts = {
        "train 51 locales": s["locales"] * train_s,
        "N×N 51×51 cells": s["locales"] ** 2 * eval_s,
        f"merges: 51 targets × {len(per_method)} methods × {s['merge_modes']} weightings, each evaluated": merges_s,
        "Fisher + RegMean statistics, 51 sources": stats_s,
        f"iterative: 51 targets × {cycles} cycles": s["locales"] * cycles * cycle_s,
        "ensembles (from cached logits)": 0.0,
    }
    return {
        "unit_s": {
            "fine-tune one locale": train_s,
            "one N×N cell": eval_s,
            "Fisher, one source": fisher_s,
            "RegMean Grams, one source": regmean_s,
            "one iterative cycle": cycle_s,
            **{f"merge of 5 sources: {m}": t for m, t in data_free.items()},
        },
        "hours": {k: v / 3600 for k, v in parts.items()},
        "total_hours": sum(parts.values()) / 3600,
        "methods_counted": sorted(per_method),
        "assumptions": dict(STUDY),
    }


def markdown(results: dict[str, Any]) -> str:
    u, p, m = results["units"], results["projection"], results["machine"]
    where = f"GPU {m['gpu']}" if m["gpu"] else f"CPU only ({m['cpu_count']} cores, {m['cpu_model']})"
    lines = [
        f"Study cost on {where}; {m['date']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}.",
        "",
        "| measured unit | sizes | seconds | per unit s | fixed s |",
        "|---|---|---|---|---|",
    ]
    for name, key in (
        ("fine-tune step (batch 32)", "train_step"),
        ("evaluation, per utterance", "eval_example"),
        ("Fisher, per example (batch 1)", "fisher_example"),
        ("RegMean Grams, per example (batch 8)", "regmean_example"),
    ):
        r = u[key]
        lines.append(
            f"| {name} | {r['sizes'][0]}, {r['sizes'][1]} | {r['seconds'][0]:.1f}, {r['seconds'][1]:.1f} | "
            f"{r['per_unit_s']:.3f} | {r['fixed_s']:.1f} |"
        )
    lines += [
        "",
        f"Utterances: {u['tokens_per_utterance']['mean']:.1f} tokens on average (local tokenizer). "
        "Merges of 5 sources: `make bench` (reports/bench/results.json), measured there.",
        "",
        "| projected unit | seconds | hours |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:,.1f} | {v / 3600:.2f} |" for k, v in p["unit_s"].items()]
    lines += ["", "| projected study part | hours |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in p["hours"].items()]
    lines += [
        f"| **total** | **{p['total_hours']:.1f}** |",
        "",
        "Measured: the four units above (each at two sizes) and the merges (make bench). Projected: everything "
        "in the last two tables (units × the study's counts; slerp merges exactly two sources, so it is not "
        "counted; ensembles reuse the N×N logits).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--massive", help="folder of MASSIVE 1.1 <locale>.jsonl.gz files (required unless --project-only)")
    ap.add_argument("--steps", type=int, nargs=2, default=[2, 5], help="optimiser steps of the two fits")
    ap.add_argument("--eval-sizes", type=int, nargs=2, default=[32, 160], help="test utterances of two evaluations")
    ap.add_argument(
        "--stat-sizes", type=int, nargs=2, default=[4, 12], help="Fisher examples of two runs (RegMean: 8x these)"
    )
    ap.add_argument(
        "--project-only",
        action="store_true",
        help="keep the measured units of study.json; redo the projection (e.g. after a new make bench)",
    )
    a = ap.parse_args(argv)
    out = paths.reports_dir("bench", "study.json")
    if a.project_only:
        results = paths.read_json(out)
        results["projection"] = project(results["units"], merges_at_5(paths.reports_dir("bench", "results.json")))
        paths.write_json(out, results)
        paths.write_text(out.with_suffix(".md"), markdown(results))
        print(markdown(results))
        return
    if not a.massive:
        ap.error("--massive is required (the folder of MASSIVE 1.1 <locale>.jsonl.gz files)")
    machine = summary.machine()
    scratch = paths.cache_dir("bench")
    scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=scratch, prefix="study-"))
    try:
        units = measure(
            Path(a.massive),
            workdir,
            steps=tuple(a.steps),
            eval_sizes=tuple(a.eval_sizes),
            stat_sizes=tuple(a.stat_sizes),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {
        "machine": machine,
        "units": units,
        "projection": project(units, merges_at_5(paths.reports_dir("bench", "results.json"))),
        "settings": {
            "massive": a.massive,
            "steps": a.steps,
            "eval_sizes": a.eval_sizes,
            "stat_sizes": a.stat_sizes,
            "model": "xlm-roberta-base size, random init",
        },
        "versions": report.versions(),
    }
    paths.write_json(out, results)
    paths.write_text(out.with_suffix(".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
