"""The fine-tuning recipe, chosen on the sources' own dev splits (never a test split).

``finetune_grid`` fine-tunes the profile's base on each probe locale's train split for every
(epochs, lr) of a grid and measures accuracy on that locale's *dev* split; ``choose`` takes the
recipe with the best mean dev accuracy over the probe locales (ties: fewer epochs, then the smaller
lr); ``tune_finetuning`` does both, records the choice in the protocol (``mu.core.protocol``, knobs
``02.epochs`` / ``02.lr``, ``chosen_by="dev"``) and caches the grid, so a rerun measures nothing.

    python -m mu tune --profile mini --locales en-US hi-IN sw-KE --epochs 3 5 8 --lrs 5e-4 1e-3 2e-3
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mu.core import paths, protocol, report, threads
from mu.corpus import data as mu_data
from mu.learn import evaluate, models, train


def _fit_one(
    job: tuple[str, float, float], base: Path, data: str | os.PathLike, batch_size: int, max_seq_length: int, seed: int
) -> dict[str, Any]:
    """Fine-tune ``base`` on one locale's train split with one (epochs, lr) and measure its dev accuracy."""
    loc, epochs, lr = job
    t0 = time.perf_counter()
    train_ds, dev_ds = mu_data.load_split(loc, "train", data), mu_data.load_split(loc, "dev", data)
    model, tokenizer = models.load_classifier(base)
    scratch = paths.cache_dir("train")
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"tune-{loc}.", dir=scratch) as tmp:
        train.fit(
            model,
            tokenizer,
            train_ds,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_seq_length=max_seq_length,
            seed=seed,
            output_dir=tmp,
        )
    with models.cpu_threads(model):
        dev = mu_data.columns(dev_ds)
        logits = evaluate.forward(model, tokenizer, dev["text"], batch_size=64, max_seq_length=max_seq_length)
    acc = float(np.mean(logits.argmax(-1) == np.asarray(dev["label"])))
    return {
        "locale": loc,
        "epochs": epochs,
        "lr": lr,
        "dev_accuracy": acc,
        "n_dev": len(dev_ds),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def finetune_grid(
    locales: Sequence[str],
    *,
    base_model: str | os.PathLike,
    data: str | os.PathLike,
    epochs_grid: Sequence[float],
    lr_grid: Sequence[float],
    batch_size: int,
    max_seq_length: int,
    seed: int,
    workers: int = 1,
) -> pd.DataFrame:
    """One row per (locale, epochs, lr): ``dev_accuracy`` of ``base_model`` fine-tuned on the locale's
    train split with that recipe, and the seconds it took. Models are evaluated, not saved.
    ``workers`` > 1: that many processes of one torch thread each (on a 2-core CPU two one-thread
    fits finish sooner than one fit on two threads); the rows keep the grid's order."""
    base = paths.resolve(base_model)
    models.check_model_dir(base)
    jobs = _jobs(locales, epochs_grid, lr_grid)
    fit = functools.partial(
        _fit_one, base=base, data=data, batch_size=batch_size, max_seq_length=max_seq_length, seed=seed
    )
    return pd.DataFrame(threads.map_processes(fit, jobs, workers))


def _jobs(locales: Sequence[str], epochs_grid: Sequence[float], lr_grid: Sequence[float]) -> list[tuple]:
    return [(loc, epochs, lr) for loc in locales for epochs in epochs_grid for lr in lr_grid]


def _cached_grid(
    cache: Path, args: dict[str, Any], locales: Sequence[str], epochs_grid: Sequence[float], lr_grid: Sequence[float]
) -> pd.DataFrame:
    """The cached rows this grid shares with the last one measured under the same base, data and recipe
    (everything but the grids equal): a widened grid measures only its new cells, and a narrowed one
    keeps the cells it still names."""
    if not cache.is_file():
        return pd.DataFrame()
    saved = paths.read_json(cache)
    fixed = ("epochs_grid", "lr_grid", "locales")
    if {k: v for k, v in saved.get("args", {}).items() if k not in fixed} != {
        k: v for k, v in args.items() if k not in fixed
    }:
        return pd.DataFrame()
    rows = pd.DataFrame(saved["grid"])
    keep = rows["locale"].isin(list(locales)) & rows["epochs"].isin(list(epochs_grid)) & rows["lr"].isin(list(lr_grid))
    return rows[keep].reset_index(drop=True)


RULES = {
    "best": "the highest mean dev accuracy over the probe locales",
    "one-se": "the fewest epochs whose mean dev accuracy is within one standard error (binomial, over all the "
    "probe's dev utterances) of the best cell's; among those the most accurate",
}


def choose(grid: pd.DataFrame, rule: str = "best") -> dict[str, Any]:
    """The recipe by ``rule`` (``RULES``): ``best``, the highest mean dev accuracy over locales (ties: fewer
    epochs, then smaller lr); ``one-se``, the fewest epochs within one standard error of the best cell (where
    more epochs no longer buy more than noise, the cheaper recipe; ties: higher accuracy, then smaller lr).
    ``{"epochs", "lr", "dev_accuracy", "best", "threshold"}``."""
    if rule not in RULES:
        raise ValueError(f"tuning rule {rule!r}; valid: {sorted(RULES)}")
    mean = grid.groupby(["epochs", "lr"], as_index=False).agg(
        dev_accuracy=("dev_accuracy", "mean"), n=("n_dev", "sum") if "n_dev" in grid else ("dev_accuracy", "size")
    )
    best = mean.sort_values(["dev_accuracy", "epochs", "lr"], ascending=[False, True, True]).iloc[0]
    acc = float(best["dev_accuracy"])
    threshold = acc - float(np.sqrt(acc * (1 - acc) / best["n"])) if rule == "one-se" else acc
    near = mean[mean["dev_accuracy"] >= threshold - 1e-12]
    pick = (
        best
        if rule == "best"
        else near.sort_values(["epochs", "dev_accuracy", "lr"], ascending=[True, False, True]).iloc[0]
    )
    return {
        "epochs": pick["epochs"].item(),
        "lr": float(pick["lr"]),
        "dev_accuracy": float(pick["dev_accuracy"]),
        "best": {"epochs": best["epochs"].item(), "lr": float(best["lr"]), "dev_accuracy": acc},
        "threshold": threshold,
    }


def tune_finetuning(
    profile: str,
    locales: Sequence[str],
    *,
    base_model: str | os.PathLike,
    data: str | os.PathLike,
    epochs_grid: Sequence[float],
    lr_grid: Sequence[float],
    batch_size: int,
    max_seq_length: int,
    seed: int,
    workers: int = 1,
    rule: str = "best",
) -> dict[str, Any]:
    """``finetune_grid`` on ``workers`` processes (cached in ``reports/study/<profile>/tuning/finetune.json``
    by its arguments and the base's sha256, cell by cell: a widened grid fits only its new cells), ``choose``, and the protocol records ``02.epochs`` and ``02.lr``. Returns the choice."""
    if not locales or not epochs_grid or not lr_grid:
        raise ValueError("tune_finetuning needs at least one probe locale, one epochs value and one lr")
    if rule not in RULES:
        raise ValueError(f"tuning rule {rule!r}; valid: {sorted(RULES)}")
    bad = [v for v in [*epochs_grid, *lr_grid] if not v > 0]
    if bad:
        raise ValueError(f"epochs and lr values must be > 0, got {bad}")
    base = paths.resolve(base_model)
    args = {
        "locales": list(locales),
        "base_sha256": report.sha256(base / models.WEIGHTS_FILE),
        "data": str(data),
        "epochs_grid": list(epochs_grid),
        "lr_grid": list(lr_grid),
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "seed": seed,
    }
    cache = paths.reports_dir("study", profile, "tuning", "finetune.json")
    grid = _cached_grid(cache, args, locales, epochs_grid, lr_grid)
    missing = [
        (loc, e, lr)
        for loc in locales
        for e in epochs_grid
        for lr in lr_grid
        if grid.empty or not ((grid["locale"] == loc) & (grid["epochs"] == e) & (grid["lr"] == lr)).any()
    ]
    if missing:
        fit = functools.partial(
            _fit_one, base=base, data=data, batch_size=batch_size, max_seq_length=max_seq_length, seed=seed
        )
        new = pd.DataFrame(threads.map_processes(fit, missing, workers))
        grid = pd.concat([grid, new], ignore_index=True) if not grid.empty else new
        order = {job: i for i, job in enumerate(_jobs(locales, epochs_grid, lr_grid))}
        grid["order"] = [order[job] for job in zip(grid["locale"], grid["epochs"], grid["lr"])]
        grid = grid.sort_values("order").drop(columns="order").reset_index(drop=True)  # the grid's order
        paths.write_json(cache, {"args": args, "grid": grid.to_dict(orient="records"), "versions": report.versions()})
    chosen = choose(grid, rule)
    where = f"dev split of the probe sources {', '.join(locales)} ({int(grid['n_dev'].iloc[0])} utterances each)"
    evidence = (
        grid.groupby(["epochs", "lr"], as_index=False)
        .agg(dev_accuracy=("dev_accuracy", "mean"), seconds=("seconds", "sum"))
        .to_dict(orient="records")
    )
    note = f"mean dev accuracy {chosen['dev_accuracy']:.3f}; grid epochs {list(epochs_grid)} × lr {list(lr_grid)}"
    if rule != "best":
        b = chosen["best"]
        note += (
            f"; rule {rule}: {RULES[rule]} (best cell {b['epochs']} epochs at lr {b['lr']:g}, "
            f"{b['dev_accuracy']:.3f}; threshold {chosen['threshold']:.3f})"
        )
    protocol.record(
        profile,
        "02.epochs",
        chosen["epochs"],
        chosen_by="dev",
        data=where,
        evidence=evidence,
        note=note,
        grid=epochs_grid,
    )
    protocol.record(profile, "02.lr", chosen["lr"], chosen_by="dev", data=where, note="see 02.epochs", grid=lr_grid)
    protocol.write(profile)
    return chosen
