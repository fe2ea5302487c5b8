"""Merging in parameter space: the method catalog, its kernels, and merges of models in memory or on disk.

``catalog``: every method declared once (name, family, knobs with types and ranges, base, how it
reads tensors, reference, kernel); ``plan.make`` checks a merge's arguments once, where they enter;
``merge(method, state_dicts, weights, base=None, **knobs)`` merges in memory, ``merge_models(...)``
model folders on disk (streaming, saved in HF format with ``merge_details.json``); both take
``device`` (None: CUDA when available). ``METHODS`` is {name: kernel}, built from the catalog.

May import: core, langs, corpus, analysis, learn.
"""

from __future__ import annotations

import importlib

# name -> the module that defines it; read on first use, so ``mu.merge.catalog`` (torch-free) is imported
# without torch by the batch runner's parameter checks
_EXPORTS = {
    "check_weights": "mu.langs.similarity",
    **dict.fromkeys(
        (
            "ADAPTIVE",
            "EXACT_SOURCES",
            "IGNORES_WEIGHTS",
            "NEEDS_BASE",
            "PAIRWISE",
            "STATISTICS",
            "STREAMED",
            "USES_BASE",
            "WHOLE_MATRICES",
        ),
        "mu.merge.catalog",
    ),
    **dict.fromkeys(
        ("adapt_from", "adaptation_texts", "comparison", "evaluate_merges", "merged_dir", "with_average"),
        "mu.merge.evaluation",
    ),
    "fisher_diagonal": "mu.merge.fisher",
    **dict.fromkeys(("METHODS", "knobs", "knobs_for", "label", "merge"), "mu.merge.registry"),
    "regmean_grams": "mu.merge.regmean",
    "merge_models": "mu.merge.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    try:  # a module of this wing: mu.merge.sweep, mu.merge.catalog, ...
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'mu.merge' has no attribute {name!r}; exports: {__all__}")
