"""What a merged model folder carries besides its weights: the model card (``README.md``) and the same
merge as a mergekit 0.1.5 configuration (``mergekit.yaml``).

``mergekit_config`` translates a merge of ``mu.merge.METHODS`` into mergekit's terms, or says why it
cannot. mu normalises the weights to sum 1 and divides every combined task vector by the weights'
sum (TIES and its kin: by the agreeing sources' weights), which is mergekit's ``normalize: true``;
mu's ``lambda_`` is mergekit's ``lambda``, SCE's ``density`` its ``select_topk``; SLERP goes from the
first source (mergekit's ``base_model``) to the second with ``t`` = the second's weight; NearSwap
and Arcee Fusion take the larger-weighted source as mergekit's ``base_model``. The tests replay
these files with mergekit and compare the tensors. ``write`` puts both (and the card's facts: sources,
URIEL similarities, knobs, base, versions, the command) into a ``python -m mu merge`` job's folder.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mu.merge import catalog

if TYPE_CHECKING:
    from mu.build.job import Job

# mergekit's parameters per method, for the methods that take them alike: per-model density / gamma /
# epsilon, a global lambda and rescale
TASK_VECTOR = (
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
)
# mergekit draws their drop masks from torch's generator, mu from its own seeded streams
RANDOM_DROPS = ("dare_ties", "dare_linear", "della", "della_linear")
# the methods mergekit has: their catalog records name mergekit's method
MERGEKIT_METHODS = tuple(m.name for m in catalog.METHODS if m.mergekit)
MERGEKIT_VERSION = "0.1.5"


def _f(x: Any) -> Any:
    """A plain Python number for YAML (numpy scalars become theirs)."""
    return x.item() if hasattr(x, "item") else x


def mergekit_config(
    method: str,
    refs: Mapping[str, str],
    weights: Mapping[str, float],
    knobs: Mapping[str, Any],
    base: str | None,
    *,
    base_adapted: bool = False,
) -> tuple[dict | None, list[str]]:
    """(mergekit configuration, notes) for merging ``refs`` ({label: folder or hub id}) with ``weights``
    (normalised, in merge order) by ``method`` with its effective ``knobs``; the configuration is None
    (and the notes say why) where mergekit has no equivalent. ``base``: the base the merge used."""
    notes: list[str] = []
    spec = catalog.get(method)
    if spec.mergekit is None:
        return None, [
            f"{method} has no mergekit equivalent (it is mu's own; mergekit {MERGEKIT_VERSION} has "
            f"{', '.join(MERGEKIT_METHODS)})"
        ]
    if base_adapted:
        return None, [
            "no mergekit equivalent: mergekit needs a base with the sources' tensors, and the sources' "
            "pretrained base has no classification head (mu used the weighted mean of the sources' heads)"
        ]
    order = list(weights)
    w = {k: float(weights[k]) for k in order}
    cfg: dict[str, Any] = {"merge_method": spec.mergekit, "dtype": "float32"}
    models: list[dict[str, Any]] = []
    params: dict[str, Any] = {}

    def each(extra: Mapping[str, Any] | None = None, names: Sequence[str] = order) -> list[dict[str, Any]]:
        return [{"model": refs[k], "parameters": {"weight": w[k], **(extra or {})}} for k in names]

    if method == "linear":
        models, params = each(), {"normalize": True}
    elif method in TASK_VECTOR:
        per = {name: _f(knobs[name]) for name in ("density", "gamma", "epsilon") if name in knobs}
        models = each(per)
        params = {"normalize": True, "lambda": _f(knobs.get("lambda_", 1.0))}
        if "rescale" in knobs:
            params["rescale"] = bool(knobs["rescale"])
        cfg["base_model"] = base
        if method in RANDOM_DROPS:
            notes.append(
                f"{method} drops entries at random: mergekit draws its own masks (torch's generator), "
                "mu draws them from streams seeded by `seed`, so a replay equals this merge in "
                "distribution, not tensor for tensor"
            )
    elif method == "slerp":
        first, second = order
        cfg["base_model"] = refs[first]
        models = [{"model": refs[first]}, {"model": refs[second]}]
        params = {"t": w[second]}
    elif method in ("nuslerp", "multislerp"):
        models = each()
        params = (
            {"nuslerp_flatten": bool(knobs["flatten"]), "nuslerp_row_wise": bool(knobs["row_wise"])}
            if method == "nuslerp"
            else {"normalize_weights": True}
        )
        if base is not None:
            cfg["base_model"] = base
    elif method == "karcher":
        if not all(math.isclose(v, 1 / len(w), rel_tol=1e-9) for v in w.values()):
            return None, [
                "karcher: mergekit's Karcher mean weighs its inputs equally; with these unequal weights "
                "it has no equivalent (equal weights would)"
            ]
        models = [{"model": refs[k]} for k in order]
        params = {"max_iter": int(knobs["max_iter"]), "tol": _f(knobs["tol"])}
    elif method in ("model_stock", "ram", "ramplus_tl", "sce"):
        if method == "sce" and float(knobs.get("lambda_", 1.0)) != 1.0:
            return None, ["sce with lambda_ != 1: mergekit's SCE has no lambda"]
        cfg["base_model"] = base
        models = [{"model": refs[k]} for k in order]
        params = {
            "model_stock": lambda: {"filter_wise": bool(knobs["filter_wise"])},
            "ram": lambda: {"epsilon": _f(knobs["epsilon"])},
            "ramplus_tl": lambda: {k: _f(knobs[k]) for k in ("r", "alpha", "epsilon")},
            "sce": lambda: {"select_topk": _f(knobs["density"])},
        }[method]()
        if spec.weights == "ignored":
            notes.append(f"{method} takes no per-model weights: the weights only chose the sources")
    elif method in ("nearswap", "arcee_fusion"):
        first, second = order
        primary, other = (second, first) if w[second] > w[first] else (first, second)
        cfg["base_model"] = refs[primary]
        models = [{"model": refs[primary]}, {"model": refs[other]}]
        params = {"t": _f(knobs["t"])} if method == "nearswap" else {}
        if method == "arcee_fusion":
            notes.append(
                "arcee_fusion: for tensors over 1M entries both sample 1M entries for the importance "
                "quantiles, mergekit from torch's generator and mu from a generator seeded per tensor, "
                "so such tensors may differ"
            )
    cfg["models"] = models
    if params:
        cfg["parameters"] = params
    return cfg, notes


def mergekit_yaml(cfg: Mapping[str, Any], command: str) -> str:
    head = (
        f"# The same merge for mergekit {MERGEKIT_VERSION}, written by mu: `{command}`\n"
        "# Replay: mergekit-yaml mergekit.yaml OUT_DIR (mu's own result is in this folder's model.safetensors)\n"
    )
    return head + yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True)


# --- the model card -------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 4) -> str:
    return "" if x is None else f"{float(x):.{digits}f}"


def model_card(
    *,
    target: Any,
    rows: Sequence[Mapping[str, Any]],
    method: str,
    knobs: Mapping[str, Any],
    weighting: str,
    base: Mapping[str, Any],
    uriel: Mapping[str, Any] | None,
    mergekit: str | None,
    mergekit_notes: Sequence[str],
    evaluation: Mapping[str, Any] | None,
    command: str,
    versions: Mapping[str, str],
    num_labels: int,
    excluded: Sequence[str],
    created: str,
) -> str:
    """``README.md`` of a merged folder: YAML front matter (library, tags, the sources as ``base_model``, the
    target's language) and a body with the target, sources and weights, URIEL similarities, method and
    knobs, base, versions, the command that made it and how to load it."""
    language = target.iso639_1 or target.code
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": [
            "merge",
            "mu",
            "mergekit" if mergekit else "model-merging",
            "uriel",
            "lang2vec",
            "intent-classification",
            method,
        ],
        "base_model": [str(r["ref"]) for r in rows],
        "base_model_relation": "merge",
        "language": [language],
    }
    name = f"{target.name} ({target.label})" if target.name else target.label
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# Intent classifier for {name}, merged by mu",
        "",
        f"A merge of {len(rows)} classifier(s) fine-tuned on other languages, made without any training "
        f"data in the target language.",
        "",
        "## Target",
        "",
        f"* language: {target.describe()}; URIEL (lang2vec) code `{target.code}`; card language `{language}`",
        f"* MASSIVE locale: {target.locale or 'none (outside MASSIVE 1.1)'}",
    ]
    if excluded:
        lines.append(f"* left out as the target's own language: {', '.join(excluded)}")
    lines += ["", "## Sources and weights", ""]
    if uriel:
        lines += [
            f"URIEL similarity: cosine of the lang2vec `{uriel['feature_set']}` vectors "
            f"(distance = 1 − similarity); top-K = {uriel['top_k']}, Sinkhorn "
            f"{uriel['sinkhorn_iters']} iterations, the {uriel['num_languages']} best kept.",
            "",
        ]
    lines += ["| source | model | language | URIEL similarity | distance | weight |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['label']} | `{r['ref']}` | {r.get('language') or 'unknown'} | {_num(r.get('similarity'))} "
            f"| {_num(r.get('distance'))} | {_num(r['weight'], 6)} |"
        )
    lines += [
        "",
        f"Weighting: `{weighting}`"
        + {
            "similarity": " (URIEL weights, as above)",
            "average": " (equal weights over the sources URIEL chose)",
            "manual": " (weights given on the command line, normalised)",
        }.get(weighting, ""),
        "",
        "## Method",
        "",
        f"* method: `{method}` (mu.merge.METHODS)"
        + (" — it ignores the weights; they chose the sources" if catalog.get(method).weights == "ignored" else ""),
        f"* knobs: `{_knobs_text(knobs)}`",
        f"* base: {base.get('text', 'none')}",
        "",
        "## mergekit",
        "",
    ]
    if mergekit:
        lines += ["The same merge as a mergekit configuration: `mergekit.yaml` (`mergekit-yaml mergekit.yaml OUT`)."]
    else:
        lines += ["No `mergekit.yaml`: there is no mergekit equivalent."]
    lines += [f"* {n}" for n in mergekit_notes]
    if evaluation:
        lines += [
            "",
            "## Evaluation",
            "",
            f"On {evaluation['data']} ({evaluation['n']} labeled utterances):",
            "",
            "| model | accuracy |",
            "|---|---|",
            f"| this merge | {_num(evaluation['merged'])} |",
        ]
        for label, acc in evaluation["sources"].items():
            lines.append(
                f"| source {label}{' (best single source)' if label == evaluation['best_source'] else ''}"
                f" | {_num(acc)} |"
            )
    lines += [
        "",
        "## How it was made",
        "",
        "```bash",
        command,
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f". Created {created}.",
        "Details of the merge (inputs' sha256, every knob): `merge_details.json`.",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'classify = pipeline("text-classification", model="PATH_OR_ID_OF_THIS_FOLDER")',
        'print(classify("wake me up at nine"))',
        "```",
        "",
        f"Labels: {num_labels} (the sources' `id2label`, in `config.json`).",
        "",
    ]
    return "\n".join(lines)


def _knobs_text(knobs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(knobs.items())) or "none"


def write(
    folder: Path,
    job: Job,
    args: argparse.Namespace,
    command: str,
    evaluation: Mapping[str, Any] | None,
    created: _dt.datetime,
) -> tuple[dict | None, list[str]]:
    """``README.md`` and, where mergekit has the method, ``mergekit.yaml`` of a ``python -m mu merge`` job in
    ``folder``; returns the mergekit configuration (None without one) and its notes."""
    import mu
    from mu.core import paths, report

    refs = {s.label: s.ref for s in job.sources}
    cfg, notes = mergekit_config(job.method, refs, job.weights, job.knobs, job.base_ref, base_adapted=job.base_adapted)
    if cfg is not None:
        paths.write_text(folder / "mergekit.yaml", mergekit_yaml(cfg, command))
    rows = []
    for s in job.sources:
        row = {
            "label": s.label,
            "ref": s.ref,
            "weight": job.weights[s.label],
            "language": s.language.describe() if s.language else None,
        }
        if job.table is not None and s.label in job.table.index:
            row["similarity"] = job.table.loc[s.label, "similarity"]
            row["distance"] = job.table.loc[s.label, "distance"]
        rows.append(row)
    uriel = (
        {k: getattr(args, k) for k in ("feature_set", "top_k", "sinkhorn_iters", "num_languages")}
        if job.table is not None
        else None
    )
    versions = {
        "mu": mu.__version__,
        **report.versions(["torch", "transformers", "lang2vec", "mergekit", "huggingface_hub"]),
    }
    card = model_card(
        target=job.target,
        rows=rows,
        method=job.method,
        knobs=job.knobs,
        weighting=job.weighting,
        base={"text": f"`{job.base_ref}` ({job.base_how})" if job.base_ref else job.base_how},
        uriel=uriel,
        mergekit=cfg and "mergekit.yaml",
        mergekit_notes=notes,
        evaluation=evaluation,
        command=command,
        versions=versions,
        num_labels=len(job.facts["labels"]),
        excluded=job.dropped,
        created=created.isoformat(timespec="seconds"),
    )
    paths.write_text(folder / "README.md", card)
    return cfg, notes
