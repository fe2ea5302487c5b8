"""The distilled student's own choices (notebook 04), each measured for the declared tuning targets
as the student is made for a target, without the targets' test labels, and recorded in the study's
protocol (the shared rules, grid cache and criteria: ``mu.combine.selection``; the teacher:
``mu.combine.selection_distill``).

* ``choose_student_init``: the merge the student starts from, among merge methods of the teacher's
  sources and weights; criterion ``tuning-targets`` (mean dev accuracy of the merge) or ``label-free``
  (its mean agreement with the teacher's argmax on held-out unlabeled text).
* ``choose_distill_lr``: the student's lr. For each tuning target and lr a student is distilled
  exactly as for a target (its ``adapt_split`` texts without labels, the held-out stopping rule); criterion
  ``tuning-targets`` (mean dev accuracy) or ``label-free`` (mean best held-out agreement with the teacher).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mu import merge
from mu.combine import distill, selection, selection_merge, student
from mu.core import protocol
from mu.learn import evaluate, models


def choose_student_init(
    profile: str,
    tuning_targets: Sequence[str],
    *,
    methods: str | Sequence[str],
    teacher_method: str,
    mode: str,
    criterion: str,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike,
    held_out: float,
    temperature: float,
    adapt_num_examples: int | None = None,
    adapt_split: str = "train",
    max_seq_length: int = 128,
    batch_size: int = 64,
    seed: int = 42,
    **select_kw: Any,
) -> dict[str, Any]:
    """The merge the distilled student starts from, ``{"method", "score", "evidence"}``, among ``methods``
    (``"all"`` or names, ``mu.merge.sweep.check_methods``; each at its defaults, over the ``mode`` sources
    and weights of each tuning target; a method that cannot merge them, e.g. a pairwise one, is left out
    and said so). ``criterion``: ``tuning-targets`` (highest mean dev accuracy of the merge) or
    ``label-free`` (highest mean agreement of the merge's argmax with the ``teacher_method`` ensemble's on
    the held-out ``adapt_split`` texts); ties go to the order of ``methods``. Merges made here are deleted
    once scored (``evaluate_distilled`` merges the chosen one again, deterministically). Records ``04.distill.init``."""
    names = merge.sweep.check_methods(methods)
    selection.check_nonempty(methods=names)
    if len(names) == 1:
        protocol.record(profile, "04.distill.init", names[0], chosen_by="declared", data="none")
        return {"method": names[0], "score": None, "evidence": []}
    targets = selection.check_targets(tuning_targets, criterion, select_kw, held_out)
    # both scores are measured in one pass (as choose_distill_lr's grid): the other criterion reads the same cache
    args = {
        "targets": targets,
        "methods": names,
        "teacher": [teacher_method, mode],
        "temperature": temperature,
        "held_out": held_out,
        "adapt_num_examples": adapt_num_examples,
        **({"adapt_split": adapt_split} if adapt_split != "train" else {}),  # train: the key of grids cached before
        "data": str(data),
        "base": evaluate.model_fingerprint(base_model),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "sources": selection.fingerprints(targets, mode, models_dir, select_kw),
    }

    def compute() -> list[dict]:
        rows = []
        for t in targets:
            w = selection.source_weights(t, mode, models_dir, select_kw)
            srcs = {loc: models.resolve(loc, models_dir) for loc in w}
            dev_texts, dev_labels = selection.dev_split(t, data)
            _, held, _ = merge.adaptation_texts(
                t, adapt_split, data, num_examples=adapt_num_examples, held_out=held_out, seed=seed
            )
            votes = (
                distill.teacher(
                    teacher_method, held, srcs, w, temperature=temperature, max_seq_length=max_seq_length
                ).argmax(axis=1)
                if held
                else None
            )
            merges = selection_merge.each_merge(
                t,
                names,
                w,
                mode=mode,
                models_dir=models_dir,
                data=data,
                base_model=base_model,
                max_seq_length=max_seq_length,
                seed=seed,
            )
            for method, model, tokenizer, why in merges:
                if why:
                    rows.append({"target": t, "method": method, "note": why})
                    continue

                def predict(texts: list[str], model: Any = model, tokenizer: Any = tokenizer) -> np.ndarray:
                    return evaluate.forward(
                        model, tokenizer, texts, batch_size=batch_size, max_seq_length=max_seq_length
                    ).argmax(axis=1)

                rows.append(
                    {
                        "target": t,
                        "method": method,
                        "dev_accuracy": float(np.mean(predict(dev_texts) == dev_labels)),
                        "held_out_agreement": float(np.mean(predict(held) == votes))
                        if votes is not None
                        else float("nan"),
                        "note": "",
                    }
                )
        return rows

    rows = selection.cached(profile, "distill_init", args, compute)
    scored = [{**r, "order": names.index(r["method"])} for r in rows if not r["note"]]
    score = "dev_accuracy" if criterion == "tuning-targets" else "held_out_agreement"
    means, best = selection.best(scored, ["method"], score, higher=True, tie=["order"])
    skipped = sorted({f"{r['method']} ({r['note']})" for r in rows if r["note"]})
    protocol.record(
        profile,
        "04.distill.init",
        best["method"],
        chosen_by=criterion,
        data=f"{'dev split' if criterion == 'tuning-targets' else f'held-out {adapt_split} texts (no labels)'} "
        f"of the tuning targets {targets}",
        evidence=[
            {"method": r["method"], f"mean_{score}": float(r[score])}
            for r in means.sort_values("order").to_dict(orient="records")
        ],
        note=f"the merge (of the teacher ensemble/{teacher_method}/{mode}'s sources and weights) the "
        "student starts from" + (f"; not applicable: {', '.join(skipped)}" if skipped else ""),
    )
    return {"method": best["method"], "score": float(best[score]), "evidence": rows}


def choose_distill_lr(
    profile: str,
    tuning_targets: Sequence[str],
    *,
    teacher_method: str,
    mode: str,
    lrs: Sequence[float],
    criterion: str,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike,
    temperature: float,
    epochs: int,
    batch_size: int,
    eval_every: int | None,
    patience: int | None,
    held_out: float,
    adapt_num_examples: int | None = None,
    adapt_split: str = "train",
    max_seq_length: int = 128,
    seed: int = 42,
    init: str = "linear",
    init_score: float | None = None,
    **select_kw: Any,
) -> dict[str, Any]:
    """The student's lr ``{"lr", "evidence"}`` among ``lrs``: for every tuning target and lr, a student
    distilled from the ``teacher_method``/``mode`` ensemble as ``mu.combine.distill.evaluate_distilled`` does
    for a target (from the ``init`` merge; not saved), scored by ``criterion``; ties go to the smaller lr.
    Records ``04.distill.lr`` and the declared knobs of the stopping rule.

    ``init_score``: the ``init`` merge's own mean score by ``criterion`` on the same tuning targets
    (``choose_student_init``'s). A student whose lr tends to 0 stays its init, so that score is the grid's
    point at lr 0: when the smallest lr wins and beats it, the record's grid and evidence hold lr 0 and the
    choice is interior (the best lr lies between 0 and the next lr), not an edge."""
    selection.declare(
        profile,
        "04.distill",
        {
            "temperature": temperature,
            "max_epochs": epochs,
            "batch_size": batch_size,
            "eval_every": eval_every,
            "patience": patience,
            "held_out": held_out,
        },
        "the student's budget and label-free stopping rule (held-out agreement with the teacher)",
    )
    selection.check_nonempty(lrs=lrs)
    if len(lrs) == 1:
        protocol.record(profile, "04.distill.lr", float(lrs[0]), chosen_by="declared", data="none")
        return {"lr": float(lrs[0]), "evidence": []}
    targets = selection.check_targets(tuning_targets, criterion, select_kw, held_out)
    knobs = {
        "temperature": temperature,
        "epochs": epochs,
        "batch_size": batch_size,
        "eval_every": eval_every,
        "patience": patience,
    }
    args = {
        "targets": targets,
        "teacher": [teacher_method, mode],
        "lrs": [float(x) for x in lrs],
        **knobs,
        "held_out": held_out,
        "adapt_num_examples": adapt_num_examples,
        **({"adapt_split": adapt_split} if adapt_split != "train" else {}),  # train: the key of grids cached before
        "data": str(data),
        "base": evaluate.model_fingerprint(base_model),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "sources": selection.fingerprints(targets, mode, models_dir, select_kw),
        **({"init": init} if init != "linear" else {}),
    }  # linear: the grid cached before init was a choice

    def compute() -> list[dict]:
        rows = []
        for t in targets:
            w = selection.source_weights(t, mode, models_dir, select_kw)
            srcs = {loc: models.resolve(loc, models_dir) for loc in w}
            start = merge.merge_models(
                init,
                srcs,
                w,
                merge.merged_dir(models_dir, t, init, mode),
                base_model=base_model,
                data=data,
                mode=mode,
                max_seq_length=max_seq_length,
                seed=seed,
            )
            fit, held, _ = merge.adaptation_texts(
                t, adapt_split, data, num_examples=adapt_num_examples, held_out=held_out, seed=seed
            )
            probs = distill.teacher(
                teacher_method, fit + held, srcs, w, temperature=temperature, max_seq_length=max_seq_length
            )
            dev_texts, dev_labels = selection.dev_split(t, data)
            for lr in lrs:
                started = time.perf_counter()
                model, tokenizer, log = student.fit_student(
                    start,
                    fit,
                    probs[: len(fit)],
                    held_out=held,
                    held_out_probs=probs[len(fit) :],
                    lr=float(lr),
                    max_seq_length=max_seq_length,
                    seed=seed,
                    progress=False,
                    **knobs,
                )
                pred = evaluate.forward(
                    model, tokenizer, dev_texts, batch_size=64, max_seq_length=max_seq_length
                ).argmax(axis=1)
                rows.append(
                    {
                        "target": t,
                        "lr": float(lr),
                        "dev_accuracy": float(np.mean(pred == dev_labels)),
                        "held_out_agreement": log["best_agreement"],
                        "best_step": log["best_step"],
                        "steps": log["steps"],
                        "seconds": round(time.perf_counter() - started, 2),
                    }
                )
        return rows

    rows = selection.cached(profile, "distill_lr", args, compute)
    score = "dev_accuracy" if criterion == "tuning-targets" else "held_out_agreement"
    means, best = selection.best(rows, ["lr"], score, higher=True, tie=["lr"])
    evidence = [
        {k: (float(v) if isinstance(v, (int, float, np.number)) else v) for k, v in r.items()}
        for r in means.to_dict(orient="records")
    ]
    grid, anchor = [float(x) for x in lrs], ""
    if init_score is not None and float(best["lr"]) == min(grid) and init_score < float(best[score]):
        grid, evidence = [0.0, *grid], [{"lr": 0.0, score: float(init_score)}, *evidence]
        anchor = (
            f"; lr 0 is the student that never moves from its init: merge/{init}/{mode}'s own mean {score} "
            f"{init_score:.4f} on the same targets (04.distill.init's evidence), below the chosen lr's "
            f"{float(best[score]):.4f}, so the best lr lies between 0 and {sorted(grid)[2]:g}"
        )
    protocol.record(
        profile,
        "04.distill.lr",
        float(best["lr"]),
        chosen_by=criterion,
        data=f"{'dev split' if criterion == 'tuning-targets' else f'held-out {adapt_split} texts (no labels)'} "
        f"of the tuning targets {targets}",
        evidence=evidence,
        note=f"teacher ensemble/{teacher_method}/{mode}, student from merge/{init}/{mode}; "
        "means over the tuning targets" + anchor,
        grid=grid,
    )
    return {"lr": float(best["lr"]), "evidence": rows}
