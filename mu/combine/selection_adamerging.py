"""Notebook 03's choice of AdaMerging's granularity × steps, made without the targets' test labels
and recorded in the study's protocol (the shared rules, grid cache and criteria: ``mu.combine.selection``).

``choose_adamerging``: one fit per (tuning target, granularity) with a checkpoint at every candidate
step; criterion ``tuning-targets`` (mean dev accuracy) or ``label-free`` (mean entropy on held-out
unlabeled text). Its rows are also the diagnostic of why AdaMerging gains or loses against the plain
merge (step 0): entropy and dev accuracy over steps, per granularity (``adamerging_curves``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mu import merge
from mu.combine import selection
from mu.core import paths, protocol
from mu.learn import evaluate, models
from mu.merge import adamerging


def choose_adamerging(
    profile: str,
    tuning_targets: Sequence[str],
    *,
    granularities: Sequence[str],
    steps: Sequence[int],
    criterion: str,
    mode: str,
    constraint: str,
    lr: float,
    batch_size: int,
    held_out: float,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike,
    adapt_num_examples: int | None = None,
    adapt_split: str = "train",
    max_seq_length: int = 128,
    seed: int = 42,
    **select_kw: Any,
) -> dict[str, Any]:
    """AdaMerging's ``{"granularity", "steps", "evidence"}``: for every tuning target and granularity
    one fit (its ``mode`` sources, its ``adapt_split`` texts without labels less the held-out slice) with checkpoints
    at step 0 (the plain merge) and every candidate step, scored on the dev split (accuracy, entropy)
    and the held-out texts (entropy). ``criterion``: ``tuning-targets`` (highest mean dev accuracy) or
    ``label-free`` (lowest mean held-out entropy); ties go to fewer steps, then the order of
    ``granularities``. Records ``03.adamerging.granularity`` / ``.steps`` and the declared knobs."""
    selection.declare(
        profile,
        "03.adamerging",
        {"constraint": constraint, "lr": lr, "batch_size": batch_size, "held_out": held_out},
        "AdaMerging's declared fit settings",
    )
    selection.check_nonempty(granularities=granularities, steps=steps)
    for g in granularities:
        adamerging.check_knobs(g, constraint, max(steps), lr)
    if len(granularities) == 1 and len(steps) == 1:
        for knob, v in (("granularity", granularities[0]), ("steps", int(steps[0]))):
            protocol.record(profile, f"03.adamerging.{knob}", v, chosen_by="declared", data="none")
        return {"granularity": granularities[0], "steps": int(steps[0]), "evidence": []}
    targets = selection.check_targets(tuning_targets, criterion, select_kw, held_out)
    marks = sorted({0, *map(int, steps)})
    args = {
        "targets": targets,
        "granularities": list(granularities),
        "marks": marks,
        "mode": mode,
        "constraint": constraint,
        "lr": lr,
        "batch_size": batch_size,
        "held_out": held_out,
        "adapt_num_examples": adapt_num_examples,
        **({"adapt_split": adapt_split} if adapt_split != "train" else {}),  # train: the key of grids cached before
        "data": str(data),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "base": evaluate.model_fingerprint(base_model),
        "sources": selection.fingerprints(targets, mode, models_dir, select_kw),
    }

    def compute() -> list[dict]:
        rows = []
        base = models.load_state_dict(base_model)
        for t in targets:
            w = selection.source_weights(t, mode, models_dir, select_kw)
            sds = {loc: models.load_state_dict(models.resolve(loc, models_dir)) for loc in w}
            fit, held, _ = merge.adaptation_texts(
                t, adapt_split, data, num_examples=adapt_num_examples, held_out=held_out, seed=seed
            )
            dev_texts, dev_labels = selection.dev_split(t, data)

            def probe(step: int, predict: Callable) -> dict[str, float]:
                dev = predict(dev_texts)
                return {
                    "dev_accuracy": float(np.mean(dev.argmax(axis=1) == dev_labels)),
                    "dev_entropy": adamerging.mean_entropy(dev),
                    "held_out_entropy": adamerging.mean_entropy(predict(held)) if held else float("nan"),
                }

            for g in granularities:
                out = adamerging.fit_models(
                    paths.resolve(base_model),
                    sds,
                    base,
                    w,
                    fit,
                    granularity=g,
                    constraint=constraint,
                    steps=marks[-1],
                    lr=lr,
                    batch_size=batch_size,
                    max_seq_length=max_seq_length,
                    seed=seed,
                    progress=False,
                    checkpoints=marks,
                    probe=probe,
                )
                rows += [
                    {"target": t, "granularity": g, **c, "fit_seconds": round(out["seconds"], 2)}
                    for c in out["checkpoints"]
                ]
        return rows

    rows = selection.cached(profile, "adamerging", args, compute)
    order = {g: i for i, g in enumerate(granularities)}
    candidates = [{**r, "order": order[r["granularity"]]} for r in rows if r["step"] in set(map(int, steps))]
    score = "dev_accuracy" if criterion == "tuning-targets" else "held_out_entropy"
    means, best = selection.best(
        candidates, ["granularity", "step"], score, higher=criterion == "tuning-targets", tie=["step", "order"]
    )
    evidence = [
        {
            "granularity": r["granularity"],
            "steps": int(r["step"]),
            "mean_dev_accuracy": r["dev_accuracy"],
            "mean_held_out_entropy": r["held_out_entropy"],
        }
        for r in means.to_dict(orient="records")
    ]
    plain = pd.DataFrame([r for r in rows if r["step"] == 0]).mean(numeric_only=True)
    data_note = "dev split" if criterion == "tuning-targets" else f"held-out {adapt_split} texts (no labels)"
    for knob, v, grid in (
        ("granularity", best["granularity"], list(granularities)),
        ("steps", int(best["step"]), [int(x) for x in steps]),
    ):
        protocol.record(
            profile,
            f"03.adamerging.{knob}",
            v,
            chosen_by=criterion,
            data=f"{data_note} of the tuning targets {targets}",
            evidence=evidence,
            note=f"step 0 (the plain {mode} merge): mean dev accuracy {plain['dev_accuracy']:.4f}",
            grid=grid,
        )
    return {"granularity": best["granularity"], "steps": int(best["step"]), "evidence": rows}


def adamerging_curves(choice: Mapping[str, Any]) -> pd.DataFrame:
    """``choose_adamerging``'s evidence as a long frame (target, granularity, step, metric, value): dev
    accuracy, dev entropy and held-out entropy over steps, per granularity; step 0 is the plain merge."""
    frame = pd.DataFrame(choice["evidence"])
    if frame.empty:
        return pd.DataFrame(columns=["target", "granularity", "step", "metric", "value"])
    metrics = ["dev_accuracy", "dev_entropy", "held_out_entropy"]
    return frame.melt(id_vars=["target", "granularity", "step"], value_vars=metrics, var_name="metric")
