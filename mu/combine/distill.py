"""Ensemble distillation on the target's unlabeled text: one model to serve, trained to match
an ensemble (notebook 04).

Teacher: one ensemble of ``mu.combine.ensemble`` (a method over one weighting's sources), chosen by the
protocol (``mu.combine.selection_distill.choose_teacher``: dev accuracy of the declared tuning targets, never a
test split), as one distribution per text (``teacher_probs``): ``soft`` Σ_i w_i softmax(z_i / T),
``uriel_logits`` softmax(Σ_i w_i z_i / T), ``weighted_majority`` / ``majority`` the (weighted)
shares of the sources' votes. Student: initialised from a merge of the *same* sources and weights
(``mu.merge.merge_models``; ``init``: ``linear``, notebook 03's plain merge, unless the protocol chose another
method, ``mu.combine.selection_student.choose_student_init``), trained (``mu.combine.student``) to minimise
T²·KL(teacher ‖ softmax(z / T)) on the target's ``adapt_split`` texts without labels (the unlabeled pool in the
mini study, ``mu.corpus.pools``; ``train`` in the parallel design) except a held-out slice
(``mu.corpus.data.held_out``), stopped by a label-free rule: its argmax agreement with the teacher on
the held-out slice, the best checkpoint kept (step 0, the merge itself, included). This module saves
each student with its record (``distill``), names it and makes notebook 04's rows
(``evaluate_distilled``, ``curves``). Only texts reach this module (``mu.corpus.data.unlabeled``); the student is evaluated
on the target's test split like every other system. Rows form the ``adapted`` family
(``adapted/distilled-<teacher>[-from_<init>]/<mode>``): they see the target's unlabeled text, never its labels.

Kept apart from ``mu.combine.ensemble`` (which it uses for the sources' logits) so that ``mu.combine.ensemble``
stays the cached output-space combiner and the two do not import each other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mu.combine import ensemble, student
from mu.core import paths, report
from mu.langs.similarity import check_weights

DETAILS_JSON = "distill_details.json"
DEFAULTS = {"temperature": 2.0, "epochs": 3, "lr": 2e-5, "batch_size": 16, "eval_every": None, "patience": None}


def teacher_probs(
    method: str, logits: Mapping[str, np.ndarray], weights: Mapping[str, float], temperature: float
) -> np.ndarray:
    """The teacher's distribution [n, C] of ensemble ``method`` over ``{source: logits [n, C]}``
    (weights normalised); ``temperature`` tempers ``soft`` and ``uriel_logits`` (votes have none)."""
    ensemble.check_method(method)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    arrays = {loc: np.asarray(z, dtype=np.float64) for loc, z in ensemble.check_logits(logits).items()}
    w = check_weights(weights, list(arrays))
    if method == "soft":
        return ensemble.weighted_sum({loc: ensemble.softmax(z / temperature) for loc, z in arrays.items()}, w)
    if method == "uriel_logits":
        return ensemble.softmax(ensemble.weighted_sum(arrays, w) / temperature)
    votes = w if method == "weighted_majority" else {loc: 1.0 / len(arrays) for loc in arrays}
    return ensemble.weighted_sum({loc: np.eye(z.shape[1])[z.argmax(axis=1)] for loc, z in arrays.items()}, votes)


def teacher(
    method: str,
    texts: Sequence[str],
    sources: Mapping[str, str | os.PathLike],
    weights: Mapping[str, float],
    *,
    temperature: float,
    max_seq_length: int,
) -> np.ndarray:
    """``teacher_probs`` of the ``sources`` models (``{locale: folder}``, run live) on ``texts``."""
    w = check_weights(weights, list(sources))
    logits = ensemble.live_logits(list(texts), {loc: sources[loc] for loc in w}, max_seq_length=max_seq_length)
    return teacher_probs(method, logits, w, temperature)


def distill(
    student_init: str | os.PathLike,
    sources: Mapping[str, str | os.PathLike],
    weights: Mapping[str, float],
    texts: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    teacher_method: str = "soft",
    held_out: Sequence[str] = (),
    temperature: float = DEFAULTS["temperature"],
    epochs: int = DEFAULTS["epochs"],
    lr: float = DEFAULTS["lr"],
    batch_size: int = DEFAULTS["batch_size"],
    eval_every: int | None = DEFAULTS["eval_every"],
    patience: int | None = DEFAULTS["patience"],
    max_seq_length: int = 128,
    seed: int = 42,
    adapt_from: Mapping[str, Any] | None = None,
) -> Path:
    """Distil the ``teacher_method`` ensemble of ``sources`` ({locale: model folder}) with ``weights``
    on unlabeled ``texts`` (with ``held_out`` texts for the stopping rule) into a student initialised
    from ``student_init``; saved (atomically) to ``out_dir`` with ``distill_details.json`` (teacher,
    knobs, texts sha256, loss and agreement curves, seconds, versions). Rerunning with the same
    inputs and knobs does nothing. ``adapt_from`` is recorded only.
    """
    from mu.learn import evaluate, models

    w = check_weights(weights, list(sources))
    texts, held = [str(t) for t in texts], [str(t) for t in held_out]
    knobs = {
        "temperature": temperature,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "eval_every": eval_every,
        "patience": patience,
    }
    inputs = {
        "student_init": evaluate.model_fingerprint(student_init),
        **{f"model/{loc}": evaluate.model_fingerprint(sources[loc]) for loc in w},
    }
    fingerprint = report.digest(
        {
            "teacher": teacher_method,
            "weights": w,
            "inputs": inputs,
            "texts": report.digest(texts),
            "held_out": report.digest(held),
            "knobs": knobs,
            "max_seq_length": max_seq_length,
            "seed": seed,
        }
    )
    out = paths.resolve(out_dir)
    if (out / DETAILS_JSON).is_file() and (out / models.WEIGHTS_FILE).is_file():
        if paths.read_json(out / DETAILS_JSON).get("fingerprint") == fingerprint:
            return out
    started = time.perf_counter()
    probs = teacher(teacher_method, texts + held, sources, w, temperature=temperature, max_seq_length=max_seq_length)
    teacher_seconds = time.perf_counter() - started
    model, tokenizer, log = student.fit_student(
        student_init,
        texts,
        probs[: len(texts)],
        held_out=held,
        held_out_probs=probs[len(texts) :],
        max_seq_length=max_seq_length,
        seed=seed,
        **knobs,
    )
    # label-free diagnostic: how often the student's argmax matches the teacher's on the texts it learnt from
    fit_agreement = student.agreement(
        model, tokenizer, texts, probs[: len(texts)].argmax(axis=1), max_seq_length=max_seq_length
    )
    details = {
        "teacher": teacher_method,
        "weights": w,
        "sources": {loc: str(sources[loc]) for loc in w},
        "student_init": str(student_init),
        "knobs": knobs,
        "max_seq_length": max_seq_length,
        "seed": seed,
        "inputs": inputs,
        "texts": {
            "sha256": report.digest(texts),
            "num_texts": len(texts),
            "num_held_out": len(held),
            **dict(adapt_from or {}),
        },
        **log,
        "teacher_agreement": fit_agreement,
        "teacher_seconds": teacher_seconds,
        "seconds": time.perf_counter() - started,
        "fingerprint": fingerprint,
        "versions": report.versions(),
    }
    return models.save_classifier(model, tokenizer, out, extra_files={DETAILS_JSON: details})


def name(teacher_method: str = "soft", adapt_split: str = "train", init: str = "linear", **knobs: Any) -> str:
    """``distilled-<teacher>``, plus the temperature when not the default, ``-adapt<split>`` off the
    train split and ``-from_<init>`` when the student starts from another merge than ``linear``. The
    training budget (epochs, lr, batch size, stopping rule) is recorded, not named."""
    from mu import merge

    ensemble.check_method(teacher_method)
    merge.sweep.check_methods([init])  # a method of mu.merge.METHODS, not the adapted family
    unknown = sorted(set(knobs) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"distillation does not take {unknown}; its knobs: {sorted(DEFAULTS)}")
    temperature = knobs.get("temperature", DEFAULTS["temperature"])
    out = f"distilled-{teacher_method}" + (
        "" if temperature == DEFAULTS["temperature"] else f"-temperature{temperature}"
    )
    out += "" if adapt_split == "train" else f"-adapt{adapt_split}"
    return out + ("" if init == "linear" else f"-from_{init}")


def evaluate_distilled(
    target: str,
    weightings: Mapping[str, Mapping[str, float]],
    *,
    teacher_method: str = "soft",
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike,
    adapt_split: str = "train",
    adapt_num_examples: int | None = None,
    held_out: float = 0.1,
    eval_batch_size: int = 64,
    max_seq_length: int = 128,
    seed: int = 42,
    init: str = "linear",
    **knobs: Any,
) -> list[dict[str, Any]]:
    """One ``mu.core.report`` row per weighting ({mode: {locale: weight}}): distil, then evaluate on
    ``target``'s *test* split.

    The student starts from the ``init`` merge (a method of ``mu.merge.METHODS`` but AdaMerging, at its defaults;
    ``linear``: notebook 03's plain merge) in ``mu.merge.merged_dir(models_dir, target, init, mode)`` (reused
    when unchanged) and goes to
    ``<models_dir>/distilled/<target>/<name>-<mode>``. It learns from the target's ``adapt_split``
    utterances without labels (``mu.merge.adaptation_texts``; ``test`` is transductive and recorded).
    ``knobs``: ``temperature``, ``epochs``, ``lr``, ``batch_size``, ``eval_every``, ``patience``.
    Each row carries its cost: ``seconds`` (teacher forwards and training) beside ``merge_seconds``
    (the plain merge it starts from), and its stopping: ``best_step``, ``steps``, ``stopped``,
    ``agreement_curve`` (held-out agreement with the teacher at each evaluation).
    """
    from mu import merge
    from mu.learn import evaluate, models

    label = name(teacher_method, adapt_split, init, **knobs)
    texts, held, origin = merge.adaptation_texts(
        target, adapt_split, data, num_examples=adapt_num_examples, held_out=held_out, seed=seed
    )
    rows = []
    for mode, weights in weightings.items():
        if target in weights:
            raise ValueError(f"weighting {mode!r} has the target {target} among its sources {sorted(weights)}")
        sources = {loc: models.resolve(loc, models_dir) for loc in weights}
        start = merge.merge_models(
            init,
            sources,
            weights,
            merge.merged_dir(models_dir, target, init, mode),
            base_model=base_model,
            data=data,
            mode=mode,
            max_seq_length=max_seq_length,
            seed=seed,
        )  # as mu.combine.selection_student.choose_student_init merged it
        student_dir = distill(
            start,
            sources,
            weights,
            texts,
            paths.resolve(models_dir) / "distilled" / target / f"{label}-{mode}",
            teacher_method=teacher_method,
            held_out=held,
            max_seq_length=max_seq_length,
            seed=seed,
            adapt_from=origin,
            **knobs,
        )
        scores = evaluate.evaluate(
            student_dir,
            target,
            "test",
            data=data,
            batch_size=eval_batch_size,
            max_seq_length=max_seq_length,
            items=True,
        )
        details = paths.read_json(student_dir / DETAILS_JSON)
        rows.append(
            {
                "system": f"adapted/{label}/{mode}",
                "family": "adapted",
                "target": target,
                **scores,
                "sources": dict(weights),
                "model": str(student_dir),
                "teacher": f"ensemble/{teacher_method}/{mode}",
                "init": f"merge/{init}/{mode}",
                "seconds": round(details["seconds"], 2),
                "merge_seconds": round(paths.read_json(start / "merge_details.json")["elapsed_s"], 2),
                "best_step": details["best_step"],
                "steps": details["steps"],
                "stopped": details["stopped"],
                "agreement_curve": details["agreement_curve"],
            }
        )
    return rows


def curves(rows: Sequence[Mapping[str, Any]], kind: str = "loss") -> pd.DataFrame:
    """Per ``evaluate_distilled`` row (``weighting`` = the row's system): the distillation loss per step
    (``kind="loss"``) or the held-out agreement with the teacher at each evaluation (``"agreement"``),
    as ``step``, ``value``, read from each student's ``distill_details.json``, for ``mu.analysis.plots.adaptation``."""
    if kind not in ("loss", "agreement"):
        raise ValueError(f"kind must be 'loss' or 'agreement', got {kind!r}")
    out = []
    for row in rows:
        details = paths.read_json(Path(row["model"]) / DETAILS_JSON)
        if kind == "loss":
            out += [
                {"weighting": row["system"], "step": i + 1, "value": v} for i, v in enumerate(details["loss_curve"])
            ]
        else:
            out += [
                {"weighting": row["system"], "step": e["step"], "value": e["agreement"]}
                for e in details.get("agreement_curve", [])
            ]
    return pd.DataFrame(out, columns=["weighting", "step", "value"])
