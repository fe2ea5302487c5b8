"""The study's data pools: which MASSIVE ids each partition of the mini data folder holds (torch-free).

MASSIVE is parallel: an id is one utterance and its translations into every locale. So a text of one locale
is "unseen" only if its id is unseen in *every* locale: a target's train text is a translation of every
source's train text with the same id. The pools are therefore cut by id, the same ids in every locale.

Per split, ids are ranked by a seeded hash (``ranked``: the same order in every locale) and a partition is a
window ``[start, stop)`` of those ranks (``Window``). Two designs (``layout``):

* ``disjoint`` (the pre-registered, confirmatory design, ``params/preregistration.yaml``): ``train`` = train
  ranks ``[0, train)``, the labeled pool (sources, joint and iterative training); ``unlabeled`` = train ranks
  ``[train, train + unlabeled)``, the texts every target-side method adapts on (AdaMerging, distillation),
  no id in common with the labeled pool; ``dev`` = dev ranks ``[0, dev)``; ``test`` = test ranks
  ``[500, 500 + test)``, since earlier runs reported on ranks ``[0, 500)`` (``REPORTED_BEFORE``) and
  every earlier choice may have seen those.
* ``parallel`` (the earlier design, kept so its results stay reproducible; a disclosed variant, never
  confirmatory): no ``unlabeled`` partition; target-side methods adapt on the target's ``train`` texts,
  translations of the sources' labeled data; ``test`` = test ranks ``[0, test)``.

A size ``None`` means the rest of the split from the window's start. A window that the split cannot fill
is an error: the pools have their declared sizes or nothing is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence

LABELED_SPLITS = ("train", "dev", "test")  # MASSIVE's own partitions
UNLABELED = "unlabeled"
PARTITIONS = (*LABELED_SPLITS, UNLABELED)  # what a data folder may hold (mu.corpus.data reads them all)
DESIGNS = ("disjoint", "parallel")
DEFAULT_DESIGN = "disjoint"
TEST_OFFSET = {"disjoint": 500, "parallel": 0}
ADAPT_SPLIT = {"disjoint": UNLABELED, "parallel": "train"}  # where each design's target-side methods read text
REPORTED_BEFORE = ("test", 0, 500)  # the test ranks earlier runs reported on
# The ranking those runs used (their protocol's study.subsample_seed, notebook 02's seed): a test window past
# REPORTED_BEFORE is fresh only under the same ranking; under another seed ~1/6 of its ids were reported before.
REPORTED_SEED = 42
NOTES = {
    "disjoint": (
        "labeled pool = train ranks [0, train), unlabeled pool = train ranks [train, train+unlabeled): no id "
        "of the unlabeled pool is labeled in any locale; test = test ranks [test_offset, test_offset+test), "
        "disjoint from the test items reported before (ranks [0, 500))"
    ),
    "parallel": (
        "the earlier design, a disclosed variant (never confirmatory): no unlabeled pool, target-side methods "
        "adapt on the target's train texts (translations of the sources' labeled data); test = test ranks [0, test)"
    ),
}


@dataclasses.dataclass(frozen=True)
class Window:
    """Ranks ``[start, stop)`` of ``split``'s ids (``stop`` None: to the end of the split)."""

    split: str
    start: int
    stop: int | None

    def __str__(self) -> str:
        return f"{self.split} ranks [{self.start}, {'end' if self.stop is None else self.stop})"

    def as_list(self) -> list:
        return [self.split, self.start, self.stop]


def rank_key(seed: int, uid: str) -> str:
    """The hash an id is ranked by (the subsample's since its first version: old folders stay as they were)."""
    return hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest()


def ranked(ids: Sequence[str], seed: int) -> list[str]:
    """``ids`` in the order of their seeded hash: the same order in every locale (ids are shared)."""
    if len(set(ids)) != len(ids):
        raise ValueError("ids repeat: a pool is a set of distinct utterance ids")
    return sorted((str(i) for i in ids), key=lambda i: rank_key(seed, i))


def _size(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"pool size {name} must be an integer >= 1 or None, got {value!r}")
    return value


