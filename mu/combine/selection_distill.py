"""Notebook 04's choices for the distilled student, made without the targets' test labels and
recorded in the study's protocol (the shared rules, grid cache and criteria: ``mu.combine.selection``).

* ``choose_teacher``: the distillation teacher among ensemble methods × weightings, by mean accuracy
  on the *dev* splits of the declared tuning targets (``chosen_by="tuning-targets"``).
* ``choose_distillation``: the three choices in order: the teacher, then the merge the student starts
  from and its lr (``mu.combine.selection_student``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mu.combine import ensemble_eval, selection, selection_student
from mu.core import protocol


def choose_teacher(
    profile: str,
    tuning_targets: Sequence[str],
    *,
    methods: Sequence[str],
    modes: Sequence[str],
    only: Sequence[str] | None = None,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    max_seq_length: int,
    batch_size: int = 64,
    **select_kw: Any,
) -> dict[str, Any]:
    """The distillation teacher ``{"method", "mode", "dev_accuracy", "evidence"}`` among ``methods`` ×
    ``modes`` (``only``: just these ``"method/mode"``): the highest mean accuracy over the tuning
    targets' dev splits (ties: the order given), each ensemble built for the tuning target as for any
    target (``mu.combine.ensemble_eval.table``). Records ``04.distill.teacher``. ``select_kw``:
    ``mu.langs.similarity.select``'s num_languages, top_k, sinkhorn_iters, feature_set, nxn, oracle_nxn.
    """
    candidates = [f"{m}/{mode}" for mode in modes for m in methods]
    if only is not None:
        unknown = sorted(set(only) - set(candidates))
        if unknown or not only:
            raise ValueError(f"teachers {unknown or list(only)} are not among the ensembles {candidates}")
        candidates = [c for c in candidates if c in set(only)]
    if len(candidates) == 1:
        protocol.record(profile, "04.distill.teacher", candidates[0], chosen_by="declared", data="none")
        method, mode = candidates[0].split("/")
        return {"method": method, "mode": mode, "dev_accuracy": None, "evidence": []}
    targets = selection.check_targets(tuning_targets, "tuning-targets", select_kw)
    rows = []
    for t in targets:
        table = ensemble_eval.table(
            t,
            methods=methods,
            modes=modes,
            models_dir=models_dir,
            data=data,
            split="dev",
            compute=True,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            **select_kw,
        )
        rows += [
            {"teacher": f"{r.method}/{r.mode}", "target": t, "dev_accuracy": float(r.accuracy)}
            for r in table.itertuples()
            if f"{r.method}/{r.mode}" in candidates
        ]
    means, best = selection.best(rows, ["teacher"], "dev_accuracy", higher=True, tie=[])
    per = pd.DataFrame(rows).pivot(index="teacher", columns="target", values="dev_accuracy")
    evidence = [
        {"teacher": c, "mean_dev_accuracy": float(m), **per.loc[c].to_dict()}
        for c, m in zip(means["teacher"], means["dev_accuracy"])
    ]
    protocol.record(
        profile,
        "04.distill.teacher",
        best["teacher"],
        chosen_by="tuning-targets",
        data=f"dev split of the tuning targets {targets}",
        evidence=evidence,
        note="the ensemble the student learns from; test labels are never read",
    )
    method, mode = best["teacher"].split("/")
    return {"method": method, "mode": mode, "dev_accuracy": float(best["dev_accuracy"]), "evidence": rows}


def choose_distillation(
    profile: str,
    tuning_targets: Sequence[str],
    *,
    methods: Sequence[str],
    modes: Sequence[str],
    only: Sequence[str] | None,
    inits: str | Sequence[str],
    lrs: Sequence[float],
    criterion: str,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike,
    held_out: float,
    temperature: float,
    epochs: int,
    batch_size: int,
    eval_every: int | None,
    patience: int | None,
    adapt_num_examples: int | None = None,
    adapt_split: str = "train",
    max_seq_length: int = 128,
    eval_batch_size: int = 64,
    seed: int = 42,
    **select_kw: Any,
) -> dict[str, Any]:
    """Notebook 04's three choices for the distilled student, in order, each recorded in the protocol:
    the teacher (``choose_teacher``, dev accuracy), the merge it starts from among ``inits``
    (``selection_student.choose_student_init``, by ``criterion``) and its lr among ``lrs``
    (``selection_student.choose_distill_lr``, by ``criterion``). ``batch_size``, ``epochs``, ``temperature``, ``eval_every``, ``patience``: the
    student's; ``eval_batch_size``: inference. Returns ``{"teacher": choose_teacher's dict, "init", "lr"}``."""
    where = {"models_dir": models_dir, "data": data, "max_seq_length": max_seq_length}
    teacher = choose_teacher(
        profile,
        tuning_targets,
        methods=methods,
        modes=modes,
        only=only,
        batch_size=eval_batch_size,
        **where,
        **select_kw,
    )
    fit = {
        "teacher_method": teacher["method"],
        "mode": teacher["mode"],
        "criterion": criterion,
        "base_model": base_model,
        "held_out": held_out,
        "temperature": temperature,
        "adapt_num_examples": adapt_num_examples,
        "adapt_split": adapt_split,
        "seed": seed,
    }
    started = selection_student.choose_student_init(
        profile, tuning_targets, methods=inits, batch_size=eval_batch_size, **fit, **where, **select_kw
    )
    init = started["method"]
    lr = selection_student.choose_distill_lr(
        profile,
        tuning_targets,
        lrs=lrs,
        init=init,
        init_score=started.get("score"),
        epochs=epochs,
        batch_size=batch_size,
        eval_every=eval_every,
        patience=patience,
        **fit,
        **where,
        **select_kw,
    )["lr"]
    return {"teacher": teacher, "init": init, "lr": lr}
