"""One declaration per notebook parameter: its type and range (or its valid names).

``mu.batch.runner`` checks every parameter of a batch against ``PARAMETERS`` before any kernel starts
(a bad value from a profile or ``--set`` is a ``ValueError``: exit 2 on the command line, in well
under a second), and each notebook checks its own parameters with the same declarations in its
first cell (``mu.batch.checks.notebook(stem, globals())``), so both say the same thing::

    03_merging: top_k='abc' (--set) is not valid; valid: an integer >= 1

A notebook parameter without a declaration here is not checked; ``tests/test_checks.py`` requires
one for every parameter of every notebook in ``notebooks/``. The library functions keep their own
argument checks (they are an API of their own).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

# Valid names, copied from the module that owns them ("module:ATTR"): those import numpy, pandas, torch,
# transformers, datasets or lang2vec (seconds), so the runner answers without importing them.
# tests/test_checks.py pins each copy to its owner, so they cannot drift apart.
KNOB_PARAMETERS = ("density", "lambda_", "gamma", "alpha")  # notebook 03's merge knobs
NAMES: dict[str, tuple[str, ...]] = {
    "mu.langs.similarity:MODES": ("similarity", "average", "transfer", "oracle"),
    "mu.langs.similarity:SIMILARITY_SOURCES": ("sparse", "dense"),
    "mu.combine.ensemble:METHODS": ("majority", "weighted_majority", "soft", "uriel_logits"),
    "mu.combine.selection:CRITERIA": ("tuning-targets", "label-free"),
    "mu.merge.adamerging:GRANULARITIES": ("layer", "task"),
    "mu.merge.adamerging:CONSTRAINTS": ("simplex", "clamp", "none"),
    "mu.corpus.pools:PARTITIONS": ("train", "dev", "test", "unlabeled"),
    "mu.learn.tracking:BACKENDS": ("tensorboard", "wandb", "mlflow"),
    "mu.langs.uriel:FEATURE_SETS": (
        "syntax_wals",
        "phonology_wals",
        "syntax_sswl",
        "syntax_ethnologue",
        "phonology_ethnologue",
        "inventory_ethnologue",
        "inventory_phoible_aa",
        "inventory_phoible_gm",
        "inventory_phoible_saphon",
        "inventory_phoible_spa",
        "inventory_phoible_ph",
        "inventory_phoible_ra",
        "inventory_phoible_upsid",
        "syntax_knn",
        "phonology_knn",
        "inventory_knn",
        "syntax_average",
        "phonology_average",
        "inventory_average",
        "fam",
        "id",
        "geo",
        "learned",
    ),
}


class _Words:
    """Words computed when shown (a light module's list of names is imported only when needed)."""

    def __init__(self, make: Callable[[], str]):
        self.make = make

    def __str__(self) -> str:
        return self.make()


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a parameter accepts: ``valid`` says it in words (the error message quotes it), ``ok`` tests a value."""

    valid: str | _Words
    ok: Callable[[Any], bool]


def _names(source: str) -> tuple[str, ...]:
    """Valid names: a copy in ``NAMES``, else ``module:ATTR`` of a light module (``mu.langs.locales``), imported when needed."""
    if source in NAMES:
        return NAMES[source]
    module, attr = source.split(":")
    return tuple(getattr(importlib.import_module(module), attr))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def integer(low: int, high: int | None = None) -> Spec:
    words = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return Spec(words, lambda v: _is_int(v) and v >= low and (high is None or v <= high))


def number(
    low: float | None = None, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Spec:
    """A finite number (an int counts), within the bounds given (closed unless ``open_*``)."""
    if low is None and high is None:
        return Spec("a finite number", _is_number)
    if high is None:
        words = f"a number {'>' if open_low else '>='} {low}"
    else:
        words = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    def ok(v: Any) -> bool:
        if not _is_number(v):
            return False
        above = low is None or (v > low if open_low else v >= low)
        below = high is None or (v < high if open_high else v <= high)
        return above and below

    return Spec(words, ok)


BOOLEAN = Spec("true or false", lambda v: isinstance(v, bool))
TEXT = Spec("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))


def one_of(source: str, *extra: str) -> Spec:
    """One of the names of ``source`` (see ``_names``) or ``extra``; nothing is imported until a value is checked."""
    return Spec(
        _Words(lambda: "one of " + ", ".join(repr(n) for n in (*extra, *_names(source)))),
        lambda v: isinstance(v, str) and v in (*extra, *_names(source)),
    )


def list_of(item: Spec, *, empty: bool = False) -> Spec:
    """A list of distinct items (non-empty unless ``empty``)."""

    def ok(v: Any) -> bool:
        return (
            isinstance(v, list)
            and (empty or bool(v))
            and all(item.ok(x) for x in v)
            and len({repr(x) for x in v}) == len(v)
        )

    size = "a" if empty else "a non-empty"
    return Spec(_Words(lambda: f"{size} list of distinct items, each {item.valid}"), ok)


def optional(spec: Spec) -> Spec:
    return Spec(_Words(lambda: f"null (None) or {spec.valid}"), lambda v: v is None or spec.ok(v))


def either(*specs: Spec) -> Spec:
    return Spec(_Words(lambda: " or ".join(str(s.valid) for s in specs)), lambda v: any(s.ok(v) for s in specs))


LOCALE = one_of("mu.langs.locales:LOCALES")
MODE = one_of("mu.langs.similarity:MODES")
FEATURE_SET = Spec(
    _Words(
        lambda: (
            "URIEL feature sets joined by '+' (e.g. 'syntax_knn+phonology_knn'), each one of "
            + ", ".join(NAMES["mu.langs.uriel:FEATURE_SETS"])
        )
    ),
    lambda v: isinstance(v, str) and all(p in NAMES["mu.langs.uriel:FEATURE_SETS"] for p in v.split("+")),
)
BACKEND = one_of("mu.learn.tracking:BACKENDS")
SCORE_RANGE = Spec(
    "[low, high]: two numbers with low < high",
    lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)) and v[0] < v[1],
)
POSITIVE = integer(1)

# Every notebook parameter, by name (a name means the same in every notebook).
PARAMETERS: dict[str, Spec] = {
    # injected by the runner
    "profile": TEXT,
    "target_lang": LOCALE,
    # data, models and what they are trained on
    "data": Spec("'toy', 'hub', 'massive' or a folder in MASSIVE layout (a non-empty string)", TEXT.ok),
    "models_dir": TEXT,
    "base_model": TEXT,
    "locales": list_of(LOCALE),
    # max_epochs / lr None (notebook 05): the one-shot sources' own (like for like, mu.combine.iterative_results)
    "epochs": number(0, open_low=True),
    "max_epochs": optional(POSITIVE),
    "batch_size": POSITIVE,
    "lr": optional(number(0, open_low=True)),
    "max_seq_length": integer(2, 512),
    "seed": integer(0),
    "report_to": either(one_of("mu.learn.tracking:BACKENDS", "none"), list_of(BACKEND)),
    # source selection and weights (mu.langs.similarity)
    "mode": MODE,
    "modes": list_of(MODE),
    "compare_modes": list_of(MODE, empty=True),
    "num_languages": POSITIVE,
    "top_k": POSITIVE,
    "sinkhorn_iters": POSITIVE,
    "feature_set": FEATURE_SET,
    "feature_sets": list_of(FEATURE_SET),
    "similarity_source": one_of("mu.langs.similarity:SIMILARITY_SOURCES"),
    # merging (mu.merge): None = the method's default knob
    "method": one_of("mu.merge.catalog:NAMES"),
    "merge_algorithm": one_of("mu.merge.catalog:NAMES"),
    # the method's knobs: any number here; their ranges are the catalog's, checked with the method (merge_knobs)
    **dict.fromkeys(KNOB_PARAMETERS, optional(number())),
    "head": either(Spec("'merge'", lambda v: v == "merge"), LOCALE),
    "embeddings": either(Spec("'merge'", lambda v: v == "merge"), LOCALE),
    "fisher_num_examples": POSITIVE,
    "fisher_batch_size": POSITIVE,
    # label-free adaptation: AdaMerging and distillation on the target's unlabeled utterances
    "compare_methods": either(
        Spec("'all'", lambda v: v == "all"), list_of(one_of("mu.merge.catalog:NAMES"), empty=True)
    ),
    "adamerging": list_of(one_of("mu.merge.adamerging:GRANULARITIES"), empty=True),
    "adapt_constraint": one_of("mu.merge.adamerging:CONSTRAINTS"),
    "adapt_steps": list_of(integer(0)),
    "adapt_selection": one_of("mu.combine.selection:CRITERIA"),
    "adapt_held_out": number(0, 1, open_high=True),
    "tuning_targets": list_of(LOCALE, empty=True),
    "distill": BOOLEAN,
    "distill_teachers": optional(list_of(TEXT)),
    "distill_selection": one_of("mu.combine.selection:CRITERIA"),
    "distill_inits": either(Spec("'all'", lambda v: v == "all"), list_of(one_of("mu.merge.catalog:NAMES"))),
    "distill_lrs": list_of(number(0, open_low=True)),
    "distill_eval_every": optional(POSITIVE),
    "distill_patience": POSITIVE,
    "adapt_lr": number(0, open_low=True),
    "adapt_split": one_of("mu.corpus.pools:PARTITIONS"),
    "adapt_num_examples": optional(POSITIVE),
    "adapt_batch_size": POSITIVE,
    "distill_mode": optional(MODE),
    "distill_temperature": number(0, open_low=True),
    "distill_epochs": POSITIVE,
    "distill_lr": number(0, open_low=True),
    "distill_batch_size": POSITIVE,
    # STS of base, sources and merges (mu.corpus.sts)
    "sts_data": Spec("'toy', 'hub' or a .tsv / .jsonl file (a non-empty string)", TEXT.ok),
    "sts_locale": optional(LOCALE),
    "sts_score_range": SCORE_RANGE,
    # ensembling (mu.combine.ensemble)
    "methods": list_of(one_of("mu.combine.ensemble:METHODS")),
    "max_k": POSITIVE,
    "keep_merged": BOOLEAN,
    # iterative training and its schedule (mu.combine.iterative, mu.combine.schedule)
    "merge_frequency": POSITIVE,
    "iterative": BOOLEAN,
    "adaptive_schedule": BOOLEAN,
    "min_interval": POSITIVE,
    "max_interval": POSITIVE,
    "patience": POSITIVE,
    "convergence_threshold": number(0),
    "performance_drop": number(0),
    # joint training on the sources' labeled data (mu.combine.joint): weightings whose sources train one model
    # together, "all" for every non-target source; joint_all_examples None: joint/similarity's example budget
    "joint": list_of(one_of("mu.langs.similarity:MODES", "all"), empty=True),
    "joint_all_examples": optional(POSITIVE),
    # aggregation (mu.analysis.aggregate)
    "n_boot": POSITIVE,
    "min_pairs": POSITIVE,
    "average_system": TEXT,
    "seeds": list_of(integer(0), empty=True),
    "seed_targets": list_of(LOCALE, empty=True),
    # the confirmatory analysis (mu.analysis.confirm) of the registered hypotheses
    "preregistration": TEXT,
    "confirmatory": BOOLEAN,
}

# Rules between parameters, checked once each one is valid on its own: (names, test, what is valid).
RULES: list[tuple[tuple[str, ...], Callable[..., bool], str]] = [
    (("min_interval", "max_interval"), lambda lo, hi: lo <= hi, "min_interval <= max_interval"),
    (("mode", "compare_modes"), lambda m, others: m not in others, "compare_modes must not repeat mode"),
]


def problem(name: str, value: Any, origin: str = "") -> str | None:
    """Why ``value`` is not valid for parameter ``name`` (None when it is, or ``name`` has no declaration)."""
    spec = PARAMETERS.get(name)
    if spec is None or spec.ok(value):
        return None
    hint = ""
    if isinstance(value, str):
        try:
            if math.isfinite(float(value)):
                hint = " (YAML reads it as text: write numbers with a dot, e.g. 1.0e-3)"
        except ValueError:
            pass
    return f"{name}={value!r}{f' ({origin})' if origin else ''} is not valid; valid: {spec.valid}{hint}"


def merge_knobs(values: Mapping[str, Any]) -> str | None:
    """The merge knobs among ``values`` checked against the catalog for ``values["method"]`` (what
    ``mu.merge.knobs_for`` does in the notebook): a knob the method does not take, or out of its range."""
    from mu.merge import catalog  # torch-free

    given = {k: values[k] for k in KNOB_PARAMETERS if values.get(k) is not None}
    if "method" not in values or not given:
        return None
    try:
        catalog.resolve(values["method"], given)
    except ValueError as e:
        return str(e)
    return None


def check_values(values: Mapping[str, Any], where: str, origins: Mapping[str, str] | None = None) -> None:
    """Check each declared parameter in ``values`` and the rules between them; a ``ValueError`` names
    every bad one (``origins``: where each value came from, e.g. ``--set``)."""
    origins = origins or {}
    bad = [p for name, value in values.items() if (p := problem(name, value, origins.get(name, ""))) is not None]
    if not bad:
        for names, test, words in RULES:
            if all(n in values for n in names) and not test(*(values[n] for n in names)):
                given = ", ".join(f"{n}={values[n]!r}" for n in names)
                bad.append(f"{given} is not valid: {words}")
        if (knobs := merge_knobs(values)) is not None:
            bad.append(knobs)
    if bad:
        raise ValueError(f"{where}: " + "; ".join(bad))


def check_batch(
    stem: str,
    defaults: Mapping[str, Any],
    profile_values: Mapping[str, Any],
    extra: Mapping[str, Any],
    params_path: str,
) -> None:
    """What ``mu.batch.runner`` checks before any kernel starts: a notebook's parameters as the runner would inject
    them (its ``defaults`` ∪ the params file's ``profile_values`` ∪ ``extra`` from ``--set``), each
    error naming where the value came from."""
    origins = {
        **{k: "notebook default" for k in defaults},
        **{k: params_path for k in profile_values},
        **{k: "--set" for k in extra},
    }
    check_values({**defaults, **profile_values, **extra}, where=stem, origins=origins)


def notebook(stem: str, namespace: Mapping[str, Any]) -> None:
    """A notebook's first check: its parameters (names from its ``parameters`` cell, values from
    ``namespace``, e.g. ``globals()``) against the same declarations the runner uses."""
    from mu.batch import params

    check_values(params.current_params(stem, namespace), where=stem)
