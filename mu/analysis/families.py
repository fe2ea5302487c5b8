"""Result families and what each system sees of the target: nothing, translations, unlabeled text, or labels.

A row's ``family`` (``mu.core.report.FAMILIES``) groups systems; what a system *sees* of the target
decides what it may be compared with honestly. MASSIVE is parallel (an id is one utterance translated into
every locale), so another locale's labeled item is a translation of the target's item with the same id:

* ``nothing``: zero-shot systems (merges, ensembles, iterative and joint training, URIEL top-1) under a
  weighting that reads no transfer matrix;
* ``dev items in translation``: the ``transfer`` weighting ranks the sources by the N×N matrix without the
  target's column, i.e. by other locales' dev labels, translations of the target's dev items (the study's
  dev N×N); ranked on the test N×N it would be ``test items in translation`` (``sees(..., transfer_split="test")``),
  translations of the very items the system is scored on. Dev ids are disjoint from test ids, so the dev
  variant sees nothing of the test items. (Choices of the protocol read dev labels too: notebook 02's
  recipe the probe sources', the adapted family's the tuning targets'; never a test item.)
* ``unlabeled text``: the ``adapted`` family (AdaMerging, ensemble distillation), which fits on the target's
  utterances without their labels; the ``-adapt<split>`` suffix of its name says which: ``-adaptunlabeled``
  the unlabeled pool (``mu.corpus.pools``: no id of it is labeled in any locale); no suffix the train split,
  the texts of the labeled ids, i.e. translations of the sources' labeled training data (the parallel
  design); ``-adapttest`` the test split's texts: transductive;
* ``labels``: ``native`` (trained on the target), the oracle baselines (best source, best zero-shot:
  picked with the target's test labels) and any ``oracle`` weighting.

What a system *needs* besides (``needs``) says what it costs to build: the source models (merges,
ensembles, the adapted family, single sources), the sources' labeled data (joint and iterative training
retrain on it), or the target's labels (native).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd

NATIVE = "native"
# The seed's single-model baselines. Both are *selected with the target's test labels* (the
# best entry of the target's N×N column): upper bounds on picking one source, not zero-shot
# methods. URIEL_TOP1 is the honest counterpart: the single source URIEL ranks first
# (the similarity merge's largest weight), chosen without any target data.
BEST_ZERO_SHOT = "zero-shot/best"
BEST_SOURCE = "zero-shot/best-source"
URIEL_TOP1 = "zero-shot/uriel-top1"
ORACLE = (BEST_ZERO_SHOT, BEST_SOURCE)


def family(system: str) -> str:
    """The family a system name belongs to (its first path part; ``native`` for native)."""
    return system.split("/")[0]


TRANSFER = {
    "dev": "dev items in translation (other locales' dev labels rank the sources)",
    "test": "test items in translation (other locales' test labels rank the sources)",
}
ADAPTED = {
    "unlabeled": "unlabeled text (unlabeled pool, disjoint from every labeled id)",
    "train": "unlabeled text (train split: translations of the sources' labeled data)",
    "test": "unlabeled text (test split, transductive)",
}


def sees(system: str, *, transfer_split: str = "dev") -> str:
    """What ``system`` sees of the target: ``nothing``, ``dev items in translation (...)``, ``unlabeled text
    (...)`` or ``labels (...)``; an adapted system under ``transfer`` weighting sees both (joined by ``; ``).
    ``transfer_split``: the split of the N×N matrix the ``transfer`` weighting ranked by (the study's: dev)."""
    parts = system.split("/")
    if system == NATIVE:
        return "labels (trained on the target)"
    if system in ORACLE:
        return "labels (test labels pick the model)"
    if parts[-1] == "oracle":
        return "labels (N×N column picks the sources)"
    seen = []
    if parts[0] == "adapted":
        split = re.search(r"-adapt([a-z]+)(?:-|$)", parts[1] if len(parts) > 1 else "")
        split = split.group(1) if split else "train"
        seen.append(ADAPTED.get(split, f"unlabeled text ({split} split)"))
    if len(parts) > 1 and parts[-1].split("-")[-1] == "transfer":  # average-of-transfer: the same ranked sources
        if transfer_split not in TRANSFER:
            raise ValueError(f"transfer_split must be one of {sorted(TRANSFER)}, got {transfer_split!r}")
        seen.append(TRANSFER[transfer_split])
    return "; ".join(seen) or "nothing"


def needs(system: str) -> str:
    """What ``system`` needs besides what it sees: ``source models``, ``source data (labels)`` or ``target labels``."""
    if system == NATIVE:
        return "target labels"
    return "source data (labels)" if family(system).split("-")[0] in ("joint", "iterative") else "source models"


def table(systems: Iterable[str]) -> pd.DataFrame:
    """One row per (family, what it sees, what it needs), in the order the systems come (e.g.
    ``mu.analysis.aggregate.column_order``)."""
    frame = pd.DataFrame({"system": list(dict.fromkeys(systems))})
    frame["family"] = frame["system"].map(family)
    frame["sees"] = frame["system"].map(sees)
    frame["needs"] = frame["system"].map(needs)
    out = frame.groupby(["family", "sees", "needs"], sort=False)["system"].agg(lambda s: ", ".join(s)).reset_index()
    return out.rename(columns={"system": "systems"})
