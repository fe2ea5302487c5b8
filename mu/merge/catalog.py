"""The method catalog: every merge method ``mu`` has, declared once, torch-free.

A method is a small typed record (``Method``): its name, family, knobs (``Knob``: type, range,
default), whether it needs the pretrained base, how its kernel reads the tensors, the statistics it
needs, its reference, mergekit's name for it, the pointers to its kernel (``apply``, ``prepare``,
``setup``: ``"module:function"``, run by ``mu.merge.stream``'s one loop, plus the arguments that make the
kernel this method) and its floor in the benchmarks. Everything else asks the catalog: the registry
builds its kernels from it, the command line and the batch runner check names and knob values
against it before any kernel starts, the docs' tables and notebook 03's introduction are generated
from it. Nothing here imports torch, so a bad name or value is answered in milliseconds.

``resolve(method, knobs)`` is the one check of a method and its knobs: an unknown method or knob, a
value of the wrong type or out of range is a ``ValueError`` saying what is wrong and what is valid,
with the same words wherever the value entered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mu.merge.spec import EPSILON, GAMMA, LAMBDA, SEED, Knob, Method, della_rule, density, rescale

_TV = {"prepare": "taskvec:prepare", "setup": "taskvec:setup"}  # the task-vector family's one kernel
_TV_SELECT = {**_TV, "floor": "select"}  # ... with a sparsifier: a selection per tensor and source
_MK = "mergekit 0.1.5"
METHODS: tuple[Method, ...] = (
    Method("linear", "averaging", "θ = Σ w_i θ_i", "taskvec:linear", reference=_MK, mergekit="linear"),
    Method(
        "task_arithmetic",
        "task vectors",
        "θ_base + λ Σ w_i δ_i (Ilharco et al., 2023)",
        "taskvec:apply",
        (LAMBDA,),
        {"sparsify": "none", "consensus": False},
        "needs",
        reference=_MK,
        mergekit="task_arithmetic",
        **_TV,
    ),
    Method(
        "ties",
        "task vectors",
        "magnitude pruning and sign election (Yadav et al., 2023)",
        "taskvec:apply",
        (density(0.5), LAMBDA, rescale(False)),
        {"sparsify": "magnitude", "consensus": True},
        "needs",
        reference=_MK,
        mergekit="ties",
        **_TV_SELECT,
    ),
    Method(
        "dare_ties",
        "task vectors",
        "random drop and rescale, sign election (Yu et al., 2024)",
        "taskvec:apply",
        (density(0.5), LAMBDA, rescale(True), SEED),
        {"sparsify": "random", "consensus": True},
        "needs",
        reference=_MK,
        mergekit="dare_ties",
        **_TV_SELECT,
    ),
    Method(
        "dare_linear",
        "task vectors",
        "random drop and rescale, summed (Yu et al., 2024)",
        "taskvec:apply",
        (density(0.5), LAMBDA, rescale(True), SEED),
        {"sparsify": "random", "consensus": False},
        "needs",
        reference=_MK,
        mergekit="dare_linear",
        **_TV_SELECT,
    ),
    Method(
        "breadcrumbs",
        "task vectors",
        "drop the smallest and the outlying entries (Davari & Belilovsky, 2024)",
        "taskvec:apply",
        (density(0.9), GAMMA, LAMBDA, rescale(False)),
        {"sparsify": "breadcrumbs", "consensus": False},
        "needs",
        reference=_MK,
        mergekit="breadcrumbs",
        **_TV_SELECT,
    ),
    Method(
        "breadcrumbs_ties",
        "task vectors",
        "breadcrumbs with sign election",
        "taskvec:apply",
        (density(0.9), GAMMA, LAMBDA, rescale(False)),
        {"sparsify": "breadcrumbs", "consensus": True},
        "needs",
        reference=_MK,
        mergekit="breadcrumbs_ties",
        **_TV_SELECT,
    ),
    Method(
        "della",
        "task vectors",
        "magnitude-ranked keep probabilities, sign election (Deep et al., 2024)",
        "taskvec:apply",
        (density(0.5), EPSILON, LAMBDA, rescale(True), SEED),
        {"sparsify": "magprune", "consensus": True},
        "needs",
        reference=_MK,
        mergekit="della",
        rule=della_rule,
        **_TV_SELECT,
    ),
    Method(
        "della_linear",
        "task vectors",
        "DELLA's keep probabilities, summed",
        "taskvec:apply",
        (density(0.5), EPSILON, LAMBDA, rescale(True), SEED),
        {"sparsify": "magprune", "consensus": False},
        "needs",
        reference=_MK,
        mergekit="della_linear",
        rule=della_rule,
        **_TV_SELECT,
    ),
    Method(
        "sce",
        "task vectors",
        "select by variance, weigh by energy, sign election (Wan et al., 2025)",
        "taskvec:apply",
        (
            Knob(
                "density", float, 1.0, "fraction of entries kept, by variance across sources", 0.0, 1.0, open_low=True
            ),
            LAMBDA,
        ),
        {"sparsify": "variance", "consensus": True, "weighting": "energy"},
        "needs",
        "ignored",
        reference=_MK,
        mergekit="sce",
        **_TV_SELECT,
    ),
    Method(
        "slerp",
        "geometric",
        "spherical interpolation of two sources, t = the second's weight",
        "geometric:slerp",
        sources=2,
        reference=_MK,
        mergekit="slerp",
        prepare="geometric:slerp_prepare",
        setup="geometric:pair_setup",
    ),
    Method(
        "nuslerp",
        "geometric",
        "spherical interpolation of two sources (of their task vectors around a base)",
        "geometric:nuslerp",
        (
            Knob("flatten", bool, True, "interpolate each tensor as one vector"),
            Knob("row_wise", bool, False, "with flatten off: interpolate rows (else columns)"),
        ),
        base="optional",
        sources=2,
        reference=_MK,
        mergekit="nuslerp",
        prepare="geometric:nuslerp_prepare",
        setup="geometric:pair_setup",
    ),
    Method(
        "multislerp",
        "geometric",
        "barycentric interpolation on the hypersphere",
        "geometric:multislerp",
        base="optional",
        reference=_MK,
        mergekit="multislerp",
        prepare="geometric:multislerp_prepare",
    ),
    Method(
        "karcher",
        "geometric",
        "weighted Karcher mean on the hypersphere",
        "geometric:karcher",
        (
            Knob("max_iter", int, 10, "iterations of the Karcher mean", 0),
            Knob("tol", float, 1e-5, "convergence tolerance", 0.0, open_low=True),
        ),
        reference=_MK,
        mergekit="karcher",
        prepare="geometric:karcher_prepare",
        setup="geometric:karcher_setup",
    ),
    Method(
        "model_stock",
        "geometric",
        "interpolation ratio from the angle between task vectors (Jang et al., 2024)",
        "geometric:model_stock",
        (Knob("filter_wise", bool, False, "one ratio per row instead of per tensor"),),
        base="needs",
        weights="ignored",
        min_sources=2,
        reference=_MK,
        mergekit="model_stock",
        prepare="geometric:model_stock_prepare",
        setup="geometric:model_stock_setup",
    ),
    Method(
        "nearswap",
        "selective",
        "take the second source where it is near the first",
        "selective:nearswap",
        (Knob("t", float, 1e-4, "distance below which an entry is swapped", 0.0),),
        sources=2,
        reference=_MK,
        mergekit="nearswap",
        setup="selective:pair_setup",
    ),
    Method(
        "arcee_fusion",
        "selective",
        "keep the entries whose change matters most (KL-scored)",
        "selective:arcee_fusion",
        (SEED,),
        sources=2,
        reference=_MK,
        mergekit="arcee_fusion",
        prepare="selective:arcee_fusion_prepare",
        setup="selective:pair_setup",
    ),
    Method(
        "ram",
        "selective",
        "reinforced agent merging: average where sources overlap",
        "selective:ram",
        (Knob("epsilon", float, 1e-5, "an entry below this magnitude counts as unchanged", 0.0),),
        base="needs",
        weights="ignored",
        reference=_MK,
        mergekit="ram",
        prepare="selective:ram_prepare",
        setup="selective:ram_setup",
        floor="select",
    ),
    Method(
        "ramplus_tl",
        "selective",
        "RAM+ with overlap-aware rescaling",
        "selective:ram",
        (
            Knob("r", float, 0.1, "rescaling strength", 0.0),
            Knob("alpha", float, 0.2, "overlap threshold", 0.0, 1.0),
            Knob("epsilon", float, 1e-5, "an entry below this magnitude counts as unchanged", 0.0),
        ),
        base="needs",
        weights="ignored",
        reference=_MK,
        mergekit="ramplus_tl",
        prepare="selective:ram_prepare",
        setup="selective:ram_setup",
        floor="select",
    ),
    Method(
        "tsv_m",
        "spectral",
        "task singular vectors, decorrelated (Gargiulo et al., 2025)",
        "spectral:tsv_m",
        (LAMBDA,),
        base="needs",
        reads="matrices",
        reference="Gargiulo et al., CVPR 2025, and the authors' code",
        setup="spectral:setup",
        floor="svd",
    ),
    Method(
        "iso_c",
        "spectral",
        "isotropic spectrum of the summed task vector (Marczak et al., 2025)",
        "spectral:iso_c",
        (LAMBDA,),
        base="needs",
        reads="matrices",
        reference="Marczak et al., ICML 2025, and the authors' code",
        setup="spectral:setup",
        floor="svd",
        floor_once=True,
    ),
    Method(
        "iso_cts",
        "spectral",
        "Iso-C with task-specific subspaces",
        "spectral:iso_cts",
        (LAMBDA, Knob("common_fraction", float, 0.8, "share of the rank kept for the common subspace", 0.0, 1.0)),
        base="needs",
        reads="matrices",
        reference="Marczak et al., ICML 2025, and the authors' code",
        setup="spectral:setup",
        floor="svd",
    ),
    Method(
        "widen",
        "disentangled",
        "WIDEN: columns scored by magnitude and direction (Yu et al., 2024)",
        "widen:apply",
        (
            Knob("threshold", float, 1.0, "calibrate scores above threshold x the tensor's mean", 0.0),
            Knob("calibration", float, 1.0, "the calibrated score"),
        ),
        base="needs",
        reference="Yu et al., 2024; the authors' MergeLLM widen_merging (9178ef9)",
        prepare="widen:prepare",
        setup="widen:setup",
        fixed={"variant": "columns"},
    ),
    Method(
        "widen_rowwise",
        "disentangled",
        "mu's earlier reading of WIDEN: rows, threshold over the sources",
        "widen:apply",
        (
            Knob("threshold", float, 1.0, "calibrate scores above threshold x the sources' mean", 0.0),
            Knob("calibration", float, 1.0, "the calibrated score"),
        ),
        base="needs",
        reference="departs from the authors' code on axis, threshold and 1-D tensors",
        prepare="widen:prepare",
        setup="widen:setup",
        fixed={"variant": "rowwise"},
    ),
    Method(
        "fisher_simple",
        "averaging",
        "mergekit-style per-tensor Fisher proxy (squared parameters)",
        "fisher:apply",
        (Knob("eps", float, 1e-12, "floor of the Fisher weights", 0.0, open_low=True),),
        reference="Matena & Raffel, 2022 (a data-free proxy)",
        prepare="fisher:prepare",
        fixed={"importance": "squares"},
    ),
    Method(
        "fisher_dataset",
        "statistics",
        "Fisher-weighted averaging with each source's empirical Fisher",
        "fisher:apply",
        (Knob("eps", float, 1e-12, "floor of the Fisher weights", 0.0, open_low=True),),
        statistics="fishers",
        reference="Matena & Raffel, NeurIPS 2022",
        prepare="fisher:prepare",
        setup="fisher:setup",
        fixed={"importance": "fishers"},
    ),
    Method(
        "regmean",
        "statistics",
        "closed-form regression mean from each source's Gram matrices",
        "regmean:apply",
        (Knob("alpha", float, 0.9, "off-diagonal scale of the Gram matrices", 0.0, 1.0),),
        reads="tensors",
        statistics="grams",
        reference="Jin et al., ICLR 2023",
        setup="regmean:setup",
    ),
    Method(
        "adamerging",
        "adaptive",
        "merge coefficients fitted by entropy on the target's unlabeled text",
        "adamerging:apply",
        (
            Knob(
                "granularity",
                str,
                "layer",
                "one coefficient per source and layer, or per source",
                choices=("layer", "task"),
            ),
            Knob("constraint", str, "simplex", "how the coefficients are kept", choices=("simplex", "clamp", "none")),
            Knob("steps", int, 100, "optimisation steps", 0),
            Knob("lr", float, 0.05, "learning rate", 0.0, open_low=True),
        ),
        base="needs",
        reads="tensors",
        statistics="coefficients",
        adaptive=True,
        reference="Yang et al., ICLR 2024",
        setup="adamerging:setup",
    ),
)

CATALOG: dict[str, Method] = {m.name: m for m in METHODS}
NAMES: tuple[str, ...] = tuple(CATALOG)


def get(method: str) -> Method:
    """The catalog's record of ``method``; an unknown name is a ValueError listing the valid ones."""
    if method not in CATALOG:
        raise ValueError(f"unknown merge method {method!r}; valid: {sorted(CATALOG)}")
    return CATALOG[method]


