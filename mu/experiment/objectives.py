"""The pretraining objective comparison: for each objective, fine-tune a few locales from its base and
measure native accuracy and the N×N transfer, beside the char n-gram baseline (``mu.learn.lexical``);
``python -m mu compare-objectives`` (README "Can a small encoder pretrained here transfer at all?")."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mu.core import paths, report
from mu.learn import evaluate, lexical, pretrain, train


def compare_objectives(
    objectives: Sequence[str],
    locales: Sequence[str],
    *,
    data: str | os.PathLike,
    profile: str,
    epochs: float,
    batch_size: int,
    lr: float,
    max_seq_length: int,
    seed: int,
    pretrain_kwargs: dict[str, Any],
) -> pd.DataFrame:
    """Native accuracy and mean N×N transfer over ``locales`` for each objective's encoder and for the
    lexical baseline; one row each. Encoders: ``mu.learn.pretrain.ensure(f"{profile}-{objective}", ...)``
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
        base = pretrain.ensure(
            name,
            objective=objective,
            seed=seed,
            tokenizer_dir=paths.models_dir(profile, "tokenizer"),
            **pretrain_kwargs,
        )
        t1 = time.perf_counter()
        sources = train.train_locales(
            locales,
            base_model=base,
            data=data,
            models_dir=paths.models_dir(name),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_seq_length=max_seq_length,
            seed=seed,
        )
        t2 = time.perf_counter()
        frames[objective] = evaluate.nxn(sources, locales, data=data, profile=name, max_seq_length=max_seq_length)
        timings[objective] = {
            "pretrain_s": round(t1 - t0, 1),
            "finetune_s": round(t2 - t1, 1),
            "nxn_s": round(time.perf_counter() - t2, 1),
        }
        record = paths.read_json(paths.models_dir(name, "pretrained", objective.replace("+", "-"), "pretrain.json"))
        rows.append(
            {
                "system": objective,
                **lexical.summary(frames[objective]),
                "dev_mlm_loss_mean": record["dev_mlm_loss_mean"],
                "pretrain_steps": record["steps_done"],
                "pretrain_seconds": record["train_seconds"],
            }
        )
    rows.insert(0, {"system": "lexical (char n-gram SVM)", **lexical.summary(frames["lexical"])})
    table = pd.DataFrame(rows)
    lex = lexical.summary(frames["lexical"])["transfer"]
    table["transfer_minus_lexical"] = table["transfer"] - lex
    out.mkdir(parents=True, exist_ok=True)
    for key, frame in frames.items():
        with paths.atomic_path(out / f"nxn-{key.replace('+', '-')}.csv", suffix=".csv") as tmp:
            frame.to_csv(tmp)
    paths.write_json(
        out / "comparison.json",
        {
            "table": table.to_dict(orient="records"),
            "seconds": timings,
            "locales": list(locales),
            "data": str(data),
            "finetune": {
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "max_seq_length": max_seq_length,
                "seed": seed,
            },
            "pretrain": {k: v for k, v in pretrain_kwargs.items() if k != "locales"},
            "versions": report.versions(),
        },
    )
    paths.write_text(
        out / "comparison.md", f"Locales: {', '.join(locales)}\n\n```\n{table.round(3).to_string(index=False)}\n```\n"
    )
    return table
