"""Result families and what each system sees of the target: nothing, unlabeled text, or labels.

A row's ``family`` (``mu.core.report.FAMILIES``) groups systems; what a system *sees* of the target
decides what it may be compared with honestly:

* ``nothing``: zero-shot systems (merges, ensembles, iterative and joint training, URIEL top-1), including
  the ``transfer`` weighting (the N×N matrix without the target's column);
* ``unlabeled text``: the ``adapted`` family (AdaMerging, ensemble distillation), which fits on
  the target's utterances without their labels (train split by default; ``-adapttest`` in the
  name means the test split's texts: transductive);
* ``labels``: ``native`` (trained on the target), the oracle baselines (best source, best
  zero-shot: picked with the target's test labels) and any ``oracle`` weighting.

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


def sees(system: str) -> str:
    """What ``system`` sees of the target: ``nothing``, ``unlabeled text (...)`` or ``labels (...)``."""
    parts = system.split("/")
    if system == NATIVE:
        return "labels (trained on the target)"
    if system in ORACLE:
        return "labels (test labels pick the model)"
    if parts[-1] == "oracle":
        return "labels (N×N column picks the sources)"
    if parts[0] == "adapted":
        split = re.search(r"-adapt(\w+)$", parts[1] if len(parts) > 1 else "")
        split = split.group(1) if split else "train"
        return f"unlabeled text ({split} split{', transductive' if split == 'test' else ''})"
    return "nothing"


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
