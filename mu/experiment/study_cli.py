"""The study's command line (``python -m mu``): ``pretrain``, ``compare-objectives``, ``study`` and ``tune``.

``add_parsers`` adds the subcommands with their defaults (the study's declared ones, from
``mu.experiment.study``); ``main`` runs one: the profile's encoder (``mu.learn.pretrain``), the
pretraining-objective comparison (``mu.experiment.objectives``), the whole study
(``mu.experiment.study.run``) or the fine-tuning recipe alone (``mu.learn.tuning``).
"""

from __future__ import annotations

from typing import Any

from mu.core import paths
from mu.corpus import pools
from mu.experiment import objectives, study
from mu.learn import pretrain, tuning

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
    st.add_argument("--notebooks", nargs="+", default=list(study.NOTEBOOKS))
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
        "--unlabeled",
        type=int,
        default=1000,
        help="unlabeled pool per locale: the train ids ranked after the labeled ones (default %(default)s)",
    )
    st.add_argument(
        "--pools",
        choices=pools.DESIGNS,
        default=pools.DEFAULT_DESIGN,
        help="disjoint (pre-registered): an unlabeled pool no locale labels, test past the items reported before; "
        "parallel: the earlier design (adapt on train, test from rank 0; with --set adapt_split=train)",
    )
    st.add_argument(
        "--test-offset", type=int, default=None, help=f"first test rank (default: the design's, {pools.TEST_OFFSET})"
    )
    st.add_argument(
        "--tune-locales",
        nargs="*",
        default=list(study.TUNE_LOCALES),
        help="probe sources whose dev splits choose 02's epochs and lr (none: no tuning; default %(default)s)",
    )
    st.add_argument("--tune-epochs", nargs="+", type=_number, default=list(study.TUNE_EPOCHS))
    st.add_argument("--tune-lrs", nargs="+", type=float, default=list(study.TUNE_LRS))
    st.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="fine-tuning seeds of the headline comparisons (06's `seeds`; default: params/06_aggregation.yaml)",
    )
    st.add_argument("--seed-targets", nargs="+", default=None, help="targets of the seeds' runs (06's `seed_targets`)")
    st.add_argument("--seed-notebooks", nargs="+", default=list(study.SEED_NOTEBOOKS))
    st.add_argument(
        "--subset-notebooks",
        nargs="*",
        default=list(study.SUBSET_NOTEBOOKS),
        help=f"notebooks run only over the declared subset ({study.SUBSET_RULE}; default %(default)s)",
    )
    st.add_argument(
        "--budget",
        action="store_true",
        help="write and print the time budget of the whole study (these targets and --set values); run nothing",
    )
    _pretrain_args(st, study.STUDY_PRETRAIN)
    tu = sub.add_parser("tune", help="choose the fine-tuning recipe (epochs, lr) on the probe sources' dev splits")
    tu.add_argument("--profile", default="mini")
    tu.add_argument(
        "--locales", nargs="+", default=list(study.TUNE_LOCALES), help="probe sources (default %(default)s)"
    )
    tu.add_argument("--epochs", nargs="+", type=float, default=list(study.TUNE_EPOCHS))
    tu.add_argument("--lrs", nargs="+", type=float, default=list(study.TUNE_LRS))
    tu.add_argument("--rule", choices=sorted(tuning.RULES), default=study.TUNE_RULE, help="how the grid chooses")


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

        p02 = params.load_params("02_training", args.profile)
        chosen = tuning.tune_finetuning(
            args.profile,
            args.locales,
            base_model=p02["base_model"],
            data=p02["data"],
            epochs_grid=args.epochs,
            lr_grid=args.lrs,
            rule=args.rule,
            batch_size=p02["batch_size"],
            max_seq_length=p02["max_seq_length"],
            seed=p02["seed"],
        )
        print(f"chosen on dev: {chosen}; protocol: {paths.reports_dir('study', args.profile, 'protocol.md')}")
    elif args.command == "compare-objectives":
        table = objectives.compare_objectives(
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
        frame = study.run(
            args.profile,
            source=args.source,
            train=args.train,
            dev=args.dev,
            test=args.test,
            unlabeled=args.unlabeled if args.pools == "disjoint" else None,
            pools=args.pools,
            test_offset=args.test_offset,
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
