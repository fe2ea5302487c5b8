"""MergingUriel: combine models fine-tuned on other languages into a classifier
for a target language, weighted by URIEL typological similarity.

The package is a stack of wings; a wing may import only the wings below it
(``tests/test_architecture.py`` holds the rule):

    experiment   the mini study's driver, declared knobs, budget, objective comparison
    batch        notebooks x targets with papermill: runner, parameters and their checks
    publish      reports/index.html, README/docs tables, collected result files
    combine      beyond a data-free merge: ensembles, distillation, iterative training, their choices
    build        a classifier for any language from the command line: sources, card, mergekit recipe
    merge        the method catalog, its kernels, streaming merges of model folders
    learn        classifier models: load/save, fine-tune, pretrain, evaluate, the fine-tuning recipe
    analysis     result tables, statistics, claims, figures (torch-free)
    corpus       MASSIVE and the toy data, STS pairs
    langs        locales, URIEL codes and similarity weights
    core         paths and atomic writes, caches, records, the protocol, threads

Everything is imported on first use, so ``import mu`` is cheap. Notebooks and users call the
short public names, e.g. ``mu.similarity.weights(...)`` or ``mu.report.save(...)``: each is one
module of a wing (``PUBLIC``), the same object as ``mu.langs.similarity``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

WINGS = ("core", "langs", "corpus", "analysis", "learn", "merge", "build", "combine", "publish", "batch", "experiment")

# The short names notebooks, docs and users call: one module each.
PUBLIC = {
    "paths": "core",
    "cache": "core",
    "notes": "core",
    "threads": "core",
    "report": "core",
    "protocol": "core",
    "checkpoint": "core",
    "locales": "langs",
    "similarity": "langs",
    "uriel": "langs",
    "codes": "langs",
    "data": "corpus",
    "massive": "corpus",
    "toy": "corpus",
    "sts": "corpus",
    "pools": "corpus",
    "stats": "analysis",
    "families": "analysis",
    "aggregate": "analysis",
    "summary": "analysis",
    "compare": "analysis",
    "claims": "analysis",
    "seeds": "analysis",
    "methods_table": "analysis",
    "typology": "analysis",
    "plots": "analysis",
    "inference": "analysis",
    "itemwise": "analysis",
    "confirm": "analysis",
    "models": "learn",
    "bases": "learn",
    "evaluate": "learn",
    "train": "learn",
    "loop": "learn",
    "batching": "learn",
    "tracking": "learn",
    "pretrain": "learn",
    "mlm": "learn",
    "lexical": "learn",
    "tuning": "learn",
    "ensemble": "combine",
    "ensemble_eval": "combine",
    "distill": "combine",
    "student": "combine",
    "selection": "combine",
    "selection_distill": "combine",
    "selection_student": "combine",
    "selection_merge": "combine",
    "selection_adamerging": "combine",
    "iterative": "combine",
    "iterative_cycle": "combine",
    "schedule": "combine",
    "iterative_results": "combine",
    "joint": "combine",
    "cli": "build",
    "sources": "build",
    "job": "build",
    "weighting": "build",
    "target_texts": "build",
    "export": "build",
    "preflight": "build",
    "collect": "publish",
    "docs": "publish",
    "docs_results": "publish",
    "docs_bench": "publish",
    "docs_study": "publish",
    "docs_confirm": "publish",
    "site": "publish",
    "docs_architecture": "publish",
    "runner": "batch",
    "parameter_docs": "batch",
    "jobs": "batch",
    "execution": "batch",
    "params": "batch",
    "checks": "batch",
    "kernels": "batch",
    "study": "experiment",
    "subsample": "experiment",
    "study_cli": "experiment",
    "declare": "experiment",
    "budget": "experiment",
    "objectives": "experiment",
    "seeding": "experiment",
    "stages": "experiment",
}


def __getattr__(name: str):
    if name in WINGS:
        return importlib.import_module(f"mu.{name}")
    if name in PUBLIC:
        return importlib.import_module(f"mu.{PUBLIC[name]}.{name}")
    raise AttributeError(
        f"module 'mu' has no attribute {name!r}; wings: {list(WINGS)}; public modules: {sorted(PUBLIC)}"
    )


def __dir__():
    return sorted(list(globals()) + list(WINGS) + list(PUBLIC))
