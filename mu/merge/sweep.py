"""Every merge method on one target under the same weightings (notebook 03's ``compare_methods``).

``compare_methods`` is ``"all"`` (every method of ``mu.merge.METHODS`` that notebook 03 can run beside
its main ``method``: the data-free ones and ``fisher_dataset`` / ``regmean``, whose statistics come
from each source's own train split; not the ``adapted`` family, which has its own cells), a list of
method names, or ``[]`` (none). Each method runs with its defaults (``mu.merge.knobs``): nothing is
tuned, least of all on test labels. A method defined for an exact number of sources
(``mu.merge.EXACT_SOURCES``: ``slerp`` merges two) is left out of a weighting with another number,
and the table says so. Each method's rows become its own record, named as notebook 03 names a
method's record (``<label>-<mode>``), so its systems keep the family naming ``merge/<label>/<weighting>``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mu.core import report
from mu.merge import catalog, registry
from mu.merge.evaluation import evaluate_merges

ALL = "all"


def comparable() -> list[str]:
    """The methods ``compare_methods="all"`` runs: every registered one but the adapted family."""
    return [m for m in registry.METHODS if m not in catalog.ADAPTIVE]


def check_methods(compare_methods: str | Sequence[str]) -> list[str]:
    """``"all"``, a list of method names (no repeats) or ``[]`` → the methods to run; anything else is a
    ValueError naming the valid values."""
    valid = comparable()
    if isinstance(compare_methods, str):
        if compare_methods != ALL:
            raise ValueError(f"compare_methods={compare_methods!r}: valid are {ALL!r}, [] or a list of {valid}")
        return valid
    names = list(compare_methods)
    bad = [m for m in names if m not in valid]
    if bad or len(set(names)) != len(names):
        raise ValueError(
            f"compare_methods: {bad or 'repeated names'} in {names}; valid are {ALL!r}, [] or a "
            f"list of {valid}"
            + (" (adamerging runs in its own cells: --set adamerging=task)" if "adamerging" in bad else "")
        )
    return names


def not_applicable(method: str, weights: Mapping[str, float]) -> str | None:
    """Why ``method`` cannot merge these sources, or None."""
    exact = catalog.EXACT_SOURCES.get(method)
    if exact is not None and len(weights) != exact:
        return f"{method} merges exactly {exact} sources; this weighting has {len(weights)}"
    return None


def compare(
    compare_methods: str | Sequence[str],
    target: str,
    weightings: Mapping[str, Mapping[str, float]],
    *,
    mode: str,
    skip: Sequence[str] = (),
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike | None,
    keep_merged: bool = True,
    **merge_kw: Any,
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Merge ``target``'s sources under every weighting with each method of ``compare_methods`` (at its
    defaults) and evaluate each merge on the target; ``skip``: merge labels already run (notebook 03's main
    ``method`` with its knobs, ``mu.merge.label``), so a method is skipped only if it ran at its defaults.

    ``mode`` (the main weighting) names the records; ``merge_kw`` goes to ``evaluate_merges`` (seed,
    statistics sizes, batch_size, max_seq_length; never a method's knobs). ``keep_merged=False`` deletes
    each merged model once evaluated (its sha256 stays in the record). Returns a table (one row per
    method and weighting: accuracy, or why not run; seconds per method) and ``{record name: {"rows",
    "results", "inputs"}}`` for ``mu.core.report.save``.
    """
    methods = [m for m in check_methods(compare_methods) if registry.label(m) not in set(skip)]
    table, records = [], {}
    for method in methods:
        run = {w: dict(weights) for w, weights in weightings.items() if not_applicable(method, weights) is None}
        table += [
            {
                "method": method,
                "weighting": w,
                "system": None,
                "accuracy": None,
                "seconds": None,
                "note": not_applicable(method, weights),
            }
            for w, weights in weightings.items()
            if w not in run
        ]
        if not run:
            continue
        started = time.perf_counter()
        rows = evaluate_merges(
            method,
            target,
            run,
            models_dir=models_dir,
            data=data,
            base_model=base_model,
            keep_merged=keep_merged,
            **merge_kw,
        )
        seconds = time.perf_counter() - started
        table += [
            {
                "method": method,
                "weighting": w,
                "system": r["system"],
                "accuracy": r["accuracy"],
                "seconds": seconds,
                "note": "",
            }
            for w, r in zip(run, rows)
        ]
        name = f"{registry.label(method)}-{mode}"
        records[name] = {
            "rows": rows,
            "results": {
                "accuracy": {r["system"]: r["accuracy"] for r in rows},
                "knobs": {},
                "seconds": seconds,
                "run_by": "compare_methods",
                "not_applicable": {
                    w: not_applicable(method, weights) for w, weights in weightings.items() if w not in run
                },
            },
            "inputs": {
                r["system"]: {"path": r["model"], "sha256": r["model_sha256"]}
                if "model_sha256" in r
                else report.describe_input(r["model"])
                for r in rows
            },
        }
    return pd.DataFrame(table, columns=["method", "weighting", "system", "accuracy", "seconds", "note"]), records
