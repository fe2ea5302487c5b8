"""A ``python -m mu merge`` job: every decision made and checked before any weight is read, and the
plan that ``--dry-run`` prints.

``make(args)`` resolves the target, the candidate sources and their languages, the weights
(``mu.build.weighting``), then the merge's arguments once, as a ``mu.merge.plan.Plan`` (method,
every knob with its default, weights normalised, whether the base is given, device), which the job
carries on and nothing behind re-checks; then the chosen sources' metadata and safetensors headers
(``mu.build.preflight.check_sources``), the ``--evaluate`` data, and the base: ``--base``, else the
one the sources declare, adapted when it is shaped otherwise than the sources (an encoder without
their classification head). What a method is (needs a base, merges two sources, reads statistics,
ignores the weights) is read from its catalog record, ``mu.merge.catalog.get``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mu.build import sources as src
from mu.build import target_texts, weighting
from mu.build.sources import Source

if TYPE_CHECKING:
    from mu.merge.plan import Plan


@dataclass
class Job:
    target: Any  # mu.langs.codes.Language
    plan: Plan  # method, every knob, the weights in merge order, the base's use, the device: checked once
    weighting: str
    sources: list[Source]  # the chosen ones, in the plan's order
    table: Any  # URIEL table (pandas) or None
    dropped: list[str]  # left out as the target's own language
    base_ref: str | None
    base_how: str
    base_local: Path | None
    base_fit: dict | None
    base_adapted: bool
    facts: dict  # mu.build.preflight.check_sources
    memory: dict  # mu.build.preflight.memory_estimate
    evaluation: target_texts.EvalData | None

    @property
    def method(self) -> str:
        return self.plan.name

    @property
    def weights(self) -> dict[str, float]:
        return self.plan.weights

    @property
    def knobs(self) -> dict[str, Any]:
        return self.plan.knobs


def _given_knobs(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``--set`` as knobs, mergekit's ``lambda`` under mu's name (``lambda`` is a Python keyword)."""
    return {("lambda_" if k == "lambda" else k): v for k, v in pairs}


def make(args: argparse.Namespace) -> Job:
    """Everything decided and checked, nothing merged: weights, the plan, sources' metadata and headers, base."""
    from mu.build import preflight
    from mu.langs import codes
    from mu.merge import catalog, plan

    target = codes.resolve(args.target)
    spec = catalog.get(args.method)
    args.weighting = args.weighting or ("manual" if args.weights else "similarity")
    if spec.adaptive and not args.adapt_texts:
        raise ValueError(f"merge method {spec.name} needs --adapt-texts (unlabeled target texts)")
    candidates = src.candidates(args, models_only=True)
    if args.weighting != "manual":  # URIEL needs every language; manual weights name the sources
        src.languages_from_cards(candidates)
    candidates, dropped = weighting.without_target(target, candidates)
    if not candidates:
        raise ValueError(f"no source is left for {target.label} (its own language is excluded)")
    weights, table = weighting.choose(args, target, candidates, dropped)
    # The merge's arguments, checked once, here: before any model file is fetched. A method that needs
    # the base is planned with one: the base the sources declare is found below, or it is an error
    # asking for --base.
    checked = plan.make(
        spec.name,
        weights,
        _given_knobs(args.knobs),
        base=spec.base == "needs" or args.base is not None,
        device=args.device,
        seed=args.seed,
    )
    by_label = {s.label: s for s in candidates}
    chosen = [by_label[k] for k in checked.weights]
    if table is None:
        table = weighting.similarity_table(target, chosen, args)
    if spec.statistics and not spec.adaptive:
        bad = [s.label for s in chosen if s.language is None or s.language.locale != s.label]
        if bad:
            raise ValueError(
                f"{spec.name} computes statistics on each source's MASSIVE train split: every source must "
                f"be a MASSIVE locale, not {bad}"
            )
    for s in chosen:
        src.fetch_meta(s)
    for s in chosen:
        s.header = src.header_of(s)
    facts = preflight.check_sources({s.label: s.local for s in chosen}, {s.label: s.header for s in chosen})
    evaluation = target_texts.eval_data(args, facts["labels"]) if args.evaluate else None
    base_ref, base_how = _base(args, spec, chosen)
    base_local, fit, adapted = None, None, False
    if base_ref is not None:
        base_src = Source(
            label="<base>", given=base_ref, ref=base_ref, local=Path(base_ref) if Path(base_ref).is_absolute() else None
        )
        src.fetch_meta(base_src)
        base_head = src.header_of(base_src)
        preflight.check_base_vocab(base_src.local, chosen[0].local)
        fit = preflight.base_fit(base_head, chosen[0].header)
        adapted = not (
            preflight.same_as_sources(fit, base_head, chosen[0].header)
            and preflight.configs_agree(base_src.local, chosen[0].local)
        )
        base_local = base_src.local
        if adapted:
            base_how += (
                "; it is shaped otherwise than the sources (no classification head): its encoder with the "
                "weighted mean of the sources' heads"
            )
    mem = preflight.memory_estimate(
        spec.name, facts["num_parameters"], facts["largest_tensor"], len(chosen), base_ref is not None
    )
    return Job(
        target,
        checked,
        args.weighting,
        chosen,
        table,
        dropped,
        base_ref,
        base_how,
        base_local,
        fit,
        adapted,
        facts,
        mem,
        evaluation,
    )


