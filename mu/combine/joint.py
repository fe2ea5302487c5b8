"""Joint multi-source fine-tuning: ONE model fine-tuned on the sources' labeled data together (notebook 05).

The first baseline a reviewer names for any way of combining models fine-tuned on other languages: skip
the separate fine-tunes and train one model from the same base on the same sources' labeled training data
at once. It needs the sources' labeled data (a merge or an ensemble needs only their models) and sees
nothing of the target.

* ``joint/<weighting>``: the sources ``mu.langs.similarity.select(target, ..., mode=weighting)`` picks (the
  sources of that weighting's merges and ensembles), their train splits as one training set (the plain
  union), trained with the recipe the sources were fine-tuned with (notebook 02's epochs, lr and batch
  size, ``recipe``). Equal budget: every source's labeled pool is seen for as many epochs as that source's
  own model saw it, so the joint model sees Σ n_train × epochs examples, exactly what the K sources saw
  together. The weights pick the sources and do not enter the training: that is the pre-registered
  definition (the union, same epochs as each source), and weighting the examples would break the equal
  epochs per pool. Weightings that pick the same sources (``similarity`` and ``average``) therefore give
  one model, trained once (``run``).
* ``joint/all``: every non-target candidate at a declared example budget, by default the budget of
  ``joint/similarity`` (``budget``). The budget is split evenly over the sources (the remainder one example
  each to a seeded draw of them); each source's examples come from seeded permutations of its pool, a new
  permutation only once the last is used up (no example twice before every example once), and the model
  sees them in one pass. So ``joint/all`` costs what ``joint/similarity`` costs (the same examples, the same
  optimiser steps up to one partial batch per epoch): breadth over every source instead of depth on the
  closest K.

Both train with ``mu.learn.train.fit``, the loop every source model is fine-tuned with (one path, one
trainer), seeded by ``seed``; the draws of ``joint/all`` by ``seed`` too. Each model is saved atomically
under ``<models_dir>/joint/<target>/<name>/`` with ``joint.json`` (parameters, the base's and every source
train split's sha256, examples seen, optimiser steps, losses, seconds, package versions) and
``training_ids.json`` (every training example's locale and id, in the order drawn). A folder whose
``joint.json`` holds the same parameters is not retrained: a finished run is read back and re-evaluated
from cached logits.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset

from mu.combine import iterative_results
from mu.combine.iterative_cycle import derive_seed
from mu.core import notes, paths, report
from mu.corpus import data as mu_data
from mu.langs import locales, similarity
from mu.learn import bases, evaluate, models, train

ALL = "all"
FAMILY = "joint"
RECORD = "joint.json"
IDS = "training_ids.json"


def _whole(epochs: float) -> int:
    if float(epochs) != int(epochs) or int(epochs) < 1:
        raise ValueError(f"joint training matches whole source epochs; got {epochs}")
    return int(epochs)


def recipe(
    models_dir: str | os.PathLike,
    sources: Sequence[str],
    *,
    epochs: float | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """``{epochs, lr, batch_size}`` the one-shot ``sources`` were fine-tuned with (their ``training_args.json``,
    written by notebook 02; ``mu.combine.iterative_results.source_recipe``): joint training uses the sources'
    own recipe, whatever chose it. Only when 02 has not trained them here are the given values used (noted)."""
    trained = [(paths.resolve(models.source_path(loc, models_dir)) / "training_args.json").is_file() for loc in sources]
    if all(trained):
        r = iterative_results.source_recipe(models_dir, sources)
        return {"epochs": _whole(r["epochs"]), "lr": float(r["lr"]), "batch_size": int(r["batch_size"])}
    if None in (epochs, lr, batch_size):
        raise FileNotFoundError(
            f"the one-shot sources {sorted(sources)} were not fine-tuned by notebook 02 under {models_dir}: "
            "run 02 first, or give epochs, lr and batch_size"
        )
    given = {"epochs": _whole(epochs), "lr": float(lr), "batch_size": int(batch_size)}
    notes.warn(
        f"joint: epochs={epochs}, lr={lr}, batch_size={batch_size} given, not the one-shot sources' "
        "(notebook 02 has not trained them here)"
    )
    return given


def budget(sources: Sequence[str] | Mapping[str, float], data: str | os.PathLike, epochs: int) -> int:
    """Training examples a union of ``sources`` sees in ``epochs`` epochs (Σ n_train × epochs): what the K
    source models saw together, and ``joint/all``'s default budget."""
    return sum(len(mu_data.load_split(loc, "train", data)) for loc in sources) * _whole(epochs)


def _check_sources(target: str, sources: Sequence[str]) -> list[str]:
    locales.check_locale(target)
    sources = sorted(locales.check_locales(list(sources)))
    if target in sources:
        raise ValueError(f"the target {target} is among the sources {sources}: joint training never trains on it")
    if not sources:
        raise ValueError(f"no source to train on for target {target}")
    return sources


