"""What a finished iterative run (``mu.combine.iterative``) is compared with, and at what cost (notebook 05).

* Like for like: the iterative sources train as many epochs, at the same lr, as the sources of the
  one-shot merge (notebook 02): ``like_for_like`` reads them from those sources' ``training_args.json``
  (whatever chose 02's recipe, ``mu.learn.tuning`` included), so notebook 05's ``max_epochs`` / ``lr`` left at
  None are equal source-epochs by construction; a value given that differs is noted in the results.
* Cost: ``costs`` puts each run's wall seconds and training examples seen beside joint training on the
  same sources' data (``mu.combine.joint``), the one-shot merge (its sources' fine-tuning in 02 plus the
  merge) and the ensembles of the same sources (their fine-tuning; inference not timed).
* A declared subset of targets (``subset``, ``ITERATIVE_EVERY``) for when 05 over every target does
  not fit the study's budget: fixed before any result, by locale order only.
* The run's log as frames (``log_frame``, ``merges_frame``), the runs side by side (``compare``), the
  report rows and inputs of notebook 05, and notebook 03's one-shot row of the same sources.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from mu.analysis import aggregate
from mu.core import notes, paths, protocol, report
from mu.corpus import data as mu_data
from mu.langs import locales
from mu.learn import models

# The declared subset of notebook 05's targets when the budget needs one: every third locale in
# mu.langs.locales.LOCALES order (alphabetical), then less the declared tuning targets; 51 locales -> 17 -> 15 targets.
ITERATIVE_EVERY = 3


def subset(
    candidates: Sequence[str] = locales.LOCALES, *, exclude: Sequence[str] = (), every: int = ITERATIVE_EVERY
) -> list[str]:
    """Every ``every``-th locale of ``candidates`` (in that order, from the first), less ``exclude`` (the study's
    declared subset, ``mu.experiment.study.SUBSET``: the 51 locales alphabetically, every third, less the tuning targets)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    locales.check_locales(list(candidates))
    locales.check_locales(list(exclude))
    return [loc for loc in list(candidates)[::every] if loc not in set(exclude)]


def _training_args(models_dir: str | os.PathLike, locale: str) -> dict[str, Any]:
    folder = paths.resolve(models.source_path(locale, models_dir))
    file = folder / "training_args.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} does not exist: the one-shot source {locale} was not fine-tuned by notebook "
            "02 here; run 02 first, or give max_epochs and lr explicitly"
        )
    return paths.read_json(file)


def source_recipe(models_dir: str | os.PathLike, sources: Sequence[str]) -> dict[str, Any]:
    """The fine-tuning recipe (``epochs``, ``lr``, ``batch_size``) shared by the one-shot ``sources``
    in ``models_dir``, from their ``training_args.json``; sources trained differently are an error."""
    recipes = {
        loc: {k: _training_args(models_dir, loc)["params"][k] for k in ("epochs", "lr", "batch_size")}
        for loc in sources
    }
    distinct = {tuple(sorted(r.items())) for r in recipes.values()}
    if len(distinct) != 1:
        raise ValueError(f"the one-shot sources were fine-tuned with different recipes: {recipes}")
    return next(iter(recipes.values()))


def like_for_like(
    profile: str, models_dir: str | os.PathLike, sources: Sequence[str], *, max_epochs: int | None, lr: float | None
) -> tuple[int, float]:
    """(max_epochs, lr) of the iterative run: None takes the one-shot sources' own (equal source-epochs,
    ``source_recipe``); a given value that differs is kept and noted (``mu.core.notes``: not like for like).
    Both are recorded in the protocol (``05.max_epochs``, ``05.lr``) as derived from notebook 02."""
    if (
        max_epochs is not None
        and lr is not None
        and not all(
            (paths.resolve(models.source_path(loc, models_dir)) / "training_args.json").is_file() for loc in sources
        )
    ):
        notes.warn(
            f"05: max_epochs={max_epochs} and lr={lr} given, not checked against the one-shot sources "
            "(notebook 02 has not trained them here)"
        )
        return int(max_epochs), float(lr)
    recipe = source_recipe(models_dir, sources)
    epochs = recipe["epochs"] if max_epochs is None else max_epochs
    if float(epochs) != int(epochs) or int(epochs) < 1:
        raise ValueError(f"iterative training needs a whole number of epochs >= 1, got {epochs}")
    epochs, lr = int(epochs), float(recipe["lr"] if lr is None else lr)
    if (epochs, lr) != (recipe["epochs"], recipe["lr"]):
        notes.warn(
            f"05 is not like for like: the iterative sources train {epochs} epochs at lr {lr}, the one-shot "
            f"sources (02) {recipe['epochs']} epochs at lr {recipe['lr']}"
        )
    for knob, v, one_shot in (("max_epochs", epochs, recipe["epochs"]), ("lr", lr, recipe["lr"])):
        protocol.record(
            profile,
            f"05.{knob}",
            v,
            chosen_by="declared",
            data="none (taken from notebook 02's sources)",
            note="equal to the one-shot sources' (like for like)"
            if v == one_shot
            else f"differs from the one-shot sources' {one_shot}",
        )
    return epochs, lr


