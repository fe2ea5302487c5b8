"""The study at its real shape on real MASSIVE (the ``mini`` profile): data, driver and command line.

* ``subsample``: a MASSIVE-layout folder with at most ``train``/``dev``/``test`` utterances per
  locale and split, the *same ids* in every locale (MASSIVE is parallel, so the N×N test sets stay
  parallel); the documented subsampling knob of the mini study.
* ``compare_objectives`` (``mu.experiment.objectives``): the pretraining objectives, native accuracy and N×N transfer beside
  the char n-gram baseline.
* ``run``: subsample → pretrain → the fine-tuning recipe chosen on dev (``mu.learn.tuning``) → every knob recorded
  (``mu.experiment.declare``, ``mu.core.protocol``) → notebooks 01–05 over every target (05 over the declared subset) →
  the headline notebooks again per extra fine-tuning seed (``mu.analysis.seeds``) → 06; resumable, each stage
  timed, with a time budget (``mu.experiment.budget``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mu.core import paths, report
from mu.corpus import data as mu_data
from mu.experiment.objectives import compare_objectives  # noqa: F401 (python -m mu compare-objectives)
from mu.langs import locales as mu_locales
from mu.learn import pretrain

SUBSAMPLE_VERSION = 1


def _rank(seed: int, uid: str) -> str:
    return hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest()


def subsample(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    locales: Sequence[str],
    *,
    train: int | None,
    dev: int | None,
    test: int | None,
    seed: int = 0,
) -> Path:
    """Write ``<out_dir>/<locale>.jsonl`` keeping, per split, the ``n`` utterances whose ids rank first
    under a seeded hash (``None``: the whole split). Ids are the same in every locale, so the kept
    utterances are translations of each other. Idempotent (``subsample_args.json``); atomic."""
    out = paths.resolve(out_dir)
    limits = {"train": train, "dev": dev, "test": test}
    bad = {k: v for k, v in limits.items() if v is not None and v < 1}
    if bad:
        raise ValueError(f"subsample sizes must be >= 1 or None, got {bad}")
    args = {"source": str(source), "locales": list(locales), **limits, "seed": seed, "version": SUBSAMPLE_VERSION}
    stamp = out / "subsample_args.json"
    if stamp.is_file() and paths.read_json(stamp) == args:
        return out
    with paths.atomic_path(out) as tmp:
        tmp.mkdir()
        for loc in locales:
            lines = []
            for split, n in limits.items():
                ds = mu_data.load_split(loc, split, source)
                ids, texts, labels = list(ds["id"]), list(ds["text"]), list(ds["label"])
                keep = sorted(range(len(ids)), key=lambda i: _rank(seed, ids[i]))[:n] if n else range(len(ids))
                lines += [
                    json.dumps(
                        {
                            "id": ids[i],
                            "locale": loc,
                            "partition": split,
                            "intent": mu_data.ID2LABEL[labels[i]],
                            "utt": texts[i],
                        },
                        ensure_ascii=False,
                    )
                    for i in sorted(keep)
                ]
            (tmp / f"{loc}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "subsample_args.json").write_text(json.dumps(args, indent=2) + "\n", encoding="utf-8")
    return out


# The fine-tuning probe (mu.learn.tuning): declared before any result; the choice is made on these sources' dev splits.
TUNE_LOCALES = ("en-US", "hi-IN", "sw-KE")
TUNE_EPOCHS = (3, 5, 8)
TUNE_LRS = (5e-4, 1e-3, 2e-3)

# The study's encoder (docs/study.md): the recipe that cleared the lexical baseline.
STUDY_PRETRAIN = {"steps": 3000, "lr": 1e-3, "embedding_init": "parallel-svd"}


NOTEBOOKS = ("01", "02", "03", "04", "05", "06")

# Declared before any result of the new study (issue 19), by rules on the alphabetical list of the 51 locales.
_ALPHABETICAL = tuple(sorted(mu_locales.LOCALES))
TUNING_TARGETS_RULE = "every 10th locale in alphabetical order from the 6th (5 of 51)"
TUNING_TARGETS = _ALPHABETICAL[5::10]  # dev labels usable by target-side selections; 06 reports them apart
SUBSET_RULE = "every 3rd locale in alphabetical order from the 1st, less the tuning targets (15 of 51)"
SUBSET = tuple(
    t for t in _ALPHABETICAL[::3] if t not in TUNING_TARGETS
)  # = mu.combine.iterative_results.subset(exclude=TUNING_TARGETS)
SUBSET_NOTEBOOKS = ("05",)  # too costly for every target at equal source-epochs: run on SUBSET
# The seeds' runs (mu.analysis.seeds): notebook 02 again, then the headline notebooks without the adapted systems (03 with
# iso_c beside linear: mu.analysis.seeds.HEADLINE tests it).
SEED_NOTEBOOKS = ("02", "03", "04")
SEED_PARAMS = {"03": {"adamerging": [], "compare_methods": ["iso_c"]}, "04": {"distill": False, "max_k": 1}}
TUNED = ("epochs", "lr")  # notebook 02's knobs mu.learn.tuning chooses on the probe sources' dev splits
RULES = {"tuning_targets": TUNING_TARGETS_RULE, "seed_targets": SUBSET_RULE}
PRETRAIN_NOTE = (
    "the encoder recipe of README 'Real MASSIVE' (python -m mu study's defaults), carried over from the "
    "earlier objective comparison, which compared recipes on 8 locales' test transfer; not re-chosen here"
)


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


class _Stages:
    """Wall seconds, jobs and jobs that ran (not skipped) per stage of one ``run``, written to ``path``
    (``timings.json``: one entry per invocation) after every stage, so an interrupted run keeps what it measured."""

    def __init__(self, path: Path, **meta: Any) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.path, self.meta = path, meta
        self.prior = paths.read_json(path) if path.is_file() else []

    def add(self, name: str, t0: float, jobs: int, ran: int) -> None:
        self.stages[name] = {"seconds": round(time.perf_counter() - t0, 1), "jobs": jobs, "ran": ran}
        self.save()

    def save(self, **meta: Any) -> None:
        self.meta.update(meta)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"seconds": {k: v["seconds"] for k, v in self.stages.items()}, "stages": self.stages, **self.meta}
        paths.write_json(self.path, [*self.prior, entry])

    def notebook(
        self, name: str, nb: str, targets: Sequence[str], profile: str, workers: int, extra: dict[str, Any]
    ) -> pd.DataFrame:
        from mu.batch import runner
        from mu.core import protocol

        t0 = time.perf_counter()
        frame = runner.run([nb], targets, profile=profile, workers=workers, extra_params=extra)
        self.add(name, t0, len(frame), int((frame["status"] != "skipped").sum()))
        protocol.write(profile)  # the choices its kernels recorded, in protocol.md even if the run stops here
        print(f"{name}:\n{runner.format_summary(frame)}", flush=True)
        return frame


@contextlib.contextmanager
def _root(root: Path) -> Iterator[None]:
    """Run with ``MU_ROOT`` set to another project root (an extra seed's), restored afterwards."""
    old = os.environ.get("MU_ROOT")
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MU_ROOT"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MU_ROOT", None)
        else:
            os.environ["MU_ROOT"] = old


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
            **{k: PRETRAIN_NOTE for k in study_knobs if k.startswith("pretrain.")},
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

    1. subsample ``source`` into the profile's ``data`` folder (unless ``data`` is ``source``: full size) and
       pretrain its base from ``source``'s train text;
    2. choose notebook 02's epochs and lr on the dev splits of ``tune_locales`` (``mu.learn.tuning``; grid
       ``tune_epochs`` × ``tune_lrs``) unless the user set both (``--set``; one set: the grid keeps it);
    3. record every knob in the protocol (``mu.experiment.declare``), before any result;
    4. run ``notebooks`` but 06 over ``targets`` (default: every locale of the profile; ``subset_notebooks``
       only over the declared ``SUBSET``), 02 with the tuned recipe;
    5. with 06 and seeds beyond 02's own (06's ``seeds``): per extra seed, ``seed_notebooks`` under
       ``mu.analysis.seeds.seed_root(seed)`` (02 with that seed, the rest with ``SEED_PARAMS``) on 06's ``seed_targets``;
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
    grid = (
        [extra["epochs"]] if "epochs" in extra else list(tune_epochs),
        [extra["lr"]] if "lr" in extra else list(tune_lrs),
    )
    tune_jobs = len(tune_locales) * len(grid[0]) * len(grid[1])
    whole = plan(_design(profile, NOTEBOOKS, targets, extra, tune_locales, subset_notebooks, seed_notebooks), tune_jobs)
    if budget_only:
        print(budget.write(profile, whole, workers=workers).read_text(encoding="utf-8"))
        return pd.DataFrame(columns=list(runner.SUMMARY_COLUMNS))
    log = _Stages(
        paths.reports_dir("study", profile, "timings.json"),
        targets=len(targets),
        extra_params=extra,
        train=train,
        dev=dev,
        test=test,
        objective=objective,
        steps=steps,
        workers=workers,
        versions=report.versions(),
    )
    t0, stamp = time.perf_counter(), paths.resolve(p02["data"]) / "subsample_args.json"
    before = _mtime(stamp)
    if str(p02["data"]) != str(source):
        subsample(source, p02["data"], p02["locales"], train=train, dev=dev, test=test, seed=p02["seed"])
    log.add("subsample", t0, 1, int(_mtime(stamp) != before))
    t0, record = (
        time.perf_counter(),
        paths.models_dir(profile, "pretrained", objective.replace("+", "-"), "pretrain.json"),
    )
    before = _mtime(record)
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
    log.add("pretrain", t0, 1, int(_mtime(record) != before))
    tuned: dict[str, Any] = {}
    if design["tune"]:
        t0, cache = time.perf_counter(), paths.reports_dir("study", profile, "tuning", "finetune.json")
        before = _mtime(cache)
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
        )
        tuned = {k: chosen[k] for k in TUNED if k not in extra}
        log.add("tune", t0, tune_jobs, tune_jobs if _mtime(cache) != before else 0)
    log.save(tuned=tuned)
    args = {"embedding_init": "random", **paths.read_json(record)["args"]}  # absent in the record means random
    study_knobs = {
        "study.source": str(source),
        "study.train": train,
        "study.dev": dev,
        "study.test": test,
        "study.subsample_seed": p02["seed"],
        "study.targets": targets,
        "study.subset_notebooks": list(subset_notebooks),
        "study.subset_targets": design["subset"],
        **{f"pretrain.{k}": v for k, v in args.items() if k not in ("locales", "source", "texts_sha256")},
        **(
            {"tune.locales": list(tune_locales), "tune.epochs_grid": grid[0], "tune.lr_grid": grid[1]}
            if design["tune"]
            else {}
        ),
        **(
            {"study.seed_notebooks": design["seed_notebooks"], "study.seed_params": SEED_PARAMS}
            if design["seeds"]
            else {}
        ),
    }
    _declare_all(profile, design, extra, tuned, study_knobs)
    protocol.write(profile)
    frames = []
    for nb in design["notebooks"]:
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
    for seed in design["seeds"]:
        with _root(mu_seeds.seed_root(seed)):
            for nb in design["seed_notebooks"]:
                mine = {
                    **_nb_extra(nb, design, extra, tuned),
                    **SEED_PARAMS.get(nb, {}),
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


# --------------------------------------------------------------------------- command line

COMMANDS = ("pretrain", "compare-objectives", "study", "tune")

STUDY_LOCALES = "every locale of the profile (params/02_training.yaml)"


def _pretrain_args(p, defaults: dict[str, Any] | None = None) -> None:
    d = {"steps": None, "lr": 5e-4, "embedding_init": "random", **(defaults or {})}
    p.add_argument("--objective", choices=pretrain.OBJECTIVES, default="mlm+tlm+align")
    p.add_argument(
        "--steps",
        type=int,
        required=d["steps"] is None,
        default=d["steps"],
        help="optimiser steps (the LR schedule ends there)" + (f"; default {d['steps']}" if d["steps"] else ""),
    )
    p.add_argument("--minutes", type=float, default=None, help="stop earlier after this much training time")
    p.add_argument(
        "--source",
        default="massive",
        help="data whose train split is pretrained on (default %(default)s: $MU_MASSIVE_DIR or ../shared/massive/1.1)",
    )
    for name, default in (
        ("vocab-size", 32000),
        ("hidden-size", 128),
        ("num-hidden-layers", 4),
        ("num-attention-heads", 4),
        ("intermediate-size", 512),
        ("batch-size", 64),
    ):
        p.add_argument(f"--{name}", type=int, default=default, dest=f"pt_{name.replace('-', '_')}")
    p.add_argument("--lr", type=float, default=d["lr"], dest="pt_lr")
    p.add_argument(
        "--embedding-init",
        choices=pretrain.EMBEDDING_INITS,
        default=d["embedding_init"],
        dest="pt_embedding_init",
        help="token embeddings: random, or parallel-svd (cross-lingual vectors from MASSIVE's translations)",
    )


def add_parsers(sub, key_value) -> None:
    """``pretrain``, ``compare-objectives`` and ``study`` subcommands for ``python -m mu``; ``key_value``
    parses ``--set KEY=VALUE`` (the command line's one parser, ``mu.__main__._key_value``)."""
    pt = sub.add_parser("pretrain", help="pretrain the profile's encoder here and save its base")
    pt.add_argument("--profile", default="mini")
    _pretrain_args(pt)
    cmp_ = sub.add_parser(
        "compare-objectives", help="pretraining objectives: native accuracy and N×N transfer vs lexical"
    )
    cmp_.add_argument("--objectives", nargs="+", choices=pretrain.OBJECTIVES, default=list(pretrain.OBJECTIVES))
    cmp_.add_argument("--locales", nargs="+", required=True, help="fine-tuned and evaluated (pretraining: all 51)")
    cmp_.add_argument("--data", default="massive", help="fine-tuning / evaluation data (default %(default)s)")
    cmp_.add_argument("--name", default="compare", help="profile name of the runs (models/<name>-<objective>/)")
    cmp_.add_argument("--epochs", type=float, default=2)
    cmp_.add_argument("--ft-lr", type=float, default=3e-4)
    _pretrain_args(cmp_)
    st = sub.add_parser("study", help="subsample, pretrain, tune on dev, notebooks 01-05, the seeds' runs, 06")
    st.add_argument("--profile", default="mini")
    st.add_argument("--targets", nargs="*", default=None, help=f"default: {STUDY_LOCALES}")
    st.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS))
    st.add_argument("--workers", type=int, default=1)
    st.add_argument(
        "--set",
        dest="extra",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a notebook parameter (YAML value), e.g. locales=[en-US,de-DE]",
    )
    st.add_argument("--train", type=int, default=2000, help="train utterances per locale (default %(default)s)")
    st.add_argument("--dev", type=int, default=200)
    st.add_argument("--test", type=int, default=500, help="test utterances per locale (default %(default)s)")
    st.add_argument(
        "--tune-locales",
        nargs="*",
        default=list(TUNE_LOCALES),
        help="probe sources whose dev splits choose 02's epochs and lr (none: no tuning; default %(default)s)",
    )
    st.add_argument("--tune-epochs", nargs="+", type=_number, default=list(TUNE_EPOCHS))
    st.add_argument("--tune-lrs", nargs="+", type=float, default=list(TUNE_LRS))
    st.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="fine-tuning seeds of the headline comparisons (06's `seeds`; default: params/06_aggregation.yaml)",
    )
    st.add_argument("--seed-targets", nargs="+", default=None, help="targets of the seeds' runs (06's `seed_targets`)")
    st.add_argument("--seed-notebooks", nargs="+", default=list(SEED_NOTEBOOKS))
    st.add_argument(
        "--subset-notebooks",
        nargs="*",
        default=list(SUBSET_NOTEBOOKS),
        help=f"notebooks run only over the declared subset ({SUBSET_RULE}; default %(default)s)",
    )
    st.add_argument(
        "--budget",
        action="store_true",
        help="write and print the time budget of the whole study (these targets and --set values); run nothing",
    )
    _pretrain_args(st, STUDY_PRETRAIN)
    tu = sub.add_parser("tune", help="choose the fine-tuning recipe (epochs, lr) on the probe sources' dev splits")
    tu.add_argument("--profile", default="mini")
    tu.add_argument("--locales", nargs="+", default=list(TUNE_LOCALES), help="probe sources (default %(default)s)")
    tu.add_argument("--epochs", nargs="+", type=float, default=list(TUNE_EPOCHS))
    tu.add_argument("--lrs", nargs="+", type=float, default=list(TUNE_LRS))


