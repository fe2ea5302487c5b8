"""Ensemble distillation on the target's unlabeled text: one model to serve, trained to match
an ensemble (notebook 04).

Teacher: one ensemble of ``mu.combine.ensemble`` (a method over one weighting's sources), chosen by the
protocol (``mu.combine.selection.choose_teacher``: dev accuracy of the declared tuning targets, never a
test split), as one distribution per text (``teacher_probs``): ``soft`` Σ_i w_i softmax(z_i / T),
``uriel_logits`` softmax(Σ_i w_i z_i / T), ``weighted_majority`` / ``majority`` the (weighted)
shares of the sources' votes. Student: initialised from a merge of the *same* sources and weights
(``mu.merge.merge_models``; ``init``: ``linear``, notebook 03's plain merge, unless the protocol chose another
method, ``mu.combine.selection.choose_student_init``), trained with AdamW to minimise
T²·KL(teacher ‖ softmax(z / T)) (Hinton et al., 2015) on the target's unlabeled train texts except
a held-out slice (``mu.corpus.data.held_out``). Stopping is label-free: every ``eval_every`` steps the
student's argmax agreement with the teacher on the held-out slice is measured, the best checkpoint
is kept (step 0, the merge itself, included) and training stops after ``patience`` evaluations
without improvement. Only texts reach this module (``mu.corpus.data.unlabeled``); the student is evaluated
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
import torch
from tqdm.auto import tqdm

from mu.combine import ensemble
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


def agreement(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], teacher_argmax: np.ndarray, *, max_seq_length: int
) -> float:
    """Share of ``texts`` on which the model's argmax is the teacher's (label-free)."""
    from mu.learn import evaluate

    was_training = model.training
    model.eval()  # no dropout (evaluate.forward only switches gradients off)
    pred = evaluate.forward(model, tokenizer, list(texts), batch_size=64, max_seq_length=max_seq_length).argmax(axis=1)
    model.train(was_training)
    return float(np.mean(pred == np.asarray(teacher_argmax)))


def train_student(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    teacher: np.ndarray,
    *,
    temperature: float,
    epochs: int,
    lr: float,
    batch_size: int,
    max_seq_length: int,
    seed: int,
    held_out: Sequence[str] = (),
    held_out_teacher: np.ndarray | None = None,
    eval_every: int | None = None,
    patience: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place on (text, teacher distribution) pairs, at most ``epochs`` epochs.

    Loss T²·KL(teacher ‖ softmax(z/T)), mean over the batch; AdamW, dropout on; batches drawn with
    ``seed``. With ``held_out`` texts (and their ``held_out_teacher`` distributions): the argmax
    agreement with the teacher on them is measured at step 0, every ``eval_every`` steps (None: each
    epoch's end) and at the last step; the best checkpoint (earliest on ties) is loaded at the end and
    training stops once ``patience`` evaluations in a row did not improve on it (None: never early).
    Returns ``{"loss_curve", "agreement_curve" ([{"step", "agreement"}]), "best_step",
    "best_agreement", "steps", "stopped" ("epochs" | "patience")}``. The model is left in eval mode.
    """
    texts, held = [str(t) for t in texts], [str(t) for t in held_out]
    if not texts or len(texts) != len(teacher):
        raise ValueError(
            f"distillation needs one teacher distribution per text, got {len(texts)} texts and "
            f"{len(teacher)} distributions"
        )
    if held and (held_out_teacher is None or len(held_out_teacher) != len(held)):
        raise ValueError("held-out texts need one teacher distribution each (held_out_teacher)")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if (eval_every is not None and eval_every < 1) or (patience is not None and patience < 1):
        raise ValueError(f"eval_every and patience must be >= 1 or None, got {eval_every}, {patience}")
    device = next(model.parameters()).device
    enc = tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]
    target = torch.as_tensor(teacher, dtype=torch.float32)
    held_argmax = None if not held else np.asarray(held_out_teacher).argmax(axis=1)
    per_epoch = -(-len(texts) // batch_size)
    every = eval_every or per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    torch.manual_seed(seed)  # dropout
    gen = torch.Generator().manual_seed(seed)
    log: dict[str, Any] = {
        "loss_curve": [],
        "agreement_curve": [],
        "best_step": None,
        "best_agreement": None,
        "steps": 0,
        "stopped": "epochs",
    }
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0

    def check() -> bool:
        """Measure agreement at this step; True when patience has run out."""
        nonlocal best_state, stale
        a = agreement(model, tokenizer, held, held_argmax, max_seq_length=max_seq_length)
        log["agreement_curve"].append({"step": log["steps"], "agreement": a})
        if log["best_agreement"] is None or a > log["best_agreement"]:
            log["best_step"], log["best_agreement"], stale = log["steps"], a, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        return patience is not None and stale >= patience

    model.train()
    stop = bool(held) and check()
    # disable=None: off without a terminal (a kernel run by mu.batch.runner), as TQDM_DISABLE turns the others off
    for _ in tqdm(
        range(epochs), desc="distill", unit="epoch", leave=False, disable=True if (not progress or stop) else None
    ):
        for idx in torch.randperm(len(texts), generator=gen).split(batch_size):
            batch = tokenizer.pad({"input_ids": [enc[i] for i in idx.tolist()]}, return_tensors="pt").to(device)
            logp = torch.log_softmax(model(**dict(batch)).logits.float() / temperature, dim=-1)
            q = target[idx].to(device)
            loss = temperature**2 * (q * (torch.log(q.clamp_min(1e-12)) - logp)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log["loss_curve"].append(float(loss.detach()))
            log["steps"] += 1
            if held and log["steps"] % every == 0 and check():
                log["stopped"] = "patience"
                break
        if log["stopped"] == "patience":
            break
    if held and log["agreement_curve"][-1]["step"] != log["steps"]:
        check()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return log


def fit_student(
    student_init: str | os.PathLike,
    texts: Sequence[str],
    probs: np.ndarray,
    *,
    held_out: Sequence[str] = (),
    held_out_probs: np.ndarray | None = None,
    max_seq_length: int,
    seed: int,
    progress: bool = True,
    **knobs: Any,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Load ``student_init`` and ``train_student`` it (``knobs``: temperature, epochs, lr, batch_size,
    eval_every, patience); returns (model on the CPU, tokenizer, its training log)."""
    from mu.learn import models

    model, tokenizer = models.load_classifier(student_init)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with models.cpu_threads(model):
        log = train_student(
            model,
            tokenizer,
            texts,
            probs,
            held_out=held_out,
            held_out_teacher=held_out_probs,
            max_seq_length=max_seq_length,
            seed=seed,
            progress=progress,
            **knobs,
        )
    return model.cpu(), tokenizer, log


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
    model, tokenizer, log = fit_student(
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
    fit_agreement = agreement(
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
        )  # as mu.combine.selection.choose_student_init merged it
        student = distill(
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
            student, target, "test", data=data, batch_size=eval_batch_size, max_seq_length=max_seq_length
        )
        details = paths.read_json(student / DETAILS_JSON)
        rows.append(
            {
                "system": f"adapted/{label}/{mode}",
                "family": "adapted",
                "target": target,
                **scores,
                "sources": dict(weights),
                "model": str(student),
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
