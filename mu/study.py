"""The study at its real shape on real MASSIVE (the ``mini`` profile), and the pretraining objective comparison.

* ``subsample``: a MASSIVE-layout folder with at most ``train``/``dev``/``test`` utterances per
  locale and split, the *same ids* in every locale (MASSIVE is parallel, so the N×N test sets stay
  parallel); the documented subsampling knob of the mini study.
* ``compare_objectives``: for each pretraining objective, fine-tune a few locales from its base and measure
  native accuracy and the N×N transfer, beside the char n-gram baseline (``mu.lexical``).
* ``run``: subsample (if needed) → pretrain (if needed) → notebooks 01–06 of a profile over every
  target, through ``mu.runner`` (resumable, progress), timing each stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from mu import data as mu_data
from mu import evaluate, lexical, paths, pretrain, report, train

SUBSAMPLE_VERSION = 1


def _rank(seed: int, uid: str) -> str:
    return hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest()


def subsample(source: str | os.PathLike, out_dir: str | os.PathLike, locales: Sequence[str], *,
              train: int | None, dev: int | None, test: int | None, seed: int = 0) -> Path:
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
                lines += [json.dumps({"id": ids[i], "locale": loc, "partition": split,
                                      "intent": mu_data.ID2LABEL[labels[i]], "utt": texts[i]}, ensure_ascii=False)
                          for i in sorted(keep)]
            (tmp / f"{loc}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "subsample_args.json").write_text(json.dumps(args, indent=2) + "\n", encoding="utf-8")
    return out


def compare_objectives(objectives: Sequence[str], locales: Sequence[str], *, data: str | os.PathLike, profile: str,
            epochs: float, batch_size: int, lr: float, max_seq_length: int, seed: int,
            pretrain_kwargs: dict[str, Any]) -> pd.DataFrame:
    """Native accuracy and mean N×N transfer over ``locales`` for each objective's encoder and for the
    lexical baseline; one row each. Encoders: ``mu.pretrain.ensure(f"{profile}-{objective}", ...)``
    (pretrained on ``pretrain_kwargs['locales']``, one tokenizer ``models/<profile>/tokenizer`` for all);
    each objective's sources and N×N matrix live under its own profile name. Writes ``reports/pretrain/<profile>/comparison.{json,md}`` and each N×N CSV."""
    out = paths.reports_dir("pretrain", profile)
    rows, frames, timings = [], {}, {}
    t0 = time.perf_counter()
    frames["lexical"] = lexical.nxn(locales, data=data)
    timings["lexical"] = round(time.perf_counter() - t0, 1)
    for objective in objectives:
        name = f"{profile}-{objective.replace('+', '-')}"
        t0 = time.perf_counter()
        base = pretrain.ensure(name, objective=objective, seed=seed, tokenizer_dir=paths.models_dir(profile, "tokenizer"),
                               **pretrain_kwargs)
        t1 = time.perf_counter()
        sources = train.train_locales(locales, base_model=base, data=data, models_dir=paths.models_dir(name),
                                      epochs=epochs, batch_size=batch_size, lr=lr, max_seq_length=max_seq_length,
                                      seed=seed)
        t2 = time.perf_counter()
        frames[objective] = evaluate.nxn(sources, locales, data=data, profile=name, max_seq_length=max_seq_length)
        timings[objective] = {"pretrain_s": round(t1 - t0, 1), "finetune_s": round(t2 - t1, 1),
                              "nxn_s": round(time.perf_counter() - t2, 1)}
        record = paths.read_json(paths.models_dir(name, "pretrained", objective.replace("+", "-"), "pretrain.json"))
        rows.append({"system": objective, **lexical.summary(frames[objective]),
                     "dev_mlm_loss_mean": record["dev_mlm_loss_mean"], "pretrain_steps": record["steps_done"],
                     "pretrain_seconds": record["train_seconds"]})
    rows.insert(0, {"system": "lexical (char n-gram SVM)", **lexical.summary(frames["lexical"])})
    table = pd.DataFrame(rows)
    lex = lexical.summary(frames["lexical"])["transfer"]
    table["transfer_minus_lexical"] = table["transfer"] - lex
    out.mkdir(parents=True, exist_ok=True)
    for key, frame in frames.items():
        with paths.atomic_path(out / f"nxn-{key.replace('+', '-')}.csv", suffix=".csv") as tmp:
            frame.to_csv(tmp)
    paths.write_json(out / "comparison.json", {
        "table": table.to_dict(orient="records"), "seconds": timings, "locales": list(locales), "data": str(data),
        "finetune": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_seq_length": max_seq_length,
                     "seed": seed}, "pretrain": {k: v for k, v in pretrain_kwargs.items() if k != "locales"},
        "versions": report.versions()})
    paths.write_text(out / "comparison.md", f"Locales: {', '.join(locales)}\n\n```\n{table.round(3).to_string(index=False)}\n```\n")
    return table