def draw(sources: Sequence[str], data: str | os.PathLike, examples: int, seed: int) -> dict[str, list[int]]:
    """``{source: row indices of its train split}``, ``examples`` in all, split evenly over ``sources`` (the
    remainder to a seeded draw of them); each source's rows from seeded permutations of its pool, one after
    the other, so no row repeats before every row of that pool was drawn once."""
    sources = sorted(sources)
    if examples < 1:
        raise ValueError(f"the example budget must be >= 1, got {examples}")
    base, extra = divmod(examples, len(sources))
    lucky = set(random.Random(derive_seed(seed, "joint", "remainder")).sample(sources, extra))
    out = {}
    for loc in sources:
        n, want, rows, rnd = len(mu_data.load_split(loc, "train", data)), base + (loc in lucky), [], 0
        while len(rows) < want:
            perm = list(range(n))
            random.Random(derive_seed(seed, "joint", loc, rnd)).shuffle(perm)
            rows += perm[: want - len(rows)]
            rnd += 1
        out[loc] = rows
    return out


def training_set(
    sources: Sequence[str], data: str | os.PathLike, rows: Mapping[str, Sequence[int]] | None = None
) -> Dataset:
    """The joint training set (columns ``locale``, ``id``, ``text``, ``label``): every source's whole train
    split (``rows`` None: the union) or the rows ``draw`` chose, sources in sorted order."""
    cols: dict[str, list] = {"locale": [], "id": [], "text": [], "label": []}
    for loc in sorted(sources):
        split = mu_data.load_split(loc, "train", data)
        picked = split if rows is None else split.select(list(rows[loc]))
        cols["locale"] += [loc] * len(picked)
        for c in ("id", "text", "label"):
            cols[c] += list(picked[c])
    return Dataset.from_dict(cols)


def model_dir(models_dir: str | os.PathLike, target: str, name: str) -> Path:
    return paths.resolve(models_dir) / "joint" / target / name


def train_joint(
    target: str,
    name: str,
    sources: Mapping[str, float],
    *,
    base_model: str | os.PathLike,
    data: str | os.PathLike,
    models_dir: str | os.PathLike,
    epochs: int,
    lr: float,
    batch_size: int,
    max_seq_length: int,
    seed: int,
    examples: int | None = None,
) -> dict[str, Any]:
    """Fine-tune one model from ``base_model`` on ``sources``' train splits and evaluate it on the target's test
    split. ``examples`` None: the union, ``epochs`` epochs (``joint/<weighting>``); else ``examples`` drawn evenly
    over the sources (``draw``), one pass (``joint/all``). ``sources`` maps each source to the weight of the
    selection that picked it (recorded, not trained on). Skipped when ``<models_dir>/joint/<target>/<name>``
    holds a model with the same parameters. Returns ``{system, model, sources, test, examples_seen,
    optimizer_steps, train_s, trained, params}``."""
    chosen = _check_sources(target, list(sources))
    base = models.check_model_dir(paths.resolve(base_model))
    epochs = _whole(epochs)
    rows = None if examples is None else draw(chosen, data, int(examples), seed)
    params = {
        "target": target,
        "sources": chosen,
        "sampling": "union" if rows is None else "even",
        "epochs": epochs if rows is None else 1,
        "examples": None if rows is None else int(examples),
        "batch_size": batch_size,
        "lr": lr,
        "max_seq_length": max_seq_length,
        "seed": seed,
        "base_model": str(base_model),
        "base_sha256": report.sha256(base / models.WEIGHTS_FILE),
        "data": str(data),
        "train_sha256": {loc: mu_data.fingerprint(mu_data.load_split(loc, "train", data)) for loc in chosen},
    }
    out = model_dir(models_dir, target, name)
    stamp = out / RECORD
    trained = not (stamp.is_file() and paths.read_json(stamp).get("params") == params)
    if trained:
        ds = training_set(chosen, data, rows)
        model, tokenizer = models.load_classifier(base)
        scratch = paths.cache_dir("train")
        scratch.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"joint-{target}.", dir=scratch) as tmp:
            history = train.fit(
                model,
                tokenizer,
                ds.select_columns(["text", "label"]),
                epochs=params["epochs"],
                batch_size=batch_size,
                lr=lr,
                max_seq_length=max_seq_length,
                seed=seed,
                output_dir=tmp,
                run_name=f"joint/{target}/{name}",
            )
        drawn = list(zip(ds["locale"], ds["id"]))
        record = {
            "params": params,
            "examples_seen": len(ds) * params["epochs"],
            "examples_per_source": {loc: sum(src == loc for src, _ in drawn) * params["epochs"] for loc in chosen},
            "optimizer_steps": int(history["global_step"]),
            "train_s": round(time.perf_counter() - start, 2),
            "train_loss": history["train_loss"],
            "log_history": history["log_history"],
            "classifier_head": bases.HEAD_NOTE,
            "versions": report.versions(),
        }
        ids = {loc: [i for src, i in drawn if src == loc] for loc in chosen}
        models.save_classifier(model, tokenizer, out, extra_files={RECORD: record, IDS: ids})
        del model
    record = paths.read_json(stamp)
    return {
        "system": f"{FAMILY}/{name}",
        "model": str(out),
        "sources": dict(sources),
        "test": evaluate.evaluate(
            out, target, "test", data=data, batch_size=batch_size, max_seq_length=max_seq_length, items=True
        ),
        **{k: record[k] for k in ("examples_seen", "examples_per_source", "optimizer_steps", "train_s")},
        "trained": trained,
        "params": params,
    }


