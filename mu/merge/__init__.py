"""Merging: methods on state dicts in one registry, data statistics, and ``merge_models``.

``METHODS``: {name: fn(state_dicts, weights, base=None, **knobs) -> state dict}.
``merge(method, state_dicts, weights, base=None, **knobs)`` validates and merges
in memory; ``merge_models(...)`` does it for model folders on disk (streaming,
saved in HF format with ``merge_details.json``). Both take ``device`` (None:
CUDA when available); the ``STREAMED`` methods compute in row chunks.

May import: core, langs, corpus, analysis, learn.
"""

from mu.merge import sweep  # notebook 03's compare_methods: every method on one target
from mu.merge.evaluation import adapt_from, adaptation_texts, comparison, evaluate_merges, merged_dir, with_average
from mu.merge.fisher import fisher_diagonal
from mu.merge.registry import (
    ADAPTIVE,
    EXACT_SOURCES,
    IGNORES_WEIGHTS,
    METHODS,
    NEEDS_BASE,
    PAIRWISE,
    STATISTICS,
    STREAMED,
    USES_BASE,
    WHOLE_MATRICES,
    check_weights,
    knobs,
    knobs_for,
    label,
    merge,
)
from mu.merge.regmean import regmean_grams
from mu.merge.run import merge_models

__all__ = [
    "ADAPTIVE",
    "EXACT_SOURCES",
    "IGNORES_WEIGHTS",
    "METHODS",
    "NEEDS_BASE",
    "PAIRWISE",
    "STATISTICS",
    "STREAMED",
    "USES_BASE",
    "WHOLE_MATRICES",
    "adapt_from",
    "adaptation_texts",
    "check_weights",
    "comparison",
    "evaluate_merges",
    "fisher_diagonal",
    "knobs",
    "knobs_for",
    "label",
    "merge",
    "merge_models",
    "merged_dir",
    "with_average",
    "regmean_grams",
    "sweep",
]
