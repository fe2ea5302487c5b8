"""``python -m bench.threads``: pretraining seconds per step, alone and beside one busy process, with
torch's default thread count (before mu chose threads itself) and with ``mu.threads.count()`` (after).

Each run is a fresh process pretraining the mini encoder's architecture (``mu.pretrain`` defaults:
hidden 128, 4 layers, batch 64, max_len 64; objective mlm+tlm+align) on a few MASSIVE locales, timed
from the loss log (``seconds`` at step ``warmup`` and at the last step; the first steps are left out).
"before" calls the undecorated ``pretrain`` (torch's default: every allowed core); "after" the public
one. The competitor is ``python -c "while True: pass"``, started 2 s before the run. ``OMP_NUM_THREADS``
is unset for every run. Conditions are interleaved, ``--repeats`` times; min and median are reported
with the load average before each run (the machine may be shared). Writes
``reports/bench/threads.json`` and ``threads.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mu import paths, report, threads

CONDITIONS = [("before", False), ("after", False), ("before", True), ("after", True)]
ARCH = {
    "vocab_size": 8000,
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_len": 64,
    "batch_size": 64,
    "lr": 5e-4,
    "warmup_steps": 10,
    "seed": 0,
}


def one(variant: str, out: Path, tok: Path, locales: list[str], source: str, steps: int, every: int) -> dict:
    """One pretraining run in this process; seconds per step after the first ``every`` steps."""
    from mu import pretrain

    fn = pretrain.pretrain if variant == "after" else pretrain.pretrain.__wrapped__
    fn(
        out,
        objective="mlm+tlm+align",
        locales=locales,
        source=source,
        tokenizer_dir=tok,
        steps=steps,
        checkpoint_every=every,
        dev_per_locale=16,
        **ARCH,
    )
    record = paths.read_json(out / "pretrain.json")
    first, last = record["log"][0], record["log"][-1]

    return {
        "s_per_step": (last["seconds"] - first["seconds"]) / (last["step"] - first["step"]),
        "torch_threads": record["torch_threads"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.threads", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--locales", nargs="+", default=["de-DE", "fr-FR", "es-ES", "sw-KE"])
    p.add_argument("--source", default="massive")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one", nargs=3, metavar=("VARIANT", "OUT", "TOK"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.one[0], Path(a.one[1]), Path(a.one[2]), a.locales, a.source, a.steps, a.warmup)))
        return
    env = {k: v for k, v in os.environ.items() if k != threads.ENV}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        tok = Path(tmp) / "tok"
        for repeat in range(a.repeats):
            for variant, busy in CONDITIONS:
                competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    if busy:
                        time.sleep(2.0)
                    load = os.getloadavg()
                    out = Path(tmp) / f"run-{repeat}-{variant}-{int(busy)}"
                    proc = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "bench.threads",
                            "--one",
                            variant,
                            str(out),
                            str(tok),
                            "--locales",
                            *a.locales,
                            "--source",
                            a.source,
                            "--steps",
                            str(a.steps),
                            "--warmup",
                            str(a.warmup),
                        ],
                        capture_output=True,
                        text=True,
                        env=env,
                    )
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
                if proc.returncode != 0:
                    raise RuntimeError(f"bench.threads run failed:\n{proc.stderr[-3000:]}")
                row = {
                    "repeat": repeat,
                    "variant": variant,
                    "competitor": busy,
                    "load_1min_before": round(load[0], 2),
                    **json.loads(proc.stdout.strip().splitlines()[-1]),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = []
    for variant, busy in CONDITIONS:
        times = [r["s_per_step"] for r in rows if r["variant"] == variant and r["competitor"] == busy]
        summary.append(
            {
                "variant": variant,
                "competitor": busy,
                "runs": len(times),
                "min_s": round(min(times), 3),
                "median_s": round(statistics.median(times), 3),
                "torch_threads": sorted(
                    {r["torch_threads"] for r in rows if r["variant"] == variant and r["competitor"] == busy}
                ),
            }
        )
    result = {
        "args": {**vars(a), "arch": ARCH},
        "cpus": threads.allowed_cpus(),
        "rows": rows,
        "summary": summary,
        "versions": report.versions(),
    }
    out = paths.reports_dir("bench")
    paths.write_json(out / "threads.json", result)
    lines = [
        "| threads | competing busy process | s/step min | s/step median | torch threads |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {'torch default' if s['variant'] == 'before' else 'mu.threads.count()'} | "
        f"{'yes' if s['competitor'] else 'no'} | {s['min_s']:.3f} | {s['median_s']:.3f} | "
        f"{', '.join(map(str, s['torch_threads']))} |"
        for s in summary
    ]
    loads = [r["load_1min_before"] for r in rows]
    lines.append(
        f"\n{a.repeats} runs each, interleaved; {len(threads.allowed_cpus())} allowed CPUs; 1-minute load "
        f"average before the runs {min(loads):.2f}-{max(loads):.2f}."
    )
    paths.write_text(out / "threads.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
