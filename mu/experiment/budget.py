"""The study's time budget: what each stage cost when it last ran, and what the next run would cost.

``mu.experiment.study.run`` appends one entry per invocation to ``reports/study/<profile>/timings.json``: per stage
its wall seconds, its jobs and how many of them ran (the rest were done already: a resumed stage costs
nothing). ``estimate`` prices a plan (``{stage: jobs}``) from the last entry in which each stage ran,
per job; a seed's stage never measured is priced like the main run's stage of the same notebook (an
over-estimate: the seeds' runs skip the adapted systems), a notebook 02 the study timed only as a resume like
a seed's notebook 02 that ran whole, and a stage the study never timed otherwise (a cached pretraining or
tuning grid; a resumed notebook 02 with no seed's to go by) by what its own records measured (``recorded``).
``markdown`` adds the knobs that shrink each stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mu.core import paths

SHRINK = {
    "subsample": "`--train/--dev/--test` (once; then cached)",
    "pretrain": "`--steps` / `--minutes` (once; then cached)",
    "tune": "probe locales `--tune-locales`, grid `--tune-epochs` × `--tune-lrs` (cached by its arguments)",
    "notebook 01": "targets (`--targets`)",
    "notebook 02": "sources (`--set locales=[...]`), the tuned epochs (grid `--tune-epochs`), `--train`",
    "confirmatory merge": "the data-free methods among notebook 03's `compare_methods` (once; then cached)",
    "notebook 03": "targets; `compare_modes`; the AdaMerging grid (`adamerging`, `adapt_steps`)",
    "notebook 04": "targets; `methods` × `modes`; `max_k`; distillation (`distill_epochs`, its lr grid)",
    "notebook 05": "targets (`--subset-notebooks 05`: the declared subset); `adaptive_schedule: false` halves it",
    "notebook 06": "`n_boot`",
    "seed": "`--seeds` (each extra seed: one notebook 02 + the seed notebooks), `--seed-targets`",
}


def history(profile: str) -> list[dict[str, Any]]:
    path = paths.reports_dir("study", profile, "timings.json")
    return paths.read_json(path) if path.is_file() else []


def rates(entries: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """{stage: seconds per job} from the last entry in which the stage ran at least one job."""
    out = {}
    for entry in entries:
        for stage, s in (entry.get("stages") or {}).items():
            if s.get("ran"):
                out[stage] = s["seconds"] / s["ran"]
    return out


def spent(entries: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, int]]:
    """{stage: (wall seconds, invocations that ran part of it)} over every recorded invocation: what the study
    has really spent on each stage so far, a resume's checks and a stage stopped mid-way included (up to its
    last finished job: ``Stages`` records a running stage's progress)."""
    out: dict[str, tuple[float, int]] = {}
    for entry in entries:
        for stage, s in (entry.get("stages") or {}).items():
            seconds, runs = out.get(stage, (0.0, 0))
            out[stage] = (seconds + s["seconds"], runs + bool(s.get("ran")))
    return out


def _generic(stage: str) -> str:
    """``seed 43 notebook 02`` → ``notebook 02`` (a seed's stage priced like the main run's)."""
    return re.sub(r"^seed \d+ ", "", stage)


def fine_tuning(models_dir: Path, workers: int) -> tuple[float, int] | None:
    """(the summed ``train_runtime`` of the sources under ``models_dir`` over ``workers`` parallel processes, how
    many sources); None without sources, or when one lacks its runtime."""
    from mu.learn import models

    trained = [
        paths.read_json(f).get("log_history", [{}])[-1].get("train_runtime")
        for f in sorted(models_dir.glob(models.NAME_PATTERN.format(locale="*") + "/training_args.json"))
    ]
    return (sum(trained) / workers, len(trained)) if trained and all(trained) else None


def recorded(profile: str, workers: int) -> dict[str, tuple[float, str]]:
    """{stage: (seconds per job, where from)} for the stages whose own records time them, for those the study
    never saw run: the encoder's pretraining (``pretrain.json``'s training seconds), the fine-tuning grid
    (its jobs' seconds in ``tuning/finetune.json``, over ``workers`` parallel processes) and notebook 02's
    fine-tuning (its sources' ``train_runtime``, over ``workers``), which also prices a notebook 02 the study
    timed only as a resume (``estimate``: a measured rate below it)."""
    out = {}
    for record in sorted(paths.models_dir(profile, "pretrained").glob("*/pretrain.json")):
        seconds = paths.read_json(record).get("train_seconds")
        if seconds:
            out["pretrain"] = (float(seconds), f"{record.parent.name}/pretrain.json (training only)")
    fit = fine_tuning(paths.models_dir(profile), workers)
    if fit:
        out["notebook 02"] = (
            fit[0],
            f"its {fit[1]} sources' training_args.json (fine-tuning only, over {workers} workers)",
        )
    grid = paths.reports_dir("study", profile, "tuning", "finetune.json")
    if grid.is_file():
        jobs = pd.DataFrame(paths.read_json(grid)["grid"])
        if "seconds" in jobs and len(jobs):
            out["tune"] = (float(jobs["seconds"].mean()) / workers, f"tuning/finetune.json (over {workers} workers)")
    return out


