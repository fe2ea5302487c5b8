"""The mini study's data: a smaller MASSIVE-layout folder that keeps MASSIVE parallel, cut into pools.

``subsample`` writes, per locale, the partitions of a pools design (``mu.corpus.pools``): ids ranked by a
seeded hash, the *same ids* in every locale (MASSIVE is parallel, so the N×N test sets stay parallel), each
partition a window of ranks. The ``disjoint`` design (the default, pre-registered) adds an ``unlabeled``
partition whose ids are labeled in no locale and moves the test window past the items reported before;
``parallel`` is the earlier design. The documented subsampling knobs of the mini study
(``mu.experiment.study.run``'s first stage); ``subsample_args.json`` records the design, windows, sizes and seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mu.core import paths
from mu.corpus import data as mu_data
from mu.corpus import pools

SUBSAMPLE_VERSION = 2  # 2: pools (an unlabeled partition, a test offset)


def subsample(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    locales: Sequence[str],
    *,
    train: int | None,
    dev: int | None,
    test: int | None,
    unlabeled: int | None = None,
    design: str = pools.DEFAULT_DESIGN,
    test_offset: int | None = None,
    seed: int = 0,
) -> Path:
    """Write ``<out_dir>/<locale>.jsonl`` with the partitions of ``design`` (``mu.corpus.pools.layout``: sizes
    ``train``/``dev``/``test``/``unlabeled``, ``None`` the rest of the split; ``test_offset`` None: the
    design's). Rows keep their order in ``source``; the ``unlabeled`` rows keep their intent (the file format
    requires one) but the adaptation code reads their texts only (``mu.corpus.data.unlabeled``). Every locale
    must yield the same ids (MASSIVE is parallel), else ValueError. Idempotent (``subsample_args.json``);
    atomic."""
    out = paths.resolve(out_dir)
    windows = pools.layout(design, train=train, dev=dev, test=test, unlabeled=unlabeled, test_offset=test_offset)
    args = {
        "source": str(source),
        "locales": list(locales),
        "train": train,
        "dev": dev,
        "test": test,
        "unlabeled": unlabeled,
        "test_offset": windows["test"].start,
        "design": design,
        "seed": seed,
        "version": SUBSAMPLE_VERSION,
    }
    stamp = out / "subsample_args.json"
    if stamp.is_file() and {k: v for k, v in paths.read_json(stamp).items() if k != "pools"} == args:
        return out
    reference: dict[str, list[str]] | None = None
    with paths.atomic_path(out) as tmp:
        tmp.mkdir()
        for loc in locales:
            splits = {s: mu_data.load_split(loc, s, source) for s in dict.fromkeys(w.split for w in windows.values())}
            cut = pools.cut({s: list(ds["id"]) for s, ds in splits.items()}, windows, seed)
            if reference is None:
                reference = cut
            elif cut != reference:
                raise ValueError(
                    f"{loc}: its pools hold other ids than {locales[0]}'s; MASSIVE locales share their ids"
                )
            lines = []
            for partition, w in windows.items():
                keep, ds = set(cut[partition]), splits[w.split]
                lines += [
                    json.dumps(
                        {
                            "id": uid,
                            "locale": loc,
                            "partition": partition,
                            "intent": mu_data.ID2LABEL[label],
                            "utt": text,
                        },
                        ensure_ascii=False,
                    )
                    for uid, text, label in zip(ds["id"], ds["text"], ds["label"], strict=True)
                    if uid in keep
                ]
            (tmp / f"{loc}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        sizes = {k: len(v) for k, v in (reference or {}).items()}
        record = {**args, "pools": pools.record(design, windows, sizes, seed)}
        (tmp / "subsample_args.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def recorded(folder: str | os.PathLike) -> dict:
    """The pools a subsampled folder holds (``subsample_args.json``'s ``pools``: design, windows, sizes,
    seed); a folder written before pools existed was the parallel design."""
    stamp = paths.resolve(folder) / "subsample_args.json"
    if not stamp.is_file():
        raise FileNotFoundError(f"{stamp} does not exist: {folder} was not written by mu.experiment.subsample")
    args = paths.read_json(stamp)
    return args.get("pools") or {"pools": "parallel", "ranking_seed": args.get("seed"), "note": pools.NOTES["parallel"]}


def knobs(
    design: str, windows: Mapping[str, pools.Window], unlabeled: int | None, unsampled: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The study's pool knobs for its protocol (``study.pools``, ``.unlabeled``, ``.test_offset``,
    ``.pool_ranks``); ``unsampled``: the source the study reads whole instead (no pools: MASSIVE's own splits)."""
    if unsampled is not None:
        return {"study.pools": f"none: {unsampled} read whole (MASSIVE's own splits, no unlabeled pool)"}
    return {
        "study.pools": design,
        "study.unlabeled": unlabeled,
        "study.test_offset": windows["test"].start,
        "study.pool_ranks": {k: str(w) for k, w in windows.items()},
    }


def check_adapt_split(
    profile: str, parameters: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any], design: str, subsampled: bool
) -> None:
    """Before anything runs: every notebook (``{number: its parameters}``) that adapts on the unlabeled pool
    (``adapt_split``, from ``profile``'s params and ``extra``) gets a data folder that has one."""
    from mu.batch import params

    for nb, defaults in parameters.items():
        if "adapt_split" in defaults:
            stem = params.find_notebooks([nb])[0].stem
            split = {**defaults, **params.load_params(stem, profile), **extra}["adapt_split"]
            if not subsampled and split == pools.UNLABELED:
                raise ValueError(
                    f"{stem}: adapt_split=unlabeled, but the study reads its source whole: " + pools.no_pool("it")
                )
            pools.check_adapt_split(design, split, f"{stem}: ")