def _wall(run: Mapping[str, Any]) -> float | None:
    log = run.get("log")
    return round(sum(e["elapsed_s"] for e in log), 1) if log else None


def _iterative_examples(run: Mapping[str, Any]) -> int | None:
    """Training examples an iterative run saw: per source, its train split's size × the epochs it trained."""
    data = (run.get("params") or {}).get("data")
    if data is None or not run.get("log"):
        return None
    epochs: dict[str, int] = {}
    for e in run["log"]:
        for loc, s in e["sources"].items():
            epochs[loc] = epochs.get(loc, 0) + len(s["dev_accuracy_per_epoch"])
    return sum(len(mu_data.load_split(loc, "train", data)) * n for loc, n in epochs.items())


def costs(
    runs: Mapping[str, Mapping[str, Any] | None],
    merge_algorithm: str,
    mode: str,
    models_dir: str | os.PathLike,
    sources: Sequence[str],
    one_shot: Mapping[str, Any] | None = None,
    joint: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Seconds per target and training examples seen of each system built from ``sources``' data or models:
    each iterative run (``{name: result}``; its cycles' wall time: training, merges, the merged model's
    evaluation), each joint model (``joint``: ``mu.combine.joint.run``'s results; its one fit), the one-shot
    merge (the sources' fine-tuning in notebook 02, ``train_runtime`` of their ``training_args.json``, plus the
    merge of ``one_shot``, notebook 03's row, when there is one) and the ensembles of those sources (their
    fine-tuning; inference is not timed). ``examples``: training examples seen (None when not recorded), the
    budget joint and iterative training are matched on. Measured on whatever machine and load each stage ran under."""
    args = [_training_args(models_dir, loc) for loc in sources]
    runtimes = [a["log_history"][-1].get("train_runtime") for a in args]
    train_s = None if None in runtimes else round(sum(runtimes), 1)
    seen = [a["params"].get("n_train", 0) * a["params"]["epochs"] for a in args]
    one_shot_examples = int(sum(seen)) if all(seen) else None
    out = [
        {
            "system": f"{name}/{merge_algorithm}/{mode}",
            "seconds": _wall(r),
            "train_s": _wall(r),
            "merge_s": None,
            "examples": _iterative_examples(r),
            "what": "iterative: source training, merges and the merged model's evaluation per cycle",
        }
        for name, r in runs.items()
        if r is not None
    ]
    out += [
        {
            "system": system,
            "seconds": r["train_s"],
            "train_s": r["train_s"],
            "merge_s": None,
            "examples": r["examples_seen"],
            "what": f"joint: one model on {len(r['sources'])} sources' labeled data ({r['params']['sampling']})",
        }
        for system, r in (joint or {}).items()
    ]
    merge_s = None
    if one_shot is not None:
        merge_s = one_shot.get("seconds")
        details = paths.resolve(one_shot.get("model") or "") / "merge_details.json"
        if merge_s is None and one_shot.get("model") and details.is_file():
            merge_s = round(paths.read_json(details)["elapsed_s"], 2)
    out.append(
        {
            "system": f"merge/{merge_algorithm}/{mode}",
            "train_s": train_s,
            "seconds": None if train_s is None else train_s + (merge_s or 0.0),
            "merge_s": merge_s,
            "examples": one_shot_examples,
            "what": "one-shot: the sources' fine-tuning (02) + the merge (03)",
        }
    )
    out.append(
        {
            "system": f"ensemble/*/{mode}",
            "seconds": train_s,
            "train_s": train_s,
            "merge_s": None,
            "examples": one_shot_examples,
            "what": "the same sources' fine-tuning (02); inference not timed",
        }
    )
    return pd.DataFrame(out, dtype=object)  # None stays None (not NaN) in the JSON record


def log_frame(log: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The per-cycle log as a long DataFrame: cycle, epoch, series, metric, value."""
    rows = []
    for e in log:
        epoch = e["epochs"][1]
        for loc, s in e["sources"].items():
            rows.append(
                {
                    "cycle": e["cycle"],
                    "epoch": epoch,
                    "series": f"{loc} (source, own dev)",
                    "metric": "accuracy",
                    "value": s["dev_accuracy"],
                }
            )
            rows.append(
                {
                    "cycle": e["cycle"],
                    "epoch": epoch,
                    "series": f"{loc} (source)",
                    "metric": "train_loss",
                    "value": s["train_loss"],
                }
            )
        for split, m in e["merged"].items():
            rows.append(
                {
                    "cycle": e["cycle"],
                    "epoch": epoch,
                    "series": f"merged (target {split})",
                    "metric": "accuracy",
                    "value": m["accuracy"],
                }
            )
    return pd.DataFrame(rows, columns=["cycle", "epoch", "series", "metric", "value"])


def merges_frame(log: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per merge: cycle, epoch, reason, detail, the merged model's target dev / test accuracy."""
    return pd.DataFrame(
        [
            {
                "cycle": e["cycle"],
                "epoch": e["epochs"][1],
                "reason": e["merge_reason"],
                "detail": e["merge_detail"],
                "target_dev": e["merged"]["dev"]["accuracy"],
                "target_test": e["merged"]["test"]["accuracy"],
            }
            for e in log
        ]
    )


_COMPARED = ("accuracy", "macro_f1", "epochs", "merges", "source_epochs", "optimizer_steps", "fits", "wall_s")
_COMPARED += ("merge_epochs",)


def compare(results: Mapping[str, Mapping[str, Any] | None]) -> pd.DataFrame:
    """Runs side by side (``{name: run(...) result}``; a None run, not made, is left out): test accuracy
    and training cost (epochs, merges, source-epochs and optimiser steps trained, ``fit`` calls, wall
    seconds of the cycles)."""
    rows = []
    for name, r in results.items():
        if r is None:
            continue
        log = r["log"]
        rows.append(
            {
                "run": name,
                "accuracy": r["test"]["accuracy"],
                "macro_f1": r["test"]["macro_f1"],
                "epochs": log[-1]["epochs"][1],
                "merges": len(log),
                "source_epochs": sum(len(s["dev_accuracy_per_epoch"]) for e in log for s in e["sources"].values()),
                "optimizer_steps": sum(s["global_step"] for e in log for s in e["sources"].values()),
                "fits": sum(len(s["seeds"]) for e in log for s in e["sources"].values()),
                "wall_s": _wall(r),
                "merge_epochs": [e["epochs"][1] for e in log],
            }
        )
    return pd.DataFrame(rows, columns=["run", *_COMPARED]).set_index("run")


def report_rows(
    runs: Mapping[str, Mapping[str, Any]], merge_algorithm: str, mode: str, weights: Mapping[str, float]
) -> list[dict[str, Any]]:
    """One ``mu.core.report`` row per run ``{"iterative": result, "iterative-adaptive": result}`` (None: not
    made, no row): ``<name>/<merge_algorithm>/<mode>`` in the ``iterative`` family, with its test scores,
    sources and wall ``seconds``."""
    return [
        {
            "system": f"{name}/{merge_algorithm}/{mode}",
            "family": "iterative",
            **run["test"],
            "sources": dict(weights),
            "seconds": _wall(run),
        }
        for name, run in runs.items()
        if run is not None
    ]


def inputs(base: str | os.PathLike, runs: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """``inputs`` of notebook 05's record: the base and each made run's merged model (``{name: result}``)."""
    return {
        "base_model": report.describe_input(base),
        **{name: report.describe_input(r["merged"]) for name, r in runs.items() if r is not None},
    }


def one_shot_row(
    target_lang: str, merge_algorithm: str, mode: str, profile: str, sources: Mapping[str, float]
) -> dict[str, Any] | None:
    """Notebook 03's one-shot merge of the same sources for this target, method and mode
    (row ``merge/<method>/<mode>`` whose sources are ``sources``' locales), with its record's
    path; None when notebook 03 has not produced it for this profile."""
    system = f"merge/{merge_algorithm}/{mode}"
    for rec in aggregate.load_records(profile):
        if rec["notebook"] == "03_merging" and rec["target"] == target_lang:
            for row in rec["rows"]:
                if row["system"] == system and set(row.get("sources") or {}) == set(sources):
                    return {**row, "record": rec["path"]}
    return None
