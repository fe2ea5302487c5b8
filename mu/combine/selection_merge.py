"""Choices among merge methods measured on the declared tuning targets, and the loop they share.

* ``each_merge``: for one tuning target, every candidate method's merge of that target's sources and
  weights under a weighting, loaded for scoring and deleted afterwards (the distilled student's init,
  ``mu.combine.selection_student``, scores its candidates with it too);
* ``choose_confirmatory_merge``: the pre-registered "best data-free merge", the data-free method whose
  equal-weight merge has the highest mean dev accuracy over the tuning targets, recorded as
  ``03.confirmatory_merge``. The comparator (the equal-weight ``linear`` merge) is not a candidate: a
  hypothesis "the best merge beats linear" with linear among the candidates could compare linear with itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from mu import merge
from mu.combine import selection
from mu.core import paths, protocol
from mu.learn import evaluate, models
from mu.merge import catalog

KNOB = "03.confirmatory_merge"
MODE = "average"  # the registered hypothesis compares equal-weight merges


def data_free(comparator: str = "linear") -> list[str]:
    """The data-free methods (no statistics of the sources' data, not fitted on the target's text), in catalog
    order, less ``comparator``."""
    return [m for m in catalog.where(statistics=None, adaptive=False) if m != comparator]


def candidates(methods: str | Sequence[str], comparator: str = "linear") -> list[str]:
    """The data-free methods among ``methods`` (``"all"`` or names, ``mu.merge.sweep.check_methods``)."""
    free = set(data_free(comparator))
    return [m for m in merge.sweep.check_methods(methods) if m in free]


def each_merge(
    target: str,
    methods: Sequence[str],
    weights: Mapping[str, float],
    *,
    mode: str,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike,
    max_seq_length: int,
    seed: int,
) -> Iterator[tuple[str, Any, Any, str]]:
    """``(method, model, tokenizer, "")`` for each of ``methods`` merging ``weights``' sources for ``target``,
    or ``(method, None, None, why)`` when the method cannot merge them (a pairwise method and five sources). A
    merge made here is deleted once the caller moves on; one that existed before is kept."""
    srcs = {loc: models.resolve(loc, models_dir) for loc in weights}
    for method in methods:
        why = merge.sweep.not_applicable(method, weights)
        if why:
            yield method, None, None, why
            continue
        out = merge.merged_dir(models_dir, target, method, mode)
        existed = paths.resolve(out).exists()
        merged = merge.merge_models(
            method,
            srcs,
            weights,
            out,
            base_model=base_model,
            data=data,
            mode=mode,
            max_seq_length=max_seq_length,
            seed=seed,
        )
        model, tokenizer = models.load_classifier(merged, shared_tokenizer=True)
        yield method, model, tokenizer, ""
        if not existed:
            shutil.rmtree(paths.resolve(merged))


def choose_confirmatory_merge(
    profile: str,
    tuning_targets: Sequence[str],
    *,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    base_model: str | os.PathLike,
    max_seq_length: int,
    batch_size: int = 64,
    seed: int = 42,
    methods: str | Sequence[str] = "all",
    comparator: str = "linear",
    **select_kw: Any,
) -> dict[str, Any]:
    """The data-free merge method among ``methods`` (``"all"`` or names; those in ``data_free(comparator)``
    are candidates; one candidate is a declared value, nothing measured) whose merge of each tuning target's equal-weight
    sources has the highest mean dev accuracy; ties go to catalog order. ``{"method", "dev_accuracy",
    "evidence"}``; records ``03.confirmatory_merge`` (chosen on the tuning targets' dev labels, never a test
    label). ``select_kw``: ``mu.langs.similarity.select``'s num_languages, top_k, sinkhorn_iters, feature_set."""
    names = candidates(methods, comparator)
    selection.check_nonempty(methods=names)
    if len(names) == 1:
        protocol.record(profile, KNOB, names[0], chosen_by="declared", data="none")
        return {"method": names[0], "dev_accuracy": None, "evidence": []}
    targets = selection.check_targets(tuning_targets, "tuning-targets", select_kw)
    args = {
        "targets": targets,
        "methods": names,
        "mode": MODE,
        "data": str(data),
        "base": evaluate.model_fingerprint(base_model),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "sources": selection.fingerprints(targets, MODE, models_dir, select_kw),
    }

    def compute() -> list[dict]:
        rows = []
        for t in targets:
            weights = selection.source_weights(t, MODE, models_dir, select_kw)
            texts, labels = selection.dev_split(t, data)
            for method, model, tokenizer, why in each_merge(
                t,
                names,
                weights,
                mode=MODE,
                models_dir=models_dir,
                data=data,
                base_model=base_model,
                max_seq_length=max_seq_length,
                seed=seed,
            ):
                if why:
                    rows.append({"target": t, "method": method, "note": why})
                    continue
                logits = evaluate.forward(model, tokenizer, texts, batch_size=batch_size, max_seq_length=max_seq_length)
                acc = float(np.mean(logits.argmax(axis=1) == labels))
                rows.append({"target": t, "method": method, "dev_accuracy": acc, "note": ""})
        return rows

    rows = selection.cached(profile, "confirmatory_merge", args, compute)
    scored = [{**r, "order": names.index(r["method"])} for r in rows if not r["note"]]
    means, best = selection.best(scored, ["method"], "dev_accuracy", higher=True, tie=["order"])
    skipped = sorted({f"{r['method']} ({r['note']})" for r in rows if r["note"]})
    protocol.record(
        profile,
        KNOB,
        best["method"],
        chosen_by="tuning-targets",
        data=f"dev split of the tuning targets {targets}",
        grid=names,
        evidence=[
            {"method": r["method"], "mean_dev_accuracy": float(r["dev_accuracy"])}
            for r in means.sort_values("order").to_dict(orient="records")
        ],
        note=f"the pre-registered best data-free merge (merge/<method>/{MODE}), compared with merge/{comparator}/"
        f"{MODE}, which is not a candidate" + (f"; not applicable: {', '.join(skipped)}" if skipped else ""),
    )
    return {"method": best["method"], "dev_accuracy": float(best["dev_accuracy"]), "evidence": rows}