NOTEBOOKS = ("01", "02", "03", "04", "05", "06")


def run(profile: str = "mini", *, source: str | os.PathLike = "massive", train: int | None, dev: int | None,
        test: int | None, objective: str, steps: int, minutes: float | None = None,
        targets: Sequence[str] | None = None, notebooks: Sequence[str] = NOTEBOOKS, workers: int = 1,
        extra_params: dict[str, Any] | None = None, pretrain_kwargs: dict[str, Any] | None = None) -> pd.DataFrame:
    """The whole study of ``profile``: subsample ``source`` into the profile's ``data`` folder (unless
    ``data`` is ``source`` itself: full size), pretrain its base from ``source``'s train text, then run
    ``notebooks`` over ``targets`` (default: every locale of the profile) with ``mu.runner``.
    ``extra_params`` override notebook parameters where a notebook has them (``python -m mu run --set``),
    e.g. ``locales`` for a smaller study (02's values choose what is subsampled and pretrained on).
    Every stage is skipped when done. Returns the runner's rows; the seconds of each stage go to
    ``reports/study/<profile>/timings.json`` (one entry per invocation)."""
    from mu import params, runner

    extra = dict(extra_params or {})
    p02 = {**params.load_params("02_training", profile), **extra}
    locales = list(p02["locales"])
    targets = list(targets) if targets is not None else locales
    runner.plan(list(notebooks), targets, profile=profile, extra_params=extra)  # every parameter checked up front
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if str(p02["data"]) != str(source):
        subsample(source, p02["data"], locales, train=train, dev=dev, test=test, seed=p02["seed"])
    timings["subsample"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    pretrain.ensure(profile, objective=objective, base_model=p02["base_model"], seed=p02["seed"],
                    locales=locales, source=source, steps=steps, minutes=minutes, **(pretrain_kwargs or {}))
    timings["pretrain"] = round(time.perf_counter() - t0, 1)
    frames = []
    for nb in notebooks:
        t0 = time.perf_counter()
        parameters = params.notebook_parameters(params.find_notebooks([nb])[0])
        frames.append(runner.run([nb], targets, profile=profile, workers=workers,
                                 extra_params={k: v for k, v in extra.items() if k in parameters}))
        timings[f"notebook {nb}"] = round(time.perf_counter() - t0, 1)
        print(runner.format_summary(frames[-1]), flush=True)
    path = paths.reports_dir("study", profile, "timings.json")
    history = paths.read_json(path) if path.is_file() else []
    history.append({"seconds": timings, "targets": len(targets), "extra_params": extra, "train": train, "dev": dev,
                    "test": test,
                    "objective": objective, "steps": steps, "workers": workers, "versions": report.versions()})
    paths.write_json(path, history)
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- command line

COMMANDS = ("pretrain", "compare-objectives", "study")

STUDY_LOCALES = "every locale of the profile (params/02_training.yaml)"


# The study's encoder (README "Real MASSIVE"): the recipe that cleared the lexical baseline.
STUDY_PRETRAIN = {"steps": 3000, "lr": 1e-3, "embedding_init": "parallel-svd"}


def _pretrain_args(p, defaults: dict[str, Any] | None = None) -> None:
    d = {"steps": None, "lr": 5e-4, "embedding_init": "random", **(defaults or {})}
    p.add_argument("--objective", choices=pretrain.OBJECTIVES, default="mlm+tlm+align")
    p.add_argument("--steps", type=int, required=d["steps"] is None, default=d["steps"],
                   help="optimiser steps (the LR schedule ends there)" + (f"; default {d['steps']}" if d["steps"] else ""))
    p.add_argument("--minutes", type=float, default=None, help="stop earlier after this much training time")
    p.add_argument("--source", default="massive", help="data whose train split is pretrained on (default %(default)s: "
                   "$MU_MASSIVE_DIR or ../shared/massive/1.1)")
    for name, default in (("vocab-size", 32000), ("hidden-size", 128), ("num-hidden-layers", 4),
                          ("num-attention-heads", 4), ("intermediate-size", 512), ("batch-size", 64)):
        p.add_argument(f"--{name}", type=int, default=default, dest=f"pt_{name.replace('-', '_')}")
    p.add_argument("--lr", type=float, default=d["lr"], dest="pt_lr")
    p.add_argument("--embedding-init", choices=pretrain.EMBEDDING_INITS, default=d["embedding_init"],
                   dest="pt_embedding_init",
                   help="token embeddings: random, or parallel-svd (cross-lingual vectors from MASSIVE's translations)")


def add_parsers(sub, key_value) -> None:
    """``pretrain``, ``compare-objectives`` and ``study`` subcommands for ``python -m mu``; ``key_value``
    parses ``--set KEY=VALUE`` (the command line's one parser, ``mu.__main__._key_value``)."""
    pt = sub.add_parser("pretrain", help="pretrain the profile's encoder here and save its base")
    pt.add_argument("--profile", default="mini")
    _pretrain_args(pt)
    cmp_ = sub.add_parser("compare-objectives",
                          help="pretraining objectives: native accuracy and N×N transfer vs lexical")
    cmp_.add_argument("--objectives", nargs="+", choices=pretrain.OBJECTIVES, default=list(pretrain.OBJECTIVES))
    cmp_.add_argument("--locales", nargs="+", required=True, help="fine-tuned and evaluated (pretraining: all 51)")
    cmp_.add_argument("--data", default="massive", help="fine-tuning / evaluation data (default %(default)s)")
    cmp_.add_argument("--name", default="compare", help="profile name of the runs (models/<name>-<objective>/)")
    cmp_.add_argument("--epochs", type=float, default=2)
    cmp_.add_argument("--ft-lr", type=float, default=3e-4)
    _pretrain_args(cmp_)
    st = sub.add_parser("study", help="subsample, pretrain, then notebooks 01-06 over every target")
    st.add_argument("--profile", default="mini")
    st.add_argument("--targets", nargs="*", default=None, help=f"default: {STUDY_LOCALES}")
    st.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS))
    st.add_argument("--workers", type=int, default=1)
    st.add_argument("--set", dest="extra", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                    help="override a notebook parameter (YAML value), e.g. locales=[en-US,de-DE]")
    st.add_argument("--train", type=int, default=2000, help="train utterances per locale (default %(default)s)")
    st.add_argument("--dev", type=int, default=200)
    st.add_argument("--test", type=int, default=500, help="test utterances per locale (default %(default)s)")
    _pretrain_args(st, STUDY_PRETRAIN)