def estimate(
    plan: Mapping[str, int],
    entries: Sequence[Mapping[str, Any]],
    recorded: Mapping[str, tuple[float, str]] | None = None,
) -> pd.DataFrame:
    """One row per planned stage: ``jobs``, ``seconds_per_job`` (measured; NaN if never), ``estimate_min``
    (jobs × rate, everything redone from scratch), ``from`` (which measurement priced it), ``spent_min`` and
    ``runs`` (what the study spent on it so far, over how many invocations: ``spent``). ``recorded``:
    ``{stage: (seconds per job, source)}`` for a stage no entry measured (``recorded()``)."""
    r, used = rates(entries), spent(entries)
    priced = dict(recorded or {})
    own = priced.get("notebook 02")
    if own and r.get("notebook 02", 0.0) < own[0]:  # timed only as a resume: most sources were trained already
        r.pop("notebook 02")
        # a seed's notebook 02 is the same work (every source, the N×N) measured in one invocation, which the
        # sources' records, trained across invocations, are not: it prices the main one first
        whole = [v for k, v in r.items() if re.fullmatch(r"seed \d+ notebook 02", k)]
        if whole:
            priced["notebook 02"] = (whole[-1], "a seed's run of notebook 02")
    seeds = {re.sub(r"^seed \d+ ", "seed * ", k): v for k, v in r.items() if k.startswith("seed ")}
    rows = []
    for stage, jobs in plan.items():
        key = re.sub(r"^seed \d+ ", "seed * ", stage)
        rate, source = (
            (r[stage], "this stage")
            if stage in r
            else (
                (seeds[key], "another seed's run")
                if key in seeds
                else (
                    (r[_generic(stage)], f"the main run's {_generic(stage)}")
                    if _generic(stage) in r
                    else (priced.get(stage) or priced.get(_generic(stage)) or (float("nan"), "never measured"))
                )
            )
        )
        seconds, runs = used.get(stage, (0.0, 0))
        rows.append(
            {
                "stage": stage,
                "jobs": jobs,
                "seconds_per_job": rate,
                "estimate_min": jobs * rate / 60,
                "from": source,
                "spent_min": seconds / 60,
                "runs": runs,
            }
        )
    return pd.DataFrame(rows, columns=["stage", "jobs", "seconds_per_job", "estimate_min", "from", "spent_min", "runs"])


def markdown(frame: pd.DataFrame, *, workers: int) -> str:
    """The budget table: estimated minutes per stage (from scratch), its total, and what shrinks each stage."""
    shrink = [SHRINK["seed"] if s.startswith("seed ") else SHRINK.get(s, "") for s in frame["stage"]]
    lines = [
        "| stage | jobs | s per job (measured) | estimate (min, from scratch) | priced from | spent so far (min, runs) "
        "| what shrinks it |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, knob in zip(frame.itertuples(index=False), shrink):
        rate = f"{row.seconds_per_job:.1f}" if pd.notna(row.seconds_per_job) else "—"
        est = f"{row.estimate_min:.1f}" if pd.notna(row.estimate_min) else "—"
        used = f"{row.spent_min:.1f} ({row.runs})" if row.spent_min else "—"
        lines.append(f"| {row.stage} | {row.jobs} | {rate} | {est} | {row[4]} | {used} | {knob} |")
    total = frame["estimate_min"].sum(min_count=1)
    unknown = int(frame["estimate_min"].isna().sum())
    lines += [
        "",
        (f"Total: {total:.0f} min" if pd.notna(total) else "Total: unknown")
        + (f" plus {unknown} stage(s) never measured" if unknown else "")
        + f" of wall time if every stage ran from scratch (seconds per job: a stage's wall time over the jobs "
        f"it ran, so they hold for the worker count then; this run: {workers} notebook worker(s)).",
        f"Spent so far: {frame['spent_min'].sum():.0f} min over the recorded runs (a stage's wall time in every "
        "invocation that ran part of it; a run stopped mid-stage counts up to its last finished job).",
    ]
    return "\n".join(lines) + "\n"


def write(profile: str, plan: Mapping[str, int], *, workers: int) -> Path:
    """``reports/study/<profile>/budget.md`` for ``plan`` (the whole study, whatever part of it this
    invocation ran) from the recorded timings (atomic)."""
    frame = estimate(plan, history(profile), recorded(profile, workers))
    head = (
        f"# Time budget — profile `{profile}`\n\nThe whole study (`make study`: every stage below), priced from "
        f"`timings.json` ({len(history(profile))} runs recorded) and, for a stage it never timed, that stage's "
        "own record.\n\n"
    )
    return paths.write_text(paths.reports_dir("study", profile, "budget.md"), head + markdown(frame, workers=workers))
