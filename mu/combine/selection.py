"""The adapted family's choices, made without the targets' test labels (notebooks 03 and 04); each
choice is recorded in the study's protocol (``mu.core.protocol``) with its evidence.

* ``choose_teacher``: the distillation teacher among ensemble methods × weightings, by mean accuracy
  on the *dev* splits of the declared tuning targets (``chosen_by="tuning-targets"``).
* ``choose_student_init``: the merge the student starts from, among merge methods of the teacher's
  sources and weights; criterion ``tuning-targets`` (mean dev accuracy of the merge) or ``label-free``
  (its mean agreement with the teacher's argmax on held-out unlabeled text).
* ``choose_distill_lr``: the student's lr. For each tuning target and lr a student is distilled
  exactly as for a target (its unlabeled train text, the held-out stopping rule); criterion
  ``tuning-targets`` (mean dev accuracy) or ``label-free`` (mean best held-out agreement with the teacher).
* ``choose_distillation``: notebook 04's three choices in order (teacher, init, lr).
* ``choose_adamerging``: granularity × steps. One fit per (tuning target, granularity) with a
  checkpoint at every candidate step; criterion ``tuning-targets`` (mean dev accuracy) or
  ``label-free`` (mean entropy on held-out unlabeled text). Its rows are also the diagnostic of why
  AdaMerging gains or loses against the plain merge (step 0): entropy and dev accuracy over steps,
  per granularity (``adamerging_curves``).

What this module reads of a target: the ``dev`` split of a tuning target (``_dev``, the one
labelled read) and unlabeled train text (``mu.merge.adaptation_texts``); it has no path to a test
split (tested with a data source whose test splits raise). A grid is cached in
``reports/study/<profile>/tuning/<name>.json`` by its arguments (a rerun measures nothing) and
computed under a file lock, so parallel notebook runs compute it once. One candidate is a
declared value: recorded as ``declared``, nothing measured.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import filelock
import numpy as np
import pandas as pd

from mu import merge
from mu.combine import distill, ensemble, ensemble_eval, student
from mu.core import paths, protocol, report
from mu.corpus import data as mu_data
from mu.langs import similarity
from mu.learn import evaluate, models
from mu.merge import adamerging

CRITERIA = {
    "tuning-targets": "mean dev accuracy of the tuning targets",
    "label-free": "a label-free score on held-out unlabeled text of the tuning targets",
}
SELECT_KEYS = ("num_languages", "top_k", "sinkhorn_iters", "feature_set", "nxn")


def _check(
    tuning_targets: Sequence[str], criterion: str, select_kw: Mapping[str, Any], held_out: float | None = None
) -> list[str]:
    from mu.langs import locales

    if criterion not in CRITERIA:
        raise ValueError(f"selection criterion {criterion!r}; valid: {sorted(CRITERIA)}")
    if criterion == "label-free" and not (held_out or 0) > 0:
        raise ValueError("the label-free criterion scores held-out unlabeled text: set a held-out fraction > 0")
    unknown = sorted(set(select_kw) - set(SELECT_KEYS))
    if unknown:
        raise ValueError(f"source selection does not take {unknown}; valid: {list(SELECT_KEYS)}")
    if not tuning_targets:
        raise ValueError(
            "choosing among several candidates needs at least one declared tuning target "
            "(tuning_targets); give one candidate to declare a value instead"
        )
    return list(locales.check_locales(list(tuning_targets)))


def _nonempty(**grids: Sequence[Any]) -> None:
    empty = sorted(k for k, v in grids.items() if not len(v))
    if empty:
        raise ValueError(f"{empty}: give at least one candidate (one candidate is a declared value)")


def _dev(target: str, data: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(texts, labels) of a tuning target's dev split: the only labels this module reads."""
    ds = mu_data.load_split(target, "dev", data)
    return list(ds["text"]), np.asarray(ds["label"])


