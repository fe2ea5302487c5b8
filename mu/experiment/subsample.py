"""The mini study's data: a smaller MASSIVE-layout folder that keeps MASSIVE parallel.

``subsample`` keeps at most ``train``/``dev``/``test`` utterances per locale and split, the *same ids*
in every locale (MASSIVE is parallel, so the N×N test sets stay parallel); the documented subsampling
knob of the mini study (``mu.experiment.study.run``'s first stage).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from mu.core import paths
from mu.corpus import data as mu_data

SUBSAMPLE_VERSION = 1


def _rank(seed: int, uid: str) -> str:
    return hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest()


def subsample(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    locales: Sequence[str],
    *,
    train: int | None,
    dev: int | None,
    test: int | None,
    seed: int = 0,
) -> Path:
    """Write ``<out_dir>/<locale>.jsonl`` keeping, per split, the ``n`` utterances whose ids rank first
    under a seeded hash (``None``: the whole split). Ids are the same in every locale, so the kept
    utterances are translations of each other. Idempotent (``subsample_args.json``); atomic."""
    out = paths.resolve(out_dir)
    limits = {"train": train, "dev": dev, "test": test}
    bad = {k: v for k, v in limits.items() if v is not None and v < 1}
    if bad:
        raise ValueError(f"subsample sizes must be >= 1 or None, got {bad}")
    args = {"source": str(source), "locales": list(locales), **limits, "seed": seed, "version": SUBSAMPLE_VERSION}
    stamp = out / "subsample_args.json"
    if stamp.is_file() and paths.read_json(stamp) == args:
        return out
    with paths.atomic_path(out) as tmp:
        tmp.mkdir()
        for loc in locales:
            lines = []
            for split, n in limits.items():
                ds = mu_data.load_split(loc, split, source)
                ids, texts, labels = list(ds["id"]), list(ds["text"]), list(ds["label"])
                keep = sorted(range(len(ids)), key=lambda i: _rank(seed, ids[i]))[:n] if n else range(len(ids))
                lines += [
                    json.dumps(
                        {
                            "id": ids[i],
                            "locale": loc,
                            "partition": split,
                            "intent": mu_data.ID2LABEL[labels[i]],
                            "utt": texts[i],
                        },
                        ensure_ascii=False,
                    )
                    for i in sorted(keep)
                ]
            (tmp / f"{loc}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "subsample_args.json").write_text(json.dumps(args, indent=2) + "\n", encoding="utf-8")
    return out
