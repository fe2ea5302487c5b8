"""The study at its real shape on real MASSIVE (the ``mini`` profile): its declared design and its driver.

* The declared design, fixed before any result: the fine-tuning probe (``TUNE_*``), the study's encoder
  recipe (``STUDY_PRETRAIN``), the tuning targets and the subset of costly notebooks (``TUNING_TARGETS``,
  ``SUBSET``, their rules), the seeds' runs (``SEED_NOTEBOOKS``; their settings: ``mu.experiment.seeding``).
* ``run``: subsample (``mu.experiment.subsample``) → pretrain → the fine-tuning recipe chosen on dev
  (``mu.learn.tuning``) → every knob recorded (``mu.experiment.declare``, ``mu.core.protocol``) → notebooks
  01–05 over every target (05 over the declared subset) → the headline notebooks again per extra
  fine-tuning seed (``mu.analysis.seeds``) → 06; resumable, each stage timed, with a time budget
  (``mu.experiment.budget``; ``plan`` counts its jobs).

Its command line (``python -m mu study``, ``pretrain``, ``compare-objectives``, ``tune``) is
``mu.experiment.study_cli``; the pretraining objectives' comparison is ``mu.experiment.objectives``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mu.core import paths, report
from mu.corpus import pools as mu_pools
from mu.experiment import seeding, stages, subsample
from mu.langs import locales as mu_locales
from mu.learn import pretrain

# The fine-tuning probe (mu.learn.tuning): declared before any result; the choice is made on these sources' dev splits.
TUNE_LOCALES = ("en-US", "hi-IN", "sw-KE")
# widened past the earlier grids whose choices sat on their largest epochs: (3, 5, 8) chose 8, then
# (3, 5, 8, 12) chose 12 on the disjoint pools (dev accuracy still rising), before any confirmatory result
TUNE_EPOCHS = (3, 5, 8, 12, 16, 20, 24)
TUNE_LRS = (5e-4, 1e-3, 2e-3, 4e-3)

# The study's encoder (docs/study.md): the recipe that cleared the lexical baseline.
STUDY_PRETRAIN = {"steps": 3000, "lr": 1e-3, "embedding_init": "parallel-svd"}


NOTEBOOKS = ("01", "02", "03", "04", "05", "06")

# Declared before any result of the study, by rules on the alphabetical list of the 51 locales.
_ALPHABETICAL = tuple(sorted(mu_locales.LOCALES))
TUNING_TARGETS_RULE = "every 10th locale in alphabetical order from the 6th (5 of 51)"
TUNING_TARGETS = _ALPHABETICAL[5::10]  # dev labels usable by target-side selections; 06 reports them apart
SUBSET_RULE = "every 3rd locale in alphabetical order from the 1st, less the tuning targets (15 of 51)"
SUBSET = tuple(
    t for t in _ALPHABETICAL[::3] if t not in TUNING_TARGETS
)  # = mu.combine.iterative_results.subset(exclude=TUNING_TARGETS)
SUBSET_NOTEBOOKS = ("05",)  # too costly for every target at equal source-epochs: run on SUBSET
# The seeds' runs (mu.analysis.seeds): notebook 02 again, then the registered systems with the main seed's choices
# (mu.experiment.seeding).
SEED_NOTEBOOKS = seeding.SEED_NOTEBOOKS
# The probe's rule (mu.learn.tuning.RULES): past 12 epochs the probe's dev accuracy moved within its own noise while
# the study's cost grew with every epoch, so the cheapest recipe within one standard error of the best is taken.
TUNE_RULE = "one-se"
TUNE_RULE_NOTE = (
    "adopted after the widened grid's dev results were seen (the probe sources' dev labels only, no target, no test "
    "split), when its best cell was again its largest epochs: params/preregistration.yaml, amendments"
)
TUNED = ("epochs", "lr")  # notebook 02's knobs mu.learn.tuning chooses on the probe sources' dev splits
RULES = {"tuning_targets": TUNING_TARGETS_RULE, "seed_targets": SUBSET_RULE}
PRETRAIN_NOTE = (
    "declared a priori for the confirmatory study (params/preregistration.yaml): python -m mu study's defaults, "
    "the recipe an earlier objective comparison chose on 8 locales' test transfer on the earlier test items "
    "(test ranks [0, 500)); the disjoint design's test items (ranks [500, 1000)) share no id with those in any "
    "locale, so the choice has not seen them; not re-chosen. Pretraining reads every locale's train text without "
    "labels (both pools among it) and dev text for its masked-LM loss, never a test text"
)
# Under the parallel pools the test items are the earlier ones: the recipe was chosen on their test transfer.
PRETRAIN_NOTE_PARALLEL = (
    "python -m mu study's defaults, chosen by an earlier objective comparison on 8 locales' test transfer on "
    "these same test items (the parallel pools' test ranks [0, 500)): not independent of this test set"
)


def _design(
    profile: str,
    notebooks: Sequence[str],
    targets: Sequence[str] | None,
    extra: dict[str, Any],
    tune_locales: Sequence[str],
    subset_notebooks: Sequence[str],
    seed_notebooks: Sequence[str],
) -> dict:
    """What a study run will do, checked before anything runs: notebooks (by number) with their parameters,
    targets per notebook, the seeds to run and whether to tune."""
    from mu.batch import params

    paths_ = {nb: params.find_notebooks([nb])[0] for nb in dict.fromkeys([*notebooks, *seed_notebooks])}
    num = {nb: p.stem.split("_")[0] for nb, p in paths_.items()}
    parameters = {num[nb]: params.notebook_parameters(p) for nb, p in paths_.items()}
    run_nbs = [num[nb] for nb in notebooks]
    p02 = {**params.load_params("02_training", profile), **extra}
    p06 = {**params.load_params("06_aggregation", profile), **extra}
    seeds = [int(s) for s in p06.get("seeds", [])] if "06" in run_nbs else []
    extra_seeds = [s for s in seeds if s != p02["seed"]]
    used = set().union(
        *[parameters[nb] for nb in [*run_nbs, *([num[n] for n in seed_notebooks] if extra_seeds else [])]]
    )
    unknown = sorted(set(extra) - used)
    if unknown:
        raise ValueError(f"--set {unknown}: parameters of none of the notebooks this study runs; valid: {sorted(used)}")
    if "06" in run_nbs and "04" in run_nbs and p06.get("confirmatory"):
        from mu.analysis import confirm

        p04 = {
            **params.load_params("04_ensembling", profile),
            **{k: v for k, v in extra.items() if k in parameters["04"]},
        }
        confirm.check_student_settings(
            confirm.load(p06["preregistration"]),
            p04,
            f"params/04_ensembling.yaml (profile {profile}{' and --set' if extra else ''})",
        )
    targets = list(targets) if targets is not None else list(p02["locales"])
    subset = [t for t in SUBSET if t in targets]
    seed_targets = [t for t in p06.get("seed_targets", []) if t in targets]
    if extra_seeds and not seed_targets:
        raise ValueError(f"seeds {extra_seeds}: none of seed_targets {p06.get('seed_targets')} is a target of this run")
    return {
        "p02": p02,
        "parameters": parameters,
        "notebooks": run_nbs,
        "targets": targets,
        "subset": subset,
        "per_nb_targets": {
            nb: subset if nb in {s.split("_")[0] for s in subset_notebooks} else targets for nb in run_nbs
        },
        "seeds": extra_seeds,
        "seed_targets": seed_targets,
        "seed_notebooks": [num[n] for n in seed_notebooks],
        "tune": bool(tune_locales) and not set(TUNED) <= set(extra) and ("02" in run_nbs or bool(extra_seeds)),
    }


def plan(design: dict, tune_jobs: int) -> dict[str, int]:
    """{stage: jobs} of a run from scratch (``mu.experiment.budget`` prices it)."""
    per_target = {nb: "target_lang" in p for nb, p in design["parameters"].items()}
    out = {"subsample": 1, "pretrain": 1, **({"tune": tune_jobs} if design["tune"] else {})}
    for nb in design["notebooks"]:
        if nb == "03":
            out["confirmatory merge"] = 1
        if nb != "06":
            out[f"notebook {nb}"] = len(design["per_nb_targets"][nb]) if per_target[nb] else 1
    for s in design["seeds"]:
        for nb in design["seed_notebooks"]:
            out[f"seed {s} notebook {nb}"] = len(design["seed_targets"]) if per_target[nb] else 1
    if "06" in design["notebooks"]:
        out["notebook 06"] = 1
    return out


def _declare_all(profile: str, design: dict, extra: dict[str, Any], tuned: dict[str, Any], study_knobs: dict) -> None:
    """Record every knob the study uses in its protocol (``mu.experiment.declare``), before any notebook runs."""
    from mu.batch import params
    from mu.experiment import declare

    nbs = [*design["notebooks"], *(design["seed_notebooks"] if design["seeds"] else [])]
    for nb in dict.fromkeys(nbs):
        stem = params.find_notebooks([nb])[0].stem
        defaults = {k: v for k, v in design["parameters"][nb].items() if k not in params.INJECTED}
        values = {**defaults, **params.load_params(stem, profile), **_nb_extra(nb, design, extra, tuned)}
        declare.notebook(
            profile,
            nb,
            values,
            source=f"params/{stem}.yaml, profile {profile} (else the notebook's default)",
            user_set=set(extra),
            measured=set(tuned) if nb == "02" else (),
            owned=TUNED if nb == "02" else (),
            notes=RULES,
        )
    declare.values(
        profile,
        study_knobs,
        source="python -m mu study's arguments (defaults in mu.experiment.study)",
        notes={
            "study.subset_targets": SUBSET_RULE,
            "tune.rule": TUNE_RULE_NOTE,
            "study.pools": mu_pools.NOTES.get(study_knobs["study.pools"], ""),
            **{
                k: PRETRAIN_NOTE if study_knobs["study.pools"] == "disjoint" else PRETRAIN_NOTE_PARALLEL
                for k in study_knobs
                if k.startswith("pretrain.")
            },
        },
    )


def _nb_extra(nb: str, design: dict, extra: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """What the study passes to notebook ``nb`` beyond its params file: the user's ``--set`` values that are
    its parameters and, for 02, the recipe ``mu.learn.tuning`` chose."""
    mine = {k: v for k, v in extra.items() if k in design["parameters"][nb]}
    return {**mine, **(tuned if nb == "02" else {})}


def _absolute(value: Any) -> Any:
    p = paths.resolve(str(value))
    return str(p) if p.exists() else value


def run(
    profile: str = "mini",
    *,
    source: str | os.PathLike = "massive",
    train: int | None,
    dev: int | None,
    test: int | None,
    objective: str,
    steps: int,
    unlabeled: int | None = None,
    pools: str = mu_pools.DEFAULT_DESIGN,
    test_offset: int | None = None,
    minutes: float | None = None,
    targets: Sequence[str] | None = None,
    notebooks: Sequence[str] = NOTEBOOKS,
    workers: int = 1,
    extra_params: dict[str, Any] | None = None,
    pretrain_kwargs: dict[str, Any] | None = None,
    tune_locales: Sequence[str] = TUNE_LOCALES,
    tune_epochs: Sequence[float] = TUNE_EPOCHS,
    tune_lrs: Sequence[float] = TUNE_LRS,
    subset_notebooks: Sequence[str] = SUBSET_NOTEBOOKS,
    seed_notebooks: Sequence[str] = SEED_NOTEBOOKS,
    budget_only: bool = False,
) -> pd.DataFrame:
    """The whole study of ``profile``, resumable (every stage skips what is done):

    1. subsample ``source`` into the profile's ``data`` folder (unless ``data`` is ``source``: full size), cut
       into the pools of the design ``pools`` (``mu.corpus.pools``: ``disjoint``, the pre-registered one, or
       ``parallel``, the earlier one; sizes ``train``, ``unlabeled``, ``dev``, ``test`` at ``test_offset``), and
       pretrain its base from ``source``'s train text;
    2. choose notebook 02's epochs and lr on the dev splits of ``tune_locales`` (``mu.learn.tuning``; grid
       ``tune_epochs`` × ``tune_lrs``) unless the user set both (``--set``; one set: the grid keeps it);
    3. record every knob in the protocol (``mu.experiment.declare``), before any result;
    4. run ``notebooks`` but 06 over ``targets`` (default: every locale of the profile; ``subset_notebooks``
       only over the declared ``SUBSET``), 02 with the tuned recipe;
    5. with 06 and seeds beyond 02's own (06's ``seeds``): per extra seed, ``seed_notebooks`` under
       ``mu.analysis.seeds.seed_root(seed)`` (02 with that seed, the rest with ``mu.experiment.seeding.params`` of the main seed's choices) on 06's ``seed_targets``;
    6. notebook 06 (rerun when a seed's run did anything), then ``protocol.md``, ``timings.json`` and ``budget.md``
       under ``reports/study/<profile>/``.

    ``extra_params`` (``--set``) override notebook parameters where a notebook has them; a key no notebook of
    the run has is an error. ``budget_only``: write and print ``budget.md``, run nothing. ``budget.md`` always prices
    the whole study (every notebook and seed, these targets and ``--set`` values), whatever part of it this call runs.
    Returns the runner's rows (one per notebook job)."""
    from mu.analysis import seeds as mu_seeds
    from mu.batch import runner
    from mu.core import protocol
    from mu.experiment import budget
    from mu.learn import tuning

    extra = dict(extra_params or {})
    design = _design(profile, notebooks, targets, extra, tune_locales, subset_notebooks, seed_notebooks)
    p02, targets = design["p02"], design["targets"]
    runner.plan(
        design["notebooks"], targets, profile=profile, extra_params=extra
    )  # every parameter, before anything runs
    windows = mu_pools.layout(pools, train=train, dev=dev, test=test, unlabeled=unlabeled, test_offset=test_offset)
    subsampled = str(p02["data"]) != str(source)
    nbs = dict.fromkeys([*design["notebooks"], *(design["seed_notebooks"] if design["seeds"] else [])])
    subsample.check_adapt_split(profile, {nb: design["parameters"][nb] for nb in nbs}, extra, pools, subsampled)
    grid = (
        [extra["epochs"]] if "epochs" in extra else list(tune_epochs),
        [extra["lr"]] if "lr" in extra else list(tune_lrs),
    )
    tune_jobs = len(tune_locales) * len(grid[0]) * len(grid[1])
    whole = plan(_design(profile, NOTEBOOKS, targets, extra, tune_locales, subset_notebooks, seed_notebooks), tune_jobs)
    if budget_only:
        print(budget.write(profile, whole, workers=workers).read_text(encoding="utf-8"))
        return pd.DataFrame(columns=list(runner.SUMMARY_COLUMNS))
    log = stages.Stages(
        paths.reports_dir("study", profile, "timings.json"),
        targets=len(targets),
        extra_params=extra,
        train=train,
        dev=dev,
        test=test,
        unlabeled=unlabeled,
        pools=pools,
        objective=objective,
        steps=steps,
        workers=workers,
        versions=report.versions(),
    )
    t0, stamp = time.perf_counter(), paths.resolve(p02["data"]) / "subsample_args.json"
    before = stages.mtime(stamp)
    if subsampled:
        subsample.subsample(
            source,
            p02["data"],
            p02["locales"],
            train=train,
            dev=dev,
            test=test,
            unlabeled=unlabeled,
            design=pools,
            test_offset=test_offset,
            seed=p02["seed"],
        )
    log.add("subsample", t0, 1, int(stages.mtime(stamp) != before))
    t0, record = (
        time.perf_counter(),
        paths.models_dir(profile, "pretrained", objective.replace("+", "-"), "pretrain.json"),
    )
    before = stages.mtime(record)
    pretrain.ensure(
        profile,
        objective=objective,
        base_model=p02["base_model"],
        seed=p02["seed"],
        locales=p02["locales"],
        source=source,
        steps=steps,
        minutes=minutes,
        **(pretrain_kwargs or {}),
    )
    log.add("pretrain", t0, 1, int(stages.mtime(record) != before))
    tuned: dict[str, Any] = {}
    if design["tune"]:
        t0, cache = time.perf_counter(), paths.reports_dir("study", profile, "tuning", "finetune.json")
        before = stages.mtime(cache)
        chosen = tuning.tune_finetuning(
            profile,
            tune_locales,
            base_model=p02["base_model"],
            data=p02["data"],
            epochs_grid=grid[0],
            lr_grid=grid[1],
            batch_size=p02["batch_size"],
            max_seq_length=p02["max_seq_length"],
            seed=p02["seed"],
            workers=workers,
            rule=TUNE_RULE,
        )
        tuned = {k: chosen[k] for k in TUNED if k not in extra}
        log.add("tune", t0, tune_jobs, tune_jobs if stages.mtime(cache) != before else 0)
    log.save(tuned=tuned)
    args = {"embedding_init": "random", **paths.read_json(record)["args"]}  # absent in the record means random
    study_knobs = {
        "study.source": str(source),
        "study.train": train,
        "study.dev": dev,
        "study.test": test,
        "study.subsample_seed": p02["seed"],
        **subsample.knobs(pools, windows, unlabeled, source if not subsampled else None),
        "study.targets": targets,
        "study.subset_notebooks": list(subset_notebooks),
        "study.subset_targets": design["subset"],
        **{f"pretrain.{k}": v for k, v in args.items() if k not in ("locales", "source", "texts_sha256")},
        **(
            {
                "tune.locales": list(tune_locales),
                "tune.epochs_grid": grid[0],
                "tune.lr_grid": grid[1],
                "tune.rule": TUNE_RULE,
            }
            if design["tune"]
            else {}
        ),
        **({"study.seed_notebooks": design["seed_notebooks"]} if design["seeds"] else {}),
    }
    _declare_all(profile, design, extra, tuned, study_knobs)
    protocol.write(profile)
    frames = []
    for nb in design["notebooks"]:
        if nb == "03":
            t0 = time.perf_counter()
            mine = {k: v for k, v in extra.items() if k in design["parameters"]["03"]}
            log.add("confirmatory merge", t0, 1, int(seeding.choose_merge(profile, mine)))
        if nb != "06":
            frames.append(
                log.notebook(
                    f"notebook {nb}",
                    nb,
                    design["per_nb_targets"][nb],
                    profile,
                    workers,
                    _nb_extra(nb, design, extra, tuned),
                )
            )
    shared = {"data": _absolute(p02["data"]), "base_model": _absolute(p02["base_model"])}
    given = seeding.params(
        protocol.load(profile), design["seed_notebooks"], method=seeding.p03(profile, extra)["method"]
    )
    if design["seeds"]:
        seeding.record(profile, given, design["seeds"])
    for seed in design["seeds"]:
        with stages.project_root(mu_seeds.seed_root(seed)):
            for nb in design["seed_notebooks"]:
                mine = {
                    **_nb_extra(nb, design, extra, tuned),
                    **{k: v for k, v in given.get(nb, {}).items() if k in design["parameters"][nb]},
                    **{k: v for k, v in shared.items() if k in design["parameters"][nb]},
                    **({"seed": seed} if nb == "02" else {}),
                }
                frames.append(
                    log.notebook(f"seed {seed} notebook {nb}", nb, design["seed_targets"], profile, workers, mine)
                )
    if "06" in design["notebooks"]:
        if any(s["ran"] for name, s in log.stages.items() if name.startswith("seed ")):
            runner.plan(["06"], [], profile=profile, extra_params=_nb_extra("06", design, extra, tuned))[
                0
            ].marker.unlink(missing_ok=True)  # the seeds' section of 06 reads their new results
        frames.append(
            log.notebook("notebook 06", "06", targets, profile, workers, _nb_extra("06", design, extra, tuned))
        )
    protocol.write(profile)
    print(budget.write(profile, whole, workers=workers).read_text(encoding="utf-8"), flush=True)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(runner.SUMMARY_COLUMNS))