def resolve(method: str, knobs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every knob of ``method`` with its checked value: given ones (``None`` means the default) over the
    defaults. Unknown knobs and bad values are a ValueError."""
    spec = get(method)
    given = {k: v for k, v in (knobs or {}).items() if v is not None}
    unknown = sorted(set(given) - set(spec.defaults()))
    if unknown:
        raise ValueError(f"merge method {method!r} does not take {unknown}; its knobs: {sorted(spec.defaults())}")
    out = {k.name: k.check(method, given[k.name]) if k.name in given else k.default for k in spec.knobs}
    problem = spec.rule(out) if spec.rule else None
    if problem:
        raise ValueError(f"merge method {method!r}: {problem}")
    return out


def where(**traits: Any) -> list[str]:
    """The methods whose fields equal ``traits`` (``where(base="needs")``; a tuple means any of its values:
    ``where(base=("needs", "optional"))``), in catalog order."""

    def match(m: Method, k: str, v: Any) -> bool:
        return getattr(m, k) in v if isinstance(v, tuple) else getattr(m, k) == v

    return [m.name for m in METHODS if all(match(m, k, v) for k, v in traits.items())]


# Views of the records above for membership tests, derived here and never written by hand.
NEEDS_BASE = frozenset(where(base="needs"))
USES_BASE = frozenset(where(base=("needs", "optional")))
IGNORES_WEIGHTS = frozenset(where(weights="ignored"))
STREAMED = frozenset(where(reads="chunks"))  # given each tensor in row chunks
WHOLE_MATRICES = frozenset(where(reads="matrices"))  # read each weight matrix whole, one source at a time
ADAPTIVE = frozenset(where(adaptive=True))
PAIRWISE = frozenset(where(sources=2))
EXACT_SOURCES = {m.name: m.sources for m in METHODS if m.sources}
STATISTICS = {m.name: m.statistics for m in METHODS if m.statistics}


def markdown() -> str:
    """The catalog as a markdown table (docs and notebook 03's introduction)."""
    lines = ["| method | family | what it does | knobs (default) | base | mergekit |", "|---|---|---|---|---|---|"]
    for m in METHODS:
        knobs = ", ".join(f"`{k.name}`={k.default!r}" for k in m.knobs) or "none"
        extra = {"needs": "needed", "optional": "optional", "unused": "—"}[m.base]
        lines.append(f"| `{m.name}` | {m.family} | {m.summary} | {knobs} | {extra} | {m.mergekit or '—'} |")
    return "\n".join(lines)