def _number(text: str) -> int | float:
    """An epochs value: an int when it is one (``5``), else a float (``2.5``)."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _pretrain_kwargs(args) -> dict[str, Any]:
    return {k[3:]: v for k, v in vars(args).items() if k.startswith("pt_")}


def main(args) -> int:
    from mu.langs import locales as mu_locales

    if args.command == "pretrain":
        base = pretrain.ensure(
            args.profile,
            objective=args.objective,
            locales=mu_locales.LOCALES,
            source=args.source,
            steps=args.steps,
            minutes=args.minutes,
            **_pretrain_kwargs(args),
        )
        print(f"base: {base}")
    elif args.command == "tune":
        from mu.batch import params
        from mu.learn import tuning

        p02 = params.load_params("02_training", args.profile)
        chosen = tuning.tune_finetuning(
            args.profile,
            args.locales,
            base_model=p02["base_model"],
            data=p02["data"],
            epochs_grid=args.epochs,
            lr_grid=args.lrs,
            batch_size=p02["batch_size"],
            max_seq_length=p02["max_seq_length"],
            seed=p02["seed"],
        )
        print(f"chosen on dev: {chosen}; protocol: {paths.reports_dir('study', args.profile, 'protocol.md')}")
    elif args.command == "compare-objectives":
        table = compare_objectives(
            args.objectives,
            args.locales,
            data=args.data,
            profile=args.name,
            epochs=args.epochs,
            batch_size=32,
            lr=args.ft_lr,
            max_seq_length=64,
            seed=42,
            pretrain_kwargs={
                "locales": mu_locales.LOCALES,
                "source": args.source,
                "steps": args.steps,
                "minutes": args.minutes,
                **_pretrain_kwargs(args),
            },
        )
        print(table.round(3).to_string(index=False))
    else:
        kwargs = _pretrain_kwargs(args)
        extra = dict(args.extra)
        extra.update({k: v for k, v in (("seeds", args.seeds), ("seed_targets", args.seed_targets)) if v is not None})
        frame = run(
            args.profile,
            source=args.source,
            train=args.train,
            dev=args.dev,
            test=args.test,
            objective=args.objective,
            steps=args.steps,
            minutes=args.minutes,
            targets=args.targets,
            notebooks=args.notebooks,
            workers=args.workers,
            extra_params=extra,
            pretrain_kwargs=kwargs,
            tune_locales=args.tune_locales,
            tune_epochs=args.tune_epochs,
            tune_lrs=args.tune_lrs,
            subset_notebooks=args.subset_notebooks,
            seed_notebooks=args.seed_notebooks,
            budget_only=args.budget,
        )
        return 1 if (frame["status"] == "failed").any() else 0
    return 0
