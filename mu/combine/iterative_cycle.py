"""One cycle of iterative training (``mu.combine.iterative``): the sources train side by side from the
cycle's start model until the schedule merges, then their statistics, the merge and its evaluation.

In cycle k every source, one after the other (one model in memory at a time), starts from the start
model (the shared base in cycle 1, then the previous cycle's merge) and trains with
``mu.learn.train.fit`` on its own train split, its dev accuracy measured each epoch: ``merge_frequency``
epochs in one ``fit`` (fixed schedule), or one epoch at a time until ``mu.combine.schedule.decide``
says merge (adaptive; each epoch one piece of a linear lr decay over ``max_interval`` epochs). The
sources' weights (and, for ``fisher_dataset`` / ``regmean``, their Fisher / Gram statistics from
``mu.merge``) go to the cycle's checkpoint, the sources are merged with ``mu.merge.merge`` (methods
that use a base get the start model, the common ancestor of this cycle's fine-tunes) and the merged
model is evaluated on the target's dev and test splits. The cycle's log entry says why it merged.

``cycle_<k>/`` is written through ``mu.core.paths.atomic_path``, so it exists only once complete
(``completed_cycles``). Each (cycle[, epoch], source) training seed and each cycle's merge and
statistics seed are derived from the run's seed (``derive_seed``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from tqdm.auto import tqdm

from mu.combine import schedule
from mu.core import paths
from mu.corpus import data as mu_data
from mu.learn import evaluate, models, train
from mu.merge import lazy, plan, prepare, registry

CYCLE_JSON = "cycle.json"
DETAILS_JSON = "iterative_details.json"


def derive_seed(seed: int, *parts: object) -> int:
    """A seed in [0, 2**31) determined by ``seed`` and ``parts`` (e.g. cycle, locale)."""
    key = "/".join(map(str, (seed, *parts))).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") % 2**31


def cycle_dir(out_dir: str | os.PathLike, k: int) -> Path:
    return paths.resolve(out_dir) / f"cycle_{k}"


def completed_cycles(out_dir: str | os.PathLike) -> list[int]:
    """Cycles whose checkpoint is complete (its folder exists: it is renamed into place last)."""
    out = paths.resolve(out_dir)
    found = [p for p in out.glob("cycle_*") if p.is_dir() and p.name[6:].isdigit()]
    return sorted(int(p.name[6:]) for p in found if (p / CYCLE_JSON).is_file())


def _dev_accuracy(log_history: Sequence[Mapping[str, Any]]) -> list[float]:
    return [float(h["eval_accuracy"]) for h in log_history if "eval_accuracy" in h]


def _save_weights(model: Any, file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(file))


def _train_sources(
    k: int,
    tmp: Path,
    start: Path,
    epochs: int,
    seed_parts: tuple,
    *,
    sources_log: dict,
    steps_before: Mapping[str, int],
    weights: Mapping[str, float],
    data: str | os.PathLike,
    out: Path,
    fit_args: Mapping[str, Any],
) -> None:
    """Train every source for ``epochs`` from its weights in ``tmp/sources`` (or ``start``) and save
    them there; append losses, dev accuracies and steps to ``sources_log``."""
    scratch = paths.cache_dir("train")
    scratch.mkdir(parents=True, exist_ok=True)
    for loc in tqdm(list(weights), desc=f"cycle {k}: train", unit="source", leave=False):
        model, tokenizer = models.load_classifier(start)
        file = tmp / "sources" / f"{loc}.safetensors"
        if file.is_file():  # the adaptive schedule's earlier epochs in this cycle
            model.load_state_dict(models.load_state_dict(file), strict=True)
        s = sources_log[loc]
        loc_seed = derive_seed(*seed_parts, loc)
        with tempfile.TemporaryDirectory(prefix=f"iterative-{loc}.", dir=scratch) as work:
            history = train.fit(
                model,
                tokenizer,
                mu_data.load_split(loc, "train", data),
                epochs=epochs,
                seed=loc_seed,
                output_dir=work,
                eval_ds=mu_data.load_split(loc, "dev", data),
                log_dir=out / "runs" / loc / f"cycle_{k}",
                step_offset=steps_before[loc] + s["global_step"],
                run_name=f"iterative/{loc}/cycle_{k}",
                **fit_args,
            )
        s["seeds"].append(loc_seed)
        s["train_loss_per_epoch"] += [float(h["loss"]) for h in history["log_history"] if "loss" in h]
        s["dev_accuracy_per_epoch"] += _dev_accuracy(history["log_history"])
        s["global_step"] += int(history["global_step"])
        _save_weights(model, file)
        del model


def _train_cycle(
    k: int,
    tmp: Path,
    start: Path,
    log: list[dict],
    *,
    epochs_done: int,
    max_epochs: int,
    merge_frequency: int | None,
    adaptive: Mapping[str, Any] | None,
    weights: Mapping[str, float],
    seed: int,
    fit_args: Mapping[str, Any],
    **kw: Any,
) -> dict[str, Any]:
    """Train the sources until this cycle's merge: ``merge_frequency`` epochs (fixed), or epoch by
    epoch until ``mu.combine.schedule.decide`` says merge (adaptive). Returns the cycle's log entry."""
    lr = fit_args["lr"]
    sources_log = {
        loc: {"seeds": [], "train_loss_per_epoch": [], "dev_accuracy_per_epoch": [], "global_step": 0}
        for loc in weights
    }
    kw["steps_before"] = {loc: sum(e["sources"][loc]["global_step"] for e in log) for loc in weights}  # TensorBoard
    if adaptive is None:
        n = min(merge_frequency, max_epochs - epochs_done)
        _train_sources(
            k, tmp, start, n, (seed, "train", k), sources_log=sources_log, weights=weights, fit_args=fit_args, **kw
        )
        last = epochs_done + n == max_epochs
        decisions = [
            {
                "epoch": epochs_done + n,
                "merge": True,
                "reason": "end" if last else "fixed",
                "detail": f"every merge_frequency={merge_frequency} epochs" + (" (last epoch)" if last else ""),
            }
        ]
    else:
        decisions, n = [], 0
        while not decisions or not decisions[-1]["merge"]:
            n += 1
            # one piece of a linear decay over max_interval epochs (as one fit of that length would have)
            piece = {
                "lr": lr * (1 - (n - 1) / adaptive["max_interval"]),
                "warmup": 0.06 if n == 1 else 0.0,
                "lr_end": lr * (1 - n / adaptive["max_interval"]),
            }
            _train_sources(
                k,
                tmp,
                start,
                1,
                (seed, "train", k, n),
                sources_log=sources_log,
                weights=weights,
                fit_args={**fit_args, **piece},
                **kw,
            )
            dev = [{loc: s["dev_accuracy_per_epoch"][j] for loc, s in sources_log.items()} for j in range(n)]
            merge_now, reason, detail = schedule.decide(
                dev, epochs_done=epochs_done + n, max_epochs=max_epochs, **adaptive
            )
            decisions.append(
                {
                    "epoch": epochs_done + n,
                    "merge": merge_now,
                    "reason": reason,
                    "detail": detail,
                    "lr": [piece["lr"], piece["lr_end"]],
                }
            )
    for s in sources_log.values():
        s.update(train_loss=s["train_loss_per_epoch"][-1], dev_accuracy=s["dev_accuracy_per_epoch"][-1])
    return {
        "cycle": k,
        "epochs": [epochs_done, epochs_done + n],
        "start": "base" if k == 1 else f"cycle_{k - 1}",
        "sources": sources_log,
        "merge_reason": decisions[-1]["reason"],
        "merge_detail": decisions[-1]["detail"],
        **({"decisions": decisions} if adaptive is not None else {}),
    }


