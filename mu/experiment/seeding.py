"""The seeds' runs of the study: which notebooks they repeat, and with which settings.

Every extra fine-tuning seed retrains the sources (notebook 02) and repeats the systems the pre-registration
tests in every seed (``params/preregistration.yaml``: the student, the teacher, the best data-free merge, the
linear merges, joint/similarity) on the confirmatory targets. A seed's run makes no choice of its own: the
main seed's protocol fixed them on the tuning targets' dev splits before any confirmatory result, and
each seed is handed them as one-candidate (declared) values:

* ``03.confirmatory_merge``: the best data-free merge (``mu.combine.selection_merge``), chosen right after
  the main seed's sources are trained and before its notebook 03 runs; the seeds' notebook 03 merges it
  (and ``iso_c``, an exploratory headline effect of ``mu.analysis.seeds``) beside linear, no AdaMerging;
* ``04.distill.teacher``, ``04.distill.init``, ``04.distill.lr``: the student's teacher, init and lr; the
  seeds' notebook 04 distils one student with them (no accuracy-vs-K curve beyond K = 1);
* notebook 05 runs joint/similarity only (iterative training and joint/all are one seed's, as registered).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mu.core import paths, protocol
from mu.experiment import stages

SEED_NOTEBOOKS = ("02", "03", "04", "05")
# What a seed's run leaves out, whatever the main seed chose (the registered budget: one seed for these).
FIXED = {"03": {"adamerging": []}, "04": {"max_k": 1}, "05": {"iterative": False, "joint": ["similarity"]}}
ALSO_MERGED = ("iso_c",)  # exploratory headline effects the seeds repeat (mu.analysis.seeds.HEADLINE)
CHOICES = ("03.confirmatory_merge", "04.distill.teacher", "04.distill.init", "04.distill.lr")


def params(recorded: Mapping[str, Mapping[str, Any]], notebooks: Sequence[str], method: str = "linear") -> dict:
    """``{notebook: parameters}`` of a seed's run from the main seed's protocol records (``recorded``:
    ``mu.core.protocol.load``). A choice the main seed did not record is left out: 04 then distils no student
    (an unrecorded teacher would be a new choice, made in the seed), 03 merges ``ALSO_MERGED`` only."""

    def value(knob: str) -> Any:
        return recorded[knob]["value"] if knob in recorded else None

    merge = value("03.confirmatory_merge")
    out: dict[str, dict[str, Any]] = {nb: dict(FIXED.get(nb, {})) for nb in notebooks}
    if "03" in out:
        names = [m for m in dict.fromkeys([*([merge] if merge else []), *ALSO_MERGED]) if m != method]
        out["03"]["compare_methods"] = names
    if "04" in out:
        teacher, init, lr = (value(k) for k in CHOICES[1:])
        if None in (teacher, init, lr):
            out["04"]["distill"] = False
        else:
            out["04"].update(distill=True, distill_teachers=[teacher], distill_inits=[init], distill_lrs=[float(lr)])
    return {nb: p for nb, p in out.items() if p}


def record(profile: str, given: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> None:
    """The seeds' settings in the main seed's protocol: what each seed's notebooks were given, and why."""
    protocol.record(
        profile,
        "study.seed_params",
        {nb: dict(p) for nb, p in given.items()},
        chosen_by="declared",
        data="none: the main seed's recorded choices (" + ", ".join(CHOICES) + ") and the registered budget",
        note=f"seeds {list(seeds)} repeat the registered systems with the main seed's choices as declared values; "
        "iterative training, joint/all, AdaMerging and the K curve are one seed's",
    )


def p03(profile: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Notebook 03's parameters in ``profile`` (its defaults, its params file, then ``extra``)."""
    from mu.batch import params

    stem = params.find_notebooks(["03"])[0]
    return {**params.notebook_parameters(stem), **params.load_params(stem.stem, profile), **extra}


def choose_merge(profile: str, extra: dict[str, Any]) -> bool:
    """The pre-registered best data-free merge (``mu.combine.selection_merge``), chosen on the tuning targets'
    dev splits once the main seed's sources exist and before its notebook 03 runs; False when notebook 03
    compares no data-free method beside its own (no such hypothesis to serve) or it was chosen already."""
    from mu.combine import selection_merge

    p = p03(profile, extra)
    if not selection_merge.candidates(p["compare_methods"], p["method"]):
        return False
    before = stages.mtime(paths.reports_dir("study", profile, "tuning", "confirmatory_merge.json"))
    selection_merge.choose_confirmatory_merge(
        profile,
        p["tuning_targets"],
        models_dir=p["models_dir"],
        data=p["data"],
        base_model=p["base_model"],
        max_seq_length=p["max_seq_length"],
        batch_size=p["batch_size"],
        seed=p["seed"],
        methods=p["compare_methods"],
        comparator=p["method"],
        **{k: p[k] for k in ("num_languages", "top_k", "sinkhorn_iters", "feature_set")},
    )
    return stages.mtime(paths.reports_dir("study", profile, "tuning", "confirmatory_merge.json")) != before
