"""MASSIVE intent data: one fixed 60-intent label space, three sources.

``load_split(locale, split, source)`` returns a ``datasets.Dataset`` with
columns ``id`` (str), ``text`` (str), ``label`` (int, index into ``INTENTS``).
``source`` is ``"toy"`` (generated offline by ``mu.corpus.toy.make_toy``), ``"hub"``
(``AmazonScience/massive``), ``"massive"`` (the local MASSIVE 1.1 copy, ``mu.corpus.massive.massive_dir()``)
or a folder in the MASSIVE release layout (``<dir>/<locale>.jsonl`` or ``.jsonl.gz``, one
JSON object per line with ``partition``, ``intent``, ``utt`` and optionally ``locale`` and ``id``;
the official release archive's ``1.1/data/`` works as is). Besides MASSIVE's ``train``/``dev``/``test``, a
folder written by ``mu.experiment.subsample`` holds the ``unlabeled`` pool (``mu.corpus.pools``); the toy data
and the hub have none, and asking them for it is a ValueError saying so (adapt on ``train`` there).

MASSIVE: FitzGerald et al. 2022, "MASSIVE: A 1M-Example Multilingual Natural Language
Understanding Dataset with 51 Typologically-Diverse Languages", CC BY 4.0.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
from collections.abc import Sequence

from datasets import Dataset

from mu.core import paths
from mu.corpus import massive, pools, toy

# The label space and the splits are part of this module's interface (a split's ``label`` indexes
# ``INTENTS``); their home is the MASSIVE format, mu.corpus.massive.
from mu.corpus.massive import ID2LABEL, INTENTS, LABEL2ID, SPLITS  # noqa: F401

HUB_DATASET = "AmazonScience/massive"


def _check_split(split: str, source: object = None) -> None:
    if split not in pools.PARTITIONS:
        raise ValueError(f"unknown split {split!r}; valid: {list(pools.PARTITIONS)} (the hub's 'validation' is 'dev')")
    if split == pools.UNLABELED and source in ("toy", "hub"):
        raise ValueError(pools.no_pool(f"data source {source!r}"))


def load_split(locale: str, split: str, source: str | os.PathLike = "toy") -> Dataset:
    """One locale's split as a Dataset with columns ``id``, ``text``, ``label``.

    Memoised per process (a local file by its path, size and modification time), so
    loops such as the N×N matrix read and validate each split once.
    """
    _check_split(split, source)
    if source == "hub":
        return _load_hub(locale, split)
    if source == "toy":
        if locale not in toy.TOY_LOCALES:
            raise ValueError(f"unknown toy locale {locale!r}; valid: {toy.TOY_LOCALES}")
        folder = toy.make_toy()
    elif source == "massive":
        folder = massive.massive_dir()
        if not folder.is_dir():
            raise ValueError(
                f"data source 'massive': {folder} does not exist; put MASSIVE 1.1 "
                f"(<locale>.jsonl[.gz]) there or set ${massive.MASSIVE_ENV} to its folder"
            )
    else:
        folder = paths.resolve(source)
        if not folder.is_dir():
            raise ValueError(f"data source {str(source)!r} is neither 'toy', 'hub', 'massive' nor an existing folder")
    stat = massive.locale_file(folder, locale).stat()
    return _load_local(str(folder), locale, split, (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=512)
def _load_local(folder: str, locale: str, split: str, version: tuple[int, int] | None) -> Dataset:
    rows = massive.read_locale_file(folder, locale)[split]
    if not rows and split == pools.UNLABELED:
        raise ValueError(pools.no_pool(str(massive.locale_file(folder, locale))))
    return _to_dataset(rows, f"{massive.locale_file(folder, locale)} [{split}]")


def load_texts(locales: Sequence[str], split: str, source: str | os.PathLike = "toy") -> list[str]:
    """All utterances of ``split`` over ``locales`` (e.g. to train a toy tokenizer)."""
    return [t for loc in locales for t in load_split(loc, split, source)["text"]]


def unlabeled(
    locale: str, split: str, source: str | os.PathLike = "toy", *, num_examples: int | None = None, seed: int = 42
) -> list[str]:
    """The utterances of one locale's split *without their labels*: the only view of a target's
    data that label-free adaptation (``mu.merge.adamerging``, ``mu.combine.distill``) receives.

    ``num_examples`` texts drawn with ``seed`` (all of them, in file order, when ``None`` or
    larger than the split). Reads the ``text`` column only. ``split="unlabeled"``: the unlabeled pool,
    no id of which is labeled in any locale (``mu.corpus.pools``).
    """
    ds = load_split(locale, split, source)
    texts = list(ds["text"])
    if num_examples is None or num_examples >= len(texts):
        return texts
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1 or None, got {num_examples}")
    return [texts[i] for i in sorted(random.Random(seed).sample(range(len(texts)), num_examples))]


def held_out(texts: Sequence[str], fraction: float, seed: int = 42) -> tuple[list[str], list[str]]:
    """(fit, held-out) of unlabeled ``texts``: ``round(fraction * n)`` texts drawn with ``seed`` are held
    out (at least one when ``fraction`` > 0, never all), both parts in their original order. The label-free
    stopping and selection rules of the adapted family score the held-out part; training sees the rest."""
    texts = [str(t) for t in texts]
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    n = 0 if fraction == 0 else min(len(texts) - 1, max(1, round(fraction * len(texts))))
    if n < (fraction > 0):
        raise ValueError(f"cannot hold out a fraction {fraction} of {len(texts)} text(s) and keep one to train on")
    held = set(random.Random(seed).sample(range(len(texts)), n))
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


def columns(ds: Dataset) -> dict[str, list]:
    """Every column of ``ds`` as a list, read in one batch: iterating a ``datasets`` column formats one row at a
    time, ~100× slower, and an N×N matrix reads every split's columns once per model."""
    return ds[:]


def fingerprint(ds: Dataset) -> str:
    """sha256 over the (id, text, label) rows of a split: identifies its content in caches."""
    h = hashlib.sha256()
    cols = columns(ds)
    for i, t, y in zip(cols["id"], cols["text"], cols["label"], strict=True):
        h.update(f"{i}\t{t}\t{y}\n".encode())
    return h.hexdigest()


def _to_dataset(rows: list[dict], where: str) -> Dataset:
    if not rows:
        raise ValueError(f"{where}: no examples")
    return Dataset.from_dict(
        {"id": [r["id"] for r in rows], "text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}
    )


# --------------------------------------------------------------------------- hub


@functools.lru_cache(maxsize=256)
def _load_hub(locale: str, split: str) -> Dataset:
    """``AmazonScience/massive`` from the hub (its parquet conversion: the repo's loader is a script,
    which ``datasets>=4`` no longer runs). Needs network."""
    import datasets

    from mu.langs import locales as _locales

    _locales.check_locale(locale)
    hub_split = {"train": "train", "dev": "validation", "test": "test"}[split]
    ds = datasets.load_dataset(
        HUB_DATASET,
        revision="refs/convert/parquet",
        data_files={hub_split: f"{locale}/{hub_split}/*.parquet"},
        split=hub_split,
    )
    feature = ds.features["intent"]
    if getattr(feature, "names", None) != INTENTS:
        raise ValueError(
            f"{HUB_DATASET} {locale}/{hub_split}: intent labels {getattr(feature, 'names', feature)} "
            f"differ from mu.corpus.data.INTENTS"
        )
    return _to_dataset(
        [{"id": str(i), "text": t, "label": y} for i, t, y in zip(ds["id"], ds["utt"], ds["intent"], strict=True)],
        f"{HUB_DATASET} {locale}/{hub_split}",
    )