def _base(args: argparse.Namespace, spec: Any, chosen: list[Source]) -> tuple[str | None, str]:
    """(base reference or None, how it was chosen): a reference exactly where the plan gives the base."""
    from mu.build import preflight

    if spec.base == "unused":
        if args.base:
            src.say(f"--base ignored: {spec.name} does not use a base")
        return None, f"none ({spec.name} does not use one)"
    if args.base:
        ref = src.model_ref(args.base)
        if ref is None:
            raise ValueError(f"--base {args.base!r} is neither an existing folder nor a hub id (owner/name)")
        return ref, "given (--base)"
    if spec.base == "optional":
        return None, f"none ({spec.name} uses a base only when --base is given)"
    declared = {s.label: preflight.declared_base(s.local) for s in chosen}
    found = sorted({b for b in declared.values() if b})
    if not found:
        raise ValueError(
            f"merge method {spec.name} needs the sources' pretrained base, and none of the sources declares "
            "one (training_args.json, the model card's base_model, config.json's _name_or_path): pass "
            "--base (e.g. --base FacebookAI/xlm-roberta-base for the published MASSIVE models)"
        )
    if len(found) > 1 or not all(declared.values()):
        raise ValueError(f"the sources declare different pretrained bases {declared}: pass --base")
    ref = src.model_ref(found[0])
    if ref is None:
        raise ValueError(
            f"the sources declare the base {found[0]!r}, neither a folder here nor an owner/name hub id "
            "(a legacy hub name?): pass --base with its full id, e.g. --base FacebookAI/xlm-roberta-base"
        )
    return ref, "declared by the sources"


def text(job: Job, args: argparse.Namespace) -> str:
    """The plan as ``--dry-run`` prints it (and a real run on stderr)."""
    from mu.build import preflight

    n = len(job.sources)
    lines = [
        f"target: {job.target.describe()}" + ("" if job.target.locale else " (not a MASSIVE locale)"),
        f"method: {job.method}  knobs: {job.knobs or 'none'}",
        f"weighting: {job.weighting}",
    ]
    if job.table is not None and job.weighting != "manual":
        lines.append(weighting.describe_uriel(args, len(job.table)))
    if job.dropped:
        lines.append(f"left out as the target's own language: {', '.join(job.dropped)}")
    lines += ["", f"{'source':<14} {'weight':>8} {'similarity':>10} {'distance':>9}  model"]
    for s in job.sources:
        sim = dist = ""
        if job.table is not None and s.label in job.table.index:
            sim, dist = f"{job.table.loc[s.label, 'similarity']:.4f}", f"{job.table.loc[s.label, 'distance']:.4f}"
        lines.append(f"{s.label:<14} {job.weights[s.label]:>8.4f} {sim:>10} {dist:>9}  {s.ref}")
    if job.plan.method.weights == "ignored":
        lines.append(f"({job.method} ignores the weights: they chose the sources)")
    f, mem = job.facts, job.memory
    lines += [
        "",
        f"base: {job.base_ref} ({job.base_how})" if job.base_ref else f"base: {job.base_how}",
        f"labels: {len(f['labels'])}; parameters per model: {f['num_parameters']:,}",
        f"memory estimate: peak ≈ {preflight.gib(mem['peak'])} (output {preflight.gib(mem['output'])}, inputs' "
        f"chunks and scratch {preflight.gib(mem['scratch'])}); each source {preflight.gib(f['bytes_per_source'])}"
        f" on disk, {n} source(s)" + (" + base" if job.base_ref else ""),
    ]
    return "\n".join(lines)