def check_weightings(joint: Sequence[str]) -> list[str]:
    joint = list(joint)
    bad = [w for w in joint if w != ALL and w not in similarity.MODES]
    if bad or len(set(joint)) != len(joint):
        raise ValueError(f"joint must be distinct names among {[*similarity.MODES, ALL]}; got {joint}")
    return joint


def run(
    target: str,
    candidates: Sequence[str],
    joint: Sequence[str],
    *,
    base_model: str | os.PathLike,
    data: str | os.PathLike,
    models_dir: str | os.PathLike,
    recipe: Mapping[str, Any],
    max_seq_length: int,
    seed: int,
    all_examples: int | None = None,
    nxn: Any = None,
    **select_kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """``{"joint/<w>": train_joint(...)}`` for each weighting ``w`` of ``joint`` (the sources of
    ``mu.langs.similarity.select(target, candidates, mode=w, nxn=nxn, **select_kwargs)``) and, for ``"all"``,
    every candidate but the target at ``all_examples`` examples (None: ``budget`` of the ``similarity``
    selection's sources at ``recipe["epochs"]``). ``recipe``: ``{epochs, lr, batch_size}`` (``recipe``).
    A weighting that picks the sources an earlier one picked reuses its model (``same_as``)."""
    joint = check_weightings(joint)
    common = {
        "base_model": base_model,
        "data": data,
        "models_dir": models_dir,
        "max_seq_length": max_seq_length,
        "seed": seed,
        **{k: recipe[k] for k in ("epochs", "lr", "batch_size")},
    }
    out: dict[str, dict[str, Any]] = {}
    for w in (w for w in joint if w != ALL):
        weights = similarity.select(target, candidates, mode=w, nxn=nxn, **select_kwargs)
        same = next((r for r in out.values() if set(r["sources"]) == set(weights)), None)
        out[f"{FAMILY}/{w}"] = (
            {**same, "system": f"{FAMILY}/{w}", "sources": weights, "same_as": same["system"]}
            if same
            else train_joint(target, w, weights, **common)
        )
    if ALL in joint:
        pool = [c for c in candidates if c != target]
        if all_examples is None:
            closest = similarity.select(target, candidates, mode="similarity", **select_kwargs)
            all_examples = budget(closest, data, recipe["epochs"])
        out[f"{FAMILY}/{ALL}"] = train_joint(
            target, ALL, {c: 1.0 / len(pool) for c in pool}, examples=all_examples, **common
        )
    return out


def frame(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The joint models side by side: test accuracy, sources, examples seen, optimiser steps, seconds."""
    return pd.DataFrame(
        [
            {
                "system": s,
                "accuracy": r["test"]["accuracy"],
                "macro_f1": r["test"]["macro_f1"],
                "sources": len(r["sources"]),
                "sampling": r["params"]["sampling"],
                "examples_seen": r["examples_seen"],
                "optimizer_steps": r["optimizer_steps"],
                "train_s": r["train_s"],
                "same_as": r.get("same_as"),
            }
            for s, r in results.items()
        ],
        columns=["system", "accuracy", "macro_f1", "sources", "sampling", "examples_seen", "optimizer_steps"]
        + ["train_s", "same_as"],
    ).set_index("system")


def report_rows(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One ``mu.core.report`` row per joint model, in the ``joint`` family: test scores, sources (the
    selection's weights; ``joint/all``: each source's share of the examples), seconds and examples seen."""
    return [
        {
            "system": s,
            "family": FAMILY,
            **r["test"],
            "sources": dict(r["sources"]),
            "seconds": r["train_s"],
            "examples": r["examples_seen"],
        }
        for s, r in results.items()
    ]


def inputs(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``inputs`` of the joint record: each joint model folder with its sha256."""
    return {s: report.describe_input(r["model"]) for s, r in results.items()}