def layout(
    design: str = DEFAULT_DESIGN,
    *,
    train: int | None,
    dev: int | None,
    test: int | None,
    unlabeled: int | None = None,
    test_offset: int | None = None,
) -> dict[str, Window]:
    """``{partition: Window}`` of ``design`` (see the module docstring). ``test_offset`` None: the design's
    (``TEST_OFFSET``). ``unlabeled`` None under ``disjoint``: the rest of the train split after the labeled pool."""
    if design not in DESIGNS:
        raise ValueError(f"unknown pools design {design!r}; valid: {list(DESIGNS)}")
    train, dev, test, unlabeled = (
        _size(k, v) for k, v in (("train", train), ("dev", dev), ("test", test), ("unlabeled", unlabeled))
    )
    offset = TEST_OFFSET[design] if test_offset is None else test_offset
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"test_offset must be an integer >= 0, got {offset!r}")
    out = {
        "train": Window("train", 0, train),
        "dev": Window("dev", 0, dev),
        "test": Window("test", offset, None if test is None else offset + test),
    }
    if design == "parallel":
        if unlabeled is not None:
            raise ValueError(
                "the parallel design has no unlabeled pool (its target-side methods adapt on the train split's "
                f"texts); got unlabeled={unlabeled}: use the disjoint design"
            )
        return out
    if train is None:
        raise ValueError("the disjoint design needs a labeled pool size (train): the unlabeled pool starts after it")
    out[UNLABELED] = Window("train", train, None if unlabeled is None else train + unlabeled)
    return out


def cut(ids_by_split: Mapping[str, Sequence[str]], windows: Mapping[str, Window], seed: int) -> dict[str, list[str]]:
    """``{partition: ids}``: each window of ``windows`` over ``ids_by_split[split]`` ranked by ``seed``, in rank
    order. A window past the end of its split is a ValueError (the pools keep their declared sizes)."""
    order = {s: ranked(ids_by_split[s], seed) for s in dict.fromkeys(w.split for w in windows.values())}
    out = {}
    for name, w in windows.items():
        ids = order[w.split]
        if w.start >= len(ids) or (w.stop or 0) > len(ids):
            raise ValueError(f"pool {name!r} = {w}, but the {w.split} split has {len(ids)} ids")
        out[name] = ids[w.start : w.stop]
    return out


def overlaps(pools: Mapping[str, Mapping[str, Sequence[str]]], a: str, b: str) -> set[str]:
    """Ids in partition ``a`` of any locale and in partition ``b`` of any locale (``pools``: ``{locale:
    {partition: ids}}``): a translation of a text of one pool in the other. Empty when the pools are disjoint."""
    return {str(i) for p in pools.values() for i in p.get(a, ())} & {
        str(i) for p in pools.values() for i in p.get(b, ())
    }


def record(design: str, windows: Mapping[str, Window], sizes: Mapping[str, int], seed: int) -> dict:
    """What ``subsample_args.json`` and the study's protocol say about the pools."""
    return {
        "pools": design,
        "ranking_seed": seed,
        "ranks": {k: w.as_list() for k, w in windows.items()},
        "sizes": dict(sizes),
        "adapt_split": ADAPT_SPLIT[design],
        "test_disjoint_from_reported": seed == REPORTED_SEED and windows["test"].start >= REPORTED_BEFORE[2],
        "note": NOTES[design],
    }


def no_pool(where: str) -> str:
    """Why ``where`` has no ``unlabeled`` partition, and what to do instead."""
    return (
        f"{where} has no {UNLABELED!r} partition: only a folder written by mu.experiment.subsample.subsample "
        f"with the disjoint design (python -m mu study's default) holds the unlabeled pool. The toy data and the "
        f"hub have MASSIVE's train/dev/test only: adapt on 'train' there (adapt_split=train, the parallel design)"
    )


def check_adapt_split(design: str, adapt_split: str, where: str = "") -> None:
    """A ``parallel`` data folder has no unlabeled pool: asking to adapt on it is an error before anything runs."""
    if design == "parallel" and adapt_split == UNLABELED:
        raise ValueError(
            f"{where}adapt_split=unlabeled, but the parallel design has no unlabeled pool: "
            "--set adapt_split=train (the earlier design's texts), or use the disjoint pools"
        )