def run_cycle(
    k: int,
    start: Path,
    log: list[dict],
    *,
    out: Path,
    target_lang: str,
    weights: Mapping[str, float],
    data: str | os.PathLike,
    merge_plan: plan.Plan,
    reseed: bool,
    stats_params: Mapping[str, int],
    batch_size: int,
    max_seq_length: int,
    seed: int,
    **train_kw: Any,
) -> list[dict]:
    """Train every source from ``start`` until the schedule merges, checkpoint, merge, evaluate;
    write ``cycle_<k>/`` atomically."""
    started = time.perf_counter()
    stat = merge_plan.method.statistics
    for old in (out / "runs").glob(f"*/cycle_{k}"):  # tracking logs of an interrupted try of this cycle
        shutil.rmtree(old)
    with paths.atomic_path(cycle_dir(out, k)) as tmp:
        tmp.mkdir()
        entry = _train_cycle(k, tmp, start, log, weights=weights, seed=seed, data=data, out=out, **train_kw)
        if stat:
            for loc in weights:
                model, tokenizer = models.load_classifier(start)
                model.load_state_dict(models.load_state_dict(tmp / "sources" / f"{loc}.safetensors"), strict=True)
                stats = prepare.statistics(
                    stat,
                    model,
                    tokenizer,
                    mu_data.load_split(loc, "train", data),
                    max_seq_length=max_seq_length,
                    seed=derive_seed(seed, "stats", k, loc),
                    **stats_params,
                )
                (tmp / "stats").mkdir(exist_ok=True)
                save_file({n: t.contiguous() for n, t in stats.items()}, str(tmp / "stats" / f"{loc}.safetensors"))
                del model

        cycle_plan = merge_plan
        if reseed:  # the method draws at random and no seed was given: a fresh draw each cycle
            cycle_plan = dataclasses.replace(
                merge_plan, knobs={**merge_plan.knobs, "seed": derive_seed(seed, "merge", k)}
            )
        stats = (
            {loc: lazy.LazyStateDict.from_file(tmp / "stats" / f"{loc}.safetensors") for loc in weights}
            if stat
            else None
        )
        state_dicts = {loc: lazy.LazyStateDict.from_file(tmp / "sources" / f"{loc}.safetensors") for loc in weights}
        base = lazy.open_model(start) if merge_plan.base else None
        merged = registry.apply(cycle_plan, state_dicts, base, statistics=stats)
        model, tokenizer = models.load_classifier(start)
        model.load_state_dict(merged, strict=True)
        del merged
        details = {
            "target": target_lang,
            "cycle": k,
            "epochs": entry["epochs"][1],
            "weights": dict(weights),
            "merge_algorithm": merge_plan.name,
            "merge_reason": entry["merge_reason"],
            "knobs": dict(cycle_plan.knobs),
            "started_from": entry["start"],
        }
        models.save_classifier(model, tokenizer, tmp / "merged", extra_files={DETAILS_JSON: details})
        del model
        entry["merge_seed"] = cycle_plan.knobs.get("seed")
        entry["merged"] = {
            split: evaluate.evaluate(
                tmp / "merged", target_lang, split, data=data, batch_size=batch_size, max_seq_length=max_seq_length
            )
            for split in ("dev", "test")
        }
        entry["elapsed_s"] = round(time.perf_counter() - started, 3)
        log = [*log, entry]
        paths.write_json(tmp / CYCLE_JSON, {"cycle": k, "log": log})
    return log
