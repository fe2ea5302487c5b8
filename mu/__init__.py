"""MergingUriel: combine models fine-tuned on other languages into a classifier
for a target language, weighted by URIEL typological similarity.

Submodules are imported on first use, so ``import mu`` is cheap and
``mu.similarity.weights(...)`` works without further imports.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "paths", "locales", "similarity", "data", "models", "train", "evaluate",
    "merge", "ensemble", "distill", "selection", "iterative", "iterative_results", "schedule", "tracking", "sts", "params", "runner", "report",
    "aggregate", "compare", "families", "plots", "notes", "cache", "site",
    "pretrain", "lexical", "study", "typology", "methods_table", "claims", "collect", "docs", "docs_study", "protocol", "tuning", "stats",
    "checkpoint", "threads", "seeds", "budget", "declare", "objectives",
    "checks", "kernels",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"mu.{name}")
    raise AttributeError(f"module 'mu' has no attribute {name!r}; submodules: {list(_SUBMODULES)}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