def _sources(target: str, mode: str, models_dir: str | os.PathLike, select_kw: Mapping[str, Any]) -> dict[str, float]:
    kw = {**select_kw, "nxn": evaluate.read_nxn(select_kw["nxn"]) if select_kw.get("nxn") is not None else None}
    return similarity.select(target, ensemble.candidates(target, models_dir), mode=mode, **kw)


def _cached(profile: str, name: str, args: Mapping[str, Any], compute: Callable[[], list[dict]]) -> list[dict]:
    path = paths.reports_dir("study", profile, "tuning", f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    args = report.digest(dict(args))
    with filelock.FileLock(str(path.with_suffix(".lock"))):
        if path.is_file() and paths.read_json(path).get("args") == args:
            return paths.read_json(path)["rows"]
        rows = compute()
        paths.write_json(path, {"args": args, "rows": rows, "versions": report.versions()})
    return rows


def _fingerprints(
    targets: Sequence[str], mode: str, models_dir: str | os.PathLike, select_kw: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each tuning target's sources and weights under ``mode``, with the models' fingerprints (cache keys)."""
    out = {}
    for t in targets:
        w = _sources(t, mode, models_dir, select_kw)
        out[t] = {loc: [w[loc], evaluate.model_fingerprint(models.resolve(loc, models_dir))] for loc in w}
    return out


def _best(
    rows: Sequence[Mapping[str, Any]], by: Sequence[str], score: str, *, higher: bool, tie: Sequence[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """Mean ``score`` over targets per candidate (``by``); the best, ties broken by ``tie`` (ascending)."""
    frame = pd.DataFrame(rows)
    means = frame.groupby(list(by), as_index=False, sort=False).mean(numeric_only=True)
    ranked = means.sort_values([score, *tie], ascending=[not higher, *[True] * len(tie)], kind="stable")
    return means, ranked.iloc[0]


def _declare(profile: str, prefix: str, knobs: Mapping[str, Any], note: str) -> None:
    for knob, value in knobs.items():
        protocol.record(
            profile, f"{prefix}.{knob}", value, chosen_by="declared", data="none (fixed before any result)", note=note
        )


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
    ``mu.langs.similarity.select``'s num_languages, top_k, sinkhorn_iters, feature_set, nxn.
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
    targets = _check(tuning_targets, "tuning-targets", select_kw)
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
    means, best = _best(rows, ["teacher"], "dev_accuracy", higher=True, tie=[])
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
    the held-out unlabeled train text); ties go to the order of ``methods``. Merges made here are deleted
    once scored (``evaluate_distilled`` merges the chosen one again, deterministically). Records ``04.distill.init``."""
    names = merge.sweep.check_methods(methods)
    _nonempty(methods=names)
    if len(names) == 1:
        protocol.record(profile, "04.distill.init", names[0], chosen_by="declared", data="none")
        return {"method": names[0], "score": None, "evidence": []}
    targets = _check(tuning_targets, criterion, select_kw, held_out)
    # both scores are measured in one pass (as choose_distill_lr's grid): the other criterion reads the same cache
    args = {
        "targets": targets,
        "methods": names,
        "teacher": [teacher_method, mode],
        "temperature": temperature,
        "held_out": held_out,
        "adapt_num_examples": adapt_num_examples,
        "data": str(data),
        "base": evaluate.model_fingerprint(base_model),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "sources": _fingerprints(targets, mode, models_dir, select_kw),
    }

    def compute() -> list[dict]:
        rows = []
        for t in targets:
            w = _sources(t, mode, models_dir, select_kw)
            srcs = {loc: models.resolve(loc, models_dir) for loc in w}
            dev_texts, dev_labels = _dev(t, data)
            _, held, _ = merge.adaptation_texts(
                t, "train", data, num_examples=adapt_num_examples, held_out=held_out, seed=seed
            )
            votes = (
                distill.teacher(
                    teacher_method, held, srcs, w, temperature=temperature, max_seq_length=max_seq_length
                ).argmax(axis=1)
                if held
                else None
            )
            for method in names:
                why = merge.sweep.not_applicable(method, w)
                if why:
                    rows.append({"target": t, "method": method, "note": why})
                    continue
                out = merge.merged_dir(models_dir, t, method, mode)
                existed = paths.resolve(out).exists()
                merged = merge.merge_models(
                    method,
                    srcs,
                    w,
                    out,
                    base_model=base_model,
                    data=data,
                    mode=mode,
                    max_seq_length=max_seq_length,
                    seed=seed,
                )
                model, tokenizer = models.load_classifier(merged, shared_tokenizer=True)
                dev = evaluate.forward(
                    model, tokenizer, dev_texts, batch_size=batch_size, max_seq_length=max_seq_length
                )
                agree = (
                    float(
                        np.mean(
                            evaluate.forward(
                                model, tokenizer, held, batch_size=batch_size, max_seq_length=max_seq_length
                            ).argmax(axis=1)
                            == votes
                        )
                    )
                    if votes is not None
                    else float("nan")
                )
                rows.append(
                    {
                        "target": t,
                        "method": method,
                        "dev_accuracy": float(np.mean(dev.argmax(axis=1) == dev_labels)),
                        "held_out_agreement": agree,
                        "note": "",
                    }
                )
                if not existed:
                    shutil.rmtree(paths.resolve(merged))
        return rows

    rows = _cached(profile, "distill_init", args, compute)
    scored = [{**r, "order": names.index(r["method"])} for r in rows if not r["note"]]
    score = "dev_accuracy" if criterion == "tuning-targets" else "held_out_agreement"
    means, best = _best(scored, ["method"], score, higher=True, tie=["order"])
    skipped = sorted({f"{r['method']} ({r['note']})" for r in rows if r["note"]})
    protocol.record(
        profile,
        "04.distill.init",
        best["method"],
        chosen_by=criterion,
        data=f"{'dev split' if criterion == 'tuning-targets' else 'held-out unlabeled train text'} "
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
    max_seq_length: int = 128,
    seed: int = 42,
    init: str = "linear",
    **select_kw: Any,
) -> dict[str, Any]:
    """The student's lr ``{"lr", "evidence"}`` among ``lrs``: for every tuning target and lr, a student
    distilled from the ``teacher_method``/``mode`` ensemble as ``mu.combine.distill.evaluate_distilled`` does
    for a target (from the ``init`` merge; not saved), scored by ``criterion``; ties go to the smaller lr.
    Records ``04.distill.lr`` and the declared knobs of the stopping rule."""
    _declare(
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
    _nonempty(lrs=lrs)
    if len(lrs) == 1:
        protocol.record(profile, "04.distill.lr", float(lrs[0]), chosen_by="declared", data="none")
        return {"lr": float(lrs[0]), "evidence": []}
    targets = _check(tuning_targets, criterion, select_kw, held_out)
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
        "data": str(data),
        "base": evaluate.model_fingerprint(base_model),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "sources": _fingerprints(targets, mode, models_dir, select_kw),
        **({"init": init} if init != "linear" else {}),
    }  # linear: the grid cached before init was a choice

    def compute() -> list[dict]:
        rows = []
        for t in targets:
            w = _sources(t, mode, models_dir, select_kw)
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
                t, "train", data, num_examples=adapt_num_examples, held_out=held_out, seed=seed
            )
            probs = distill.teacher(
                teacher_method, fit + held, srcs, w, temperature=temperature, max_seq_length=max_seq_length
            )
            dev_texts, dev_labels = _dev(t, data)
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

    rows = _cached(profile, "distill_lr", args, compute)
    score = "dev_accuracy" if criterion == "tuning-targets" else "held_out_agreement"
    means, best = _best(rows, ["lr"], score, higher=True, tie=["lr"])
    protocol.record(
        profile,
        "04.distill.lr",
        float(best["lr"]),
        chosen_by=criterion,
        data=f"{'dev split' if criterion == 'tuning-targets' else 'held-out unlabeled train text'} "
        f"of the tuning targets {targets}",
        evidence=[
            {k: (float(v) if isinstance(v, (int, float, np.number)) else v) for k, v in r.items()}
            for r in means.to_dict(orient="records")
        ],
        note=f"teacher ensemble/{teacher_method}/{mode}, student from merge/{init}/{mode}; "
        "means over the tuning targets",
        grid=[float(x) for x in lrs],
    )
    return {"lr": float(best["lr"]), "evidence": rows}


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
    max_seq_length: int = 128,
    eval_batch_size: int = 64,
    seed: int = 42,
    **select_kw: Any,
) -> dict[str, Any]:
    """Notebook 04's three choices for the distilled student, in order, each recorded in the protocol:
    the teacher (``choose_teacher``, dev accuracy), the merge it starts from among ``inits``
    (``choose_student_init``, by ``criterion``) and its lr among ``lrs`` (``choose_distill_lr``, by
    ``criterion``). ``batch_size``, ``epochs``, ``temperature``, ``eval_every``, ``patience``: the
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
        "seed": seed,
    }
    init = choose_student_init(
        profile, tuning_targets, methods=inits, batch_size=eval_batch_size, **fit, **where, **select_kw
    )["method"]
    lr = choose_distill_lr(
        profile,
        tuning_targets,
        lrs=lrs,
        init=init,
        epochs=epochs,
        batch_size=batch_size,
        eval_every=eval_every,
        patience=patience,
        **fit,
        **where,
        **select_kw,
    )["lr"]
    return {"teacher": teacher, "init": init, "lr": lr}


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
    max_seq_length: int = 128,
    seed: int = 42,
    **select_kw: Any,
) -> dict[str, Any]:
    """AdaMerging's ``{"granularity", "steps", "evidence"}``: for every tuning target and granularity
    one fit (its ``mode`` sources, its unlabeled train text less the held-out slice) with checkpoints
    at step 0 (the plain merge) and every candidate step, scored on the dev split (accuracy, entropy)
    and the held-out texts (entropy). ``criterion``: ``tuning-targets`` (highest mean dev accuracy) or
    ``label-free`` (lowest mean held-out entropy); ties go to fewer steps, then the order of
    ``granularities``. Records ``03.adamerging.granularity`` / ``.steps`` and the declared knobs."""
    _declare(
        profile,
        "03.adamerging",
        {"constraint": constraint, "lr": lr, "batch_size": batch_size, "held_out": held_out},
        "AdaMerging's declared fit settings",
    )
    _nonempty(granularities=granularities, steps=steps)
    for g in granularities:
        adamerging.check_knobs(g, constraint, max(steps), lr)
    if len(granularities) == 1 and len(steps) == 1:
        for knob, v in (("granularity", granularities[0]), ("steps", int(steps[0]))):
            protocol.record(profile, f"03.adamerging.{knob}", v, chosen_by="declared", data="none")
        return {"granularity": granularities[0], "steps": int(steps[0]), "evidence": []}
    targets = _check(tuning_targets, criterion, select_kw, held_out)
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
        "data": str(data),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "base": evaluate.model_fingerprint(base_model),
        "sources": _fingerprints(targets, mode, models_dir, select_kw),
    }

    def compute() -> list[dict]:
        rows = []
        base = models.load_state_dict(base_model)
        for t in targets:
            w = _sources(t, mode, models_dir, select_kw)
            sds = {loc: models.load_state_dict(models.resolve(loc, models_dir)) for loc in w}
            fit, held, _ = merge.adaptation_texts(
                t, "train", data, num_examples=adapt_num_examples, held_out=held_out, seed=seed
            )
            dev_texts, dev_labels = _dev(t, data)

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

    rows = _cached(profile, "adamerging", args, compute)
    order = {g: i for i, g in enumerate(granularities)}
    candidates = [{**r, "order": order[r["granularity"]]} for r in rows if r["step"] in set(map(int, steps))]
    score = "dev_accuracy" if criterion == "tuning-targets" else "held_out_entropy"
    means, best = _best(
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
    data_note = "dev split" if criterion == "tuning-targets" else "held-out unlabeled train text"
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
