"""Merge a target's sources under each weighting, evaluate on the target, and set the result
beside the N×N baselines (notebook 03)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

import pandas as pd

from mu.analysis import aggregate
from mu.core import paths, report
from mu.learn import models
from mu.merge.run import merge_models


def merged_dir(models_dir: str | os.PathLike, target: str, method: str, mode: str) -> os.PathLike:
    """``<models_dir>/merged/<target>/<method>-<mode>``."""
    return paths.resolve(models_dir) / "merged" / target / f"{method}-{mode}"


def with_average(
    mode: str, weights: Mapping[str, float], compare: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, dict[str, float]]:
    """``{mode: weights}`` plus the equal-weight merge of the *same* sources as its baseline.

    The baseline is named ``average`` for the URIEL ``similarity`` sources (the seed's
    ``--mode average``) and ``average-of-<mode>`` for another mode's sources, so merges of
    different source sets never share a name or a folder. ``compare``: further weightings
    ``{mode: weights}`` merged beside them (notebook 03's ``compare_modes``, e.g. ``transfer``).
    """
    equal = {loc: 1.0 / len(weights) for loc in weights}
    out = (
        {"average": equal}
        if mode == "average"
        else {mode: dict(weights), "average" if mode == "similarity" else f"average-of-{mode}": equal}
    )
    clash = sorted(set(compare or {}) & set(out))
    if clash:
        raise ValueError(f"compare modes {clash} repeat the main weighting's {sorted(out)}")
    return {**out, **{m: dict(w) for m, w in (compare or {}).items()}}


def evaluate_merges(
    method: str,
    target: str,
    weightings: Mapping[str, Mapping[str, float]],
    *,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike | None = None,
    batch_size: int = 64,
    max_seq_length: int = 128,
    adapt_split: str | None = None,
    adapt_num_examples: int | None = None,
    adapt_held_out: float = 0.0,
    keep_merged: bool = True,
    **merge_kw: Any,
) -> list[dict[str, Any]]:
    """One ``mu.core.report`` row per weighting ({mode: {locale: weight}}): merge, then evaluate on ``target``'s test split.

    Rows are named ``merge/<label>/<mode>`` with ``label = mu.merge.label(method, **knobs)``
    (the method plus any knob that differs from its default).

    Sources are the locales' models in ``models_dir``; the merged model goes to
    ``merged_dir(...)`` (skipped when already merged with the same inputs).
    ``merge_kw`` goes to ``merge_models`` (head, embeddings, seed, knobs, ...).
    The target is never a source (ValueError).

    Adaptive methods (``adamerging``) are the ``adapted`` family (``adapted/<label>/<mode>``):
    they fit on ``adapt_num_examples`` (None: all) of the target's ``adapt_split`` utterances
    *without labels*, less the ``adapt_held_out`` fraction (``adaptation_texts``: the texts distillation
    trains on; ``train`` is the usual split; ``test`` is transductive, recorded, and named
    ``<label>-adapttest``). For them ``adapt_split`` and ``seed`` (which draws the utterances) must
    be given: no hidden default decides what the adaptation sees.
    Every row carries ``seconds``: what its merge took (AdaMerging: the fit included), read from
    ``merge_details.json`` (so a reused merge reports what it cost when it was made).

    ``keep_merged=False`` deletes each merged model once evaluated, after recording its sha256 in the
    row (``model_sha256``); a rerun merges again (deterministic) and reads its evaluation from the logits cache.
    """
    from mu.learn import evaluate
    from mu.merge.catalog import ADAPTIVE
    from mu.merge.registry import knobs, label

    name = label(method, **{k: v for k, v in merge_kw.items() if k in knobs(method)})
    family = "adapted" if method in ADAPTIVE else "merge"
    if family == "adapted":
        missing = [k for k, v in (("adapt_split", adapt_split), ("seed", merge_kw.get("seed"))) if v is None]
        if missing:
            raise ValueError(
                f"{method} fits on the target's unlabeled utterances: pass {missing}. Notebook 03 "
                f"runs it in its own cells with the adamerging (granularities) and adapt_* parameters "
                f"(--set adamerging=[task]), not method={method}"
            )
        merge_kw["adapt_texts"], _, merge_kw["adapt_from"] = adaptation_texts(
            target, adapt_split, data, num_examples=adapt_num_examples, held_out=adapt_held_out, seed=merge_kw["seed"]
        )
        name += "" if adapt_split == "train" else f"-adapt{adapt_split}"
    rows = []
    for mode, weights in weightings.items():
        if target in weights:
            raise ValueError(
                f"weighting {mode!r} has the target {target} among its sources {sorted(weights)}; "
                "merges here are zero-shot (use mu.langs.similarity.select, which excludes the target)"
            )
        sources = {loc: models.resolve(loc, models_dir) for loc in weights}
        merged = merge_models(
            method,
            sources,
            weights,
            merged_dir(models_dir, target, name, mode),
            base_model=base_model,
            data=data,
            mode=mode,
            max_seq_length=max_seq_length,
            **merge_kw,
        )
        scores = evaluate.evaluate(
            merged, target, "test", data=data, batch_size=batch_size, max_seq_length=max_seq_length, items=True
        )
        rows.append(
            {
                "system": f"{family}/{name}/{mode}",
                "family": family,
                "target": target,
                **scores,
                "sources": dict(weights),
                "model": str(merged),
                "seconds": round(paths.read_json(paths.resolve(merged) / "merge_details.json")["elapsed_s"], 3),
            }
        )
        if not keep_merged:
            rows[-1]["model_sha256"] = report.sha256(merged)
            shutil.rmtree(merged)
    return rows


def adapt_from(target: str, split: str, data: str | os.PathLike, num_texts: int, seed: int) -> dict[str, Any]:
    """Where an adapted system's unlabeled texts come from (recorded); ``test`` is transductive."""
    return {
        "target": target,
        "split": split,
        "data": str(data),
        "num_texts": num_texts,
        "seed": seed,
        "labels": "none",
        "transductive": split == "test",
    }


def adaptation_texts(
    target: str, split: str, data: str | os.PathLike, *, num_examples: int | None, held_out: float, seed: int
) -> tuple[list[str], list[str], dict[str, Any]]:
    """(fit texts, held-out texts, where they come from) of ``target``'s unlabeled ``split``: what both
    adapted systems (AdaMerging, distillation) learn from. ``num_examples`` None: all of the split;
    ``held_out``: the fraction kept apart for label-free stopping and selection (``mu.corpus.data.held_out``)."""
    from mu.corpus import data as mu_data

    texts = mu_data.unlabeled(target, split, data, num_examples=num_examples, seed=seed)
    fit, held = mu_data.held_out(texts, held_out, seed)
    return fit, held, {**adapt_from(target, split, data, len(fit), seed), "num_held_out": len(held)}


def comparison(rows: list[Mapping[str, Any]], nxn: pd.DataFrame, target: str) -> pd.DataFrame:
    """The merge rows beside native, best source and best zero-shot of the N×N matrix, with 95% Wilson
    intervals, in ``mu.analysis.aggregate.column_order``."""
    frame = pd.DataFrame([dict(r) for r in rows])
    baselines, notes = aggregate.baseline_rows(frame, nxn, [target])
    table = pd.concat([frame, baselines[frame.columns.intersection(baselines.columns)]], ignore_index=True)
    intervals = [aggregate.wilson_interval(a, n) for a, n in zip(table["accuracy"], table["n"])]
    table["ci_low"], table["ci_high"] = [lo for lo, _ in intervals], [hi for _, hi in intervals]
    order = {s: i for i, s in enumerate(aggregate.column_order(table["system"]))}
    table = table.sort_values("system", key=lambda s: s.map(order)).reset_index(drop=True)
    table.attrs["notes"] = notes
    return table