def _pretrain_kwargs(args) -> dict[str, Any]:
    return {k[3:]: v for k, v in vars(args).items() if k.startswith("pt_")}


def main(args) -> int:
    from mu import locales as mu_locales

    if args.command == "pretrain":
        base = pretrain.ensure(args.profile, objective=args.objective, locales=mu_locales.LOCALES, source=args.source,
                               steps=args.steps, minutes=args.minutes, **_pretrain_kwargs(args))
        print(f"base: {base}")
    elif args.command == "compare-objectives":
        table = compare_objectives(args.objectives, args.locales, data=args.data, profile=args.name, epochs=args.epochs,
                        batch_size=32, lr=args.ft_lr, max_seq_length=64, seed=42,
                        pretrain_kwargs={"locales": mu_locales.LOCALES, "source": args.source, "steps": args.steps,
                                         "minutes": args.minutes, **_pretrain_kwargs(args)})
        print(table.round(3).to_string(index=False))
    else:
        kwargs = _pretrain_kwargs(args)
        frame = run(args.profile, source=args.source, train=args.train, dev=args.dev, test=args.test,
                    objective=args.objective, steps=args.steps, minutes=args.minutes, targets=args.targets,
                    notebooks=args.notebooks, workers=args.workers, extra_params=dict(args.extra),
                    pretrain_kwargs=kwargs)
        return 1 if (frame["status"] == "failed").any() else 0
    return 0
