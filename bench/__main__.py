"""``python -m bench`` (``make bench``): run the benchmark, write reports/bench/results.json, print the table.

Full run (the official figures; ~1-1.5 h on 2 cores, ~14 GB of checkpoints
generated once under cache/bench/): base-size merges N = 2, 5, 10, evaluation on
250-2000 utterances. ``--quick``: small models, for trying the harness
(results-quick.json).
"""

from __future__ import annotations

import argparse

from bench import merging, run

FULL = {
    "merge_size": "base",
    "eval_size": "eval",
    "test_sizes": [250, 500, 1000, 2000],
    "ensemble_size": 500,
    "budget_s": 7200.0,
}  # room for every data-free method at N = 2, 5, 10, and mergekit beside the ones it has
QUICK = {
    "merge_size": "quick",
    "eval_size": "quick-eval",
    "test_sizes": [100, 200, 400],
    "ensemble_size": 200,
    "budget_s": 300.0,
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small models (results-quick.json)")
    p.add_argument("--ns", type=int, nargs="+", default=[2, 5, 10], help="numbers of merged models (linear)")
    p.add_argument(
        "--ties-ns",
        type=int,
        nargs="+",
        default=[2, 5, 10],
        help="numbers of merged models for ties and the other data-free methods (slerp: 2)",
    )
    p.add_argument(
        "--methods",
        nargs="*",
        default=list(merging.METHODS[2:]),
        help="data-free methods measured after linear and ties (beside mergekit where it has them)",
    )
    p.add_argument(
        "--max-rss-gb",
        type=float,
        default=14.0,
        help="no measured process may pass this peak RSS (killed and recorded); merges predicted "
        "to pass it are skipped",
    )
    p.add_argument("--device", help="where mu merges: cpu, cuda (default: CUDA when available)")
    p.add_argument("--k", type=int, default=5, help="ensemble sources")
    p.add_argument("--test-sizes", type=int, nargs="+", help="evaluation test-set sizes (largest: mu vs naive)")
    p.add_argument("--budget-s", type=float, help="time budget; merges predicted to overrun it are skipped")
    p.add_argument("--repeats", type=int, default=2, help="runs per tool of each linear merge (fastest kept)")
    p.add_argument("--no-cold-read", action="store_true", help="do not try to drop the page cache")
    p.add_argument(
        "--update",
        nargs="+",
        metavar="METHOD",
        help="measure only these methods again (N: --ties-ns) and replace their rows in the existing "
        "results, set against that run's stored floor",
    )
    a = p.parse_args(argv)
    preset = QUICK if a.quick else FULL
    if a.update:
        updated = run.update(
            a.update, ns=a.ties_ns, out=run.results_path(a.quick), max_rss_gb=a.max_rss_gb, device=a.device
        )
        print(f"updated {a.update} in {run.results_path(a.quick)} ({len(updated['merge']['rows'])} merge rows)")
        return
    results = run.run(
        merge_size=preset["merge_size"],
        eval_size=preset["eval_size"],
        ns=a.ns,
        ties_ns=a.ties_ns,
        test_sizes=a.test_sizes or preset["test_sizes"],
        k=a.k,
        ensemble_size=preset["ensemble_size"],
        budget_s=a.budget_s or preset["budget_s"],
        out=run.results_path(a.quick),
        repeats=a.repeats,
        cold_read=not a.no_cold_read,
        other_methods=tuple(a.methods),
        max_rss_gb=a.max_rss_gb,
        device=a.device,
    )
    from bench import summary

    print(summary.markdown(results))
    print(f"written: {run.results_path(a.quick)} and .md ({results['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
