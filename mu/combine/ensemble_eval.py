"""Ensembles scored on a target's split, from the logits ``mu.combine.ensemble`` reads from the cache.

* ``evaluate_ensemble``: one method with one weighting.
* ``table``: every method × weighting mode (``mu.langs.similarity.select``, as merging), notebook 04's table.
* ``accuracy_vs_k``: accuracy against the number of top-K sources, each K's ensembles beside the merge of
  the same sources and weights.
* ``describe_inputs``: what a ``mu.core.report`` row of an ensemble was computed from.

The ensembles themselves (``mu.combine.ensemble.combine``) read logits that ``mu.learn.evaluate`` stored for
each source on the target's split, so a new weighting or top-K costs milliseconds and no model forward.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mu.combine import ensemble
from mu.core import paths
from mu.langs import similarity


def score(
    pred: np.ndarray, labels: np.ndarray, num_labels: int, ids: Sequence[str] | None = None
) -> dict[str, float | int]:
    """``mu.learn.evaluate.metrics`` (accuracy, macro-F1, n; with the examples' ``ids``, per-item results) of
    predicted label ids."""
    from mu.learn import evaluate

    return evaluate.metrics(np.eye(num_labels, dtype=np.float32)[pred], labels, ids)


def evaluate_ensemble(
    method: str,
    target: str,
    weights: Mapping[str, float],
    *,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    max_seq_length: int = 128,
) -> dict[str, float | int]:
    """Metrics of ``method`` with ``weights`` on ``target``'s split, from cached logits only (no forward)."""
    ensemble.check_method(method)
    logits, labels = ensemble.source_logits(
        target, list(weights), models_dir=models_dir, data=data, split=split, max_seq_length=max_seq_length
    )
    pred = ensemble.combine(method, logits, weights)
    return score(pred, labels, next(iter(logits.values())).shape[1])


def _read_nxn(nxn: pd.DataFrame | str | os.PathLike | None) -> pd.DataFrame | None:
    from mu.learn import evaluate

    return nxn if nxn is None or isinstance(nxn, pd.DataFrame) else evaluate.read_nxn(paths.resolve(nxn))


def describe_inputs(
    target: str,
    sources: Sequence[str],
    *,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    max_seq_length: int = 128,
    nxn: str | os.PathLike | None = None,
    oracle_nxn: str | os.PathLike | None = None,
) -> dict[str, dict[str, str]]:
    """``mu.core.report`` inputs of an ensemble run: each source model (sha256 of its config and weights,
    ``mu.learn.evaluate.model_fingerprint``), its cached logits file on the target's split, and the N×N file."""
    from mu.core import report
    from mu.corpus import data as mu_data
    from mu.learn import evaluate, models

    ds = mu_data.load_split(target, split, data)
    out: dict[str, dict[str, str]] = {}
    for loc in sources:
        folder = models.resolve(loc, models_dir)
        out[f"model/{loc}"] = {"path": str(folder), "sha256": evaluate.model_fingerprint(folder)}
        out[f"logits/{loc}"] = report.describe_input(evaluate.cache_path(folder, ds, target, split, max_seq_length))
    for key, path in (("nxn", nxn), ("oracle_nxn", oracle_nxn)):
        if path is not None:
            out[key] = report.describe_input(paths.resolve(path))
    return out


def table(
    target: str,
    *,
    methods: Sequence[str],
    modes: Sequence[str],
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    num_languages: int = 5,
    top_k: int = 20,
    sinkhorn_iters: int = 20,
    feature_set: str = similarity.DEFAULT_FEATURE_SET,
    nxn: pd.DataFrame | str | os.PathLike | None = None,
    oracle_nxn: pd.DataFrame | str | os.PathLike | None = None,
    split: str = "test",
    max_seq_length: int = 128,
    compute: bool = False,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Every ensemble method × weighting mode on ``target``'s ``split``, from cached logits (no forward;
    ``compute=True`` computes and caches what is missing, as ``source_logits``).

    Weights come from ``mu.langs.similarity.select`` (the same as merging) over the
    sources that have a model in ``models_dir`` (``transfer`` ranks by ``nxn``, the study's dev N×N;
    ``oracle`` by ``oracle_nxn``, its test N×N, default ``nxn``); each source's logits are read
    once. One row per (method, mode): ``system`` ("ensemble/<method>/<mode>"),
    ``family``, ``method``, ``mode``, ``accuracy``, ``macro_f1``, ``n``, ``items`` (per-item results,
    ``mu.core.report.items``), ``sources``.
    """
    for m in methods:
        ensemble.check_method(m)
    available = ensemble.candidates(target, models_dir)
    select_kw = dict(
        num_languages=num_languages,
        top_k=top_k,
        sinkhorn_iters=sinkhorn_iters,
        nxn=_read_nxn(nxn),
        oracle_nxn=_read_nxn(oracle_nxn),
        feature_set=feature_set,
    )
    by_mode = {mode: similarity.select(target, available, mode=mode, **select_kw) for mode in modes}
    needed = list(dict.fromkeys(loc for w in by_mode.values() for loc in w))
    logits, labels = ensemble.source_logits(
        target,
        needed,
        models_dir=models_dir,
        data=data,
        split=split,
        max_seq_length=max_seq_length,
        compute=compute,
        batch_size=batch_size,
    )
    num_labels = next(iter(logits.values())).shape[1]
    from mu.learn import evaluate

    ids = evaluate.split_ids(target, split, data)  # the order of the cached logits (the split's)
    rows = []
    for mode, w in by_mode.items():
        for method in methods:
            pred = ensemble.combine(method, {loc: logits[loc] for loc in w}, w)
            rows.append(
                {
                    "system": f"ensemble/{method}/{mode}",
                    "family": "ensemble",
                    "method": method,
                    "mode": mode,
                    **score(pred, labels, num_labels, ids),
                    "sources": dict(w),
                }
            )
    return pd.DataFrame(rows)


def accuracy_vs_k(
    target: str,
    *,
    methods: Sequence[str],
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike,
    max_k: int,
    mode: str = "similarity",
    merge_method: str = "linear",
    top_k: int = 20,
    sinkhorn_iters: int = 20,
    feature_set: str = similarity.DEFAULT_FEATURE_SET,
    nxn: pd.DataFrame | str | os.PathLike | None = None,
    split: str = "test",
    batch_size: int = 64,
    max_seq_length: int = 128,
    keep_merged: bool = True,
) -> pd.DataFrame:
    """Accuracy on ``target`` of the top-K sources (``mode`` weights), K = 1 … min(max_k, N).

    For each K: every ensemble ``method`` from cached logits (compute them first
    with ``mu.combine.ensemble.source_logits(..., compute=True)``), and a ``merge_method`` merge of
    the same sources and weights, evaluated with ``mu.learn.evaluate.evaluate``. The
    merge (``mu.merge.merge_models``) goes to ``mu.merge.merged_dir(models_dir,
    target, merge_method, f"{mode}-k{K}")`` and is reused when its inputs are
    unchanged. N is the number
    of sources ``mu.langs.similarity.select`` returns for ``num_languages=max_k``
    (top-K may keep fewer than the available models). One row per (K, system):
    ``k``, ``system``, ``family``, ``accuracy``, ``macro_f1``, ``n``, ``sources``.

    ``keep_merged=False`` deletes each merged model once evaluated (xlm-roberta-base:
    ~1.1 GB per K); a rerun then merges again, but the merge is deterministic, so
    its evaluation is still read from the logits cache.
    """
    from mu import merge
    from mu.learn import evaluate, models

    for m in methods:
        ensemble.check_method(m)
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    available = ensemble.candidates(target, models_dir)
    select_kw = dict(mode=mode, top_k=top_k, sinkhorn_iters=sinkhorn_iters, nxn=_read_nxn(nxn), feature_set=feature_set)
    largest = similarity.select(target, available, num_languages=max_k, **select_kw)
    logits, labels = ensemble.source_logits(
        target, list(largest), models_dir=models_dir, data=data, split=split, max_seq_length=max_seq_length
    )
    num_labels = next(iter(logits.values())).shape[1]
    rows = []
    for k in tqdm(range(1, len(largest) + 1), desc=f"K on {target}", unit="K"):
        w = similarity.select(target, available, num_languages=k, **select_kw)
        for method in methods:
            pred = ensemble.combine(method, {loc: logits[loc] for loc in w}, w)
            rows.append(
                {
                    "k": k,
                    "system": f"ensemble/{method}/{mode}",
                    "family": "ensemble",
                    **score(pred, labels, num_labels),
                    "sources": dict(w),
                }
            )
        out = merge.merged_dir(models_dir, target, merge_method, f"{mode}-k{k}")
        merged = merge.merge_models(
            merge_method,
            {loc: models.resolve(loc, models_dir) for loc in w},
            w,
            out,
            base_model=base_model,
            data=data,
            mode=mode,
            max_seq_length=max_seq_length,
        )
        rows.append(
            {
                "k": k,
                "system": f"merge/{merge_method}/{mode}",
                "family": "merge",
                **evaluate.evaluate(
                    merged, target, split, data=data, batch_size=batch_size, max_seq_length=max_seq_length
                ),
                "sources": dict(w),
            }
        )
        if not keep_merged:
            shutil.rmtree(merged)
    return pd.DataFrame(rows)
