"""What the adapted family's choices share (notebooks 03 and 04): each is made without the targets'
test labels and recorded in the study's protocol (``mu.core.protocol``) with its evidence. The choices
themselves: ``mu.combine.selection_distill`` (the distilled student's teacher, init and lr) and
``mu.combine.selection_adamerging`` (AdaMerging's granularity × steps), ``mu.combine.selection_merge`` (the
pre-registered best data-free merge).

* ``CRITERIA``: ``tuning-targets`` (mean dev accuracy of the declared tuning targets) or ``label-free``
  (a label-free score on their held-out unlabeled text); ``check_targets`` and ``check_nonempty``
  refuse a choice that has nothing to measure on or among.
* What a choice reads of a target: the ``dev`` split of a tuning target (``dev_split``, the one
  labelled read) and its ``adapt_split`` texts without labels (``mu.merge.adaptation_texts``: the unlabeled
  pool in the mini study, ``mu.corpus.pools``); no choice has a path to a
  test split (tested with a data source whose test splits raise). A tuning target's sources and
  weights are chosen as for any target (``source_weights``).
* A grid is cached in ``reports/study/<profile>/tuning/<name>.json`` by its arguments (``cached``;
  ``fingerprints`` keys it by the source models, so a rerun measures nothing) and computed under a
  file lock, so parallel notebook runs compute it once.
* ``best``: the candidate with the best mean score over the tuning targets, ties broken as declared.
  One candidate is a declared value: recorded as ``declared``, nothing measured (``declare`` records
  a choice's fixed settings).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import filelock
import numpy as np
import pandas as pd

from mu.combine import ensemble
from mu.core import paths, protocol, report
from mu.corpus import data as mu_data
from mu.langs import similarity
from mu.learn import evaluate, models

CRITERIA = {
    "tuning-targets": "mean dev accuracy of the tuning targets",
    "label-free": "a label-free score on held-out unlabeled text of the tuning targets",
}
SELECT_KEYS = ("num_languages", "top_k", "sinkhorn_iters", "feature_set", "nxn", "oracle_nxn")


def check_targets(
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


def check_nonempty(**grids: Sequence[Any]) -> None:
    empty = sorted(k for k, v in grids.items() if not len(v))
    if empty:
        raise ValueError(f"{empty}: give at least one candidate (one candidate is a declared value)")


def dev_split(target: str, data: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(texts, labels) of a tuning target's dev split: the only labels the choices read."""
    ds = mu_data.load_split(target, "dev", data)
    return list(ds["text"]), np.asarray(ds["label"])


def source_weights(
    target: str, mode: str, models_dir: str | os.PathLike, select_kw: Mapping[str, Any]
) -> dict[str, float]:
    # the N×N files are read only by the weightings that rank by them (a similarity run needs neither)
    needed = {"transfer": ("nxn",), "oracle": ("nxn", "oracle_nxn")}.get(mode, ())
    kw = {**select_kw, **{k: evaluate.read_nxn(select_kw[k]) for k in needed if select_kw.get(k) is not None}}
    return similarity.select(target, ensemble.candidates(target, models_dir), mode=mode, **kw)


def cached(profile: str, name: str, args: Mapping[str, Any], compute: Callable[[], list[dict]]) -> list[dict]:
    path = paths.reports_dir("study", profile, "tuning", f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    args = report.digest(dict(args))
    with filelock.FileLock(str(path.with_suffix(".lock"))):
        if path.is_file() and paths.read_json(path).get("args") == args:
            return paths.read_json(path)["rows"]
        rows = compute()
        paths.write_json(path, {"args": args, "rows": rows, "versions": report.versions()})
    return rows


def fingerprints(
    targets: Sequence[str], mode: str, models_dir: str | os.PathLike, select_kw: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each tuning target's sources and weights under ``mode``, with the models' fingerprints (cache keys)."""
    out = {}
    for t in targets:
        w = source_weights(t, mode, models_dir, select_kw)
        out[t] = {loc: [w[loc], evaluate.model_fingerprint(models.resolve(loc, models_dir))] for loc in w}
    return out


def best(
    rows: Sequence[Mapping[str, Any]], by: Sequence[str], score: str, *, higher: bool, tie: Sequence[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """Mean ``score`` over targets per candidate (``by``); the best, ties broken by ``tie`` (ascending)."""
    frame = pd.DataFrame(rows)
    means = frame.groupby(list(by), as_index=False, sort=False).mean(numeric_only=True)
    ranked = means.sort_values([score, *tie], ascending=[not higher, *[True] * len(tie)], kind="stable")
    return means, ranked.iloc[0]


def declare(profile: str, prefix: str, knobs: Mapping[str, Any], note: str) -> None:
    for knob, value in knobs.items():
        protocol.record(
            profile, f"{prefix}.{knob}", value, chosen_by="declared", data="none (fixed before any result)", note=note
        )
