"""Iterative training: the sources train side by side and are merged on a schedule.

The run is a sequence of cycles, each ending with a merge. In cycle k every
source, one after the other (one model in memory at a time), starts from the
cycle's start model (the shared base in cycle 1, then the previous cycle's merge)
and trains with ``mu.learn.train.fit`` on its own train split, its dev accuracy measured
each epoch. ``merge_schedule="fixed"``: a cycle is ``merge_frequency`` epochs (the
last one what is left of ``max_epochs``), one ``fit`` per source. ``"adaptive"``:
the sources train one epoch at a time and after each epoch ``mu.combine.schedule.decide``
merges or not from their dev accuracies (convergence, a performance drop, bounds).
The sources' weights (and, for ``fisher_dataset`` / ``regmean``, their Fisher /
Gram statistics from ``mu.merge``) are written to the cycle's checkpoint; then the
sources are merged with ``mu.merge.merge`` (methods that use a base get the
cycle's start model, the common ancestor of this cycle's fine-tunes), the merged
model is evaluated on the target's dev and test splits, and every source resumes
from it in the next cycle. The log says, per cycle, why it merged. The target's
own data is never trained on. What a finished run is compared with (the one-shot merge
of the same sources, its cost, equal source-epochs) is ``mu.combine.iterative_results``.

Layout of ``out_dir``::

    run.json        parameters (a resume with other parameters is refused)
    cycle_<k>/      checkpoint of cycle k: sources/<locale>.safetensors (pre-merge weights),
                    stats/<locale>.safetensors (data-dependent merges), merged/ (HF model),
                    cycle.json (the log up to cycle k)
    log.json        per-cycle log (losses, each source's dev accuracy, merged target accuracy, merge reason)
    runs/           TensorBoard event files (report_to="tensorboard"): runs/<locale>/cycle_<k>/
    merged/         the final merged model (HF format)
    result.json     the final result; its presence marks the run finished

A cycle folder is written through ``mu.core.paths.atomic_path``: it exists only once
complete, so ``resume=True`` continues after the last one (older cycles are
pruned unless ``keep_cycles``). Each (cycle[, epoch], source) training seed and each
cycle's merge seed are derived from ``seed``, and ``Trainer`` reseeds every RNG
at the start of each ``fit``; each source model is always loaded from the start
model's folder on disk. So a resumed run computes exactly what an uninterrupted
one does: the same weights bit for bit on CPU with the same thread count (on a
GPU only as far as its kernels are deterministic; e.g. the embedding backward's
atomic adds are not, unless torch's deterministic algorithms are switched on).
"""

from __future__ import annotations

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
from transformers import TrainerCallback

from mu import merge
from mu.combine import schedule
from mu.core import paths, report
from mu.corpus import data as mu_data
from mu.langs import locales
from mu.learn import evaluate, models, tracking, train
from mu.merge import lazy
from mu.merge.run import STATS_DEFAULTS

RUN_JSON = "run.json"
LOG_JSON = "log.json"
RESULT_JSON = "result.json"
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


def _check_inputs(
    target_lang: str, sources: Mapping[str, float], merge_algorithm: str, merge_knobs: Mapping[str, Any]
) -> dict[str, float]:
    locales.check_locale(target_lang)
    locales.check_locales(list(sources))
    if target_lang in sources:
        raise ValueError(
            f"the target {target_lang} is among the sources {sorted(sources)}: iterative training "
            "never trains on the target's data; pass the weights of mu.langs.similarity.select"
        )
    weights = merge.check_weights(sources)
    accepted = merge.knobs(merge_algorithm)  # ValueError for an unknown method
    stat = merge.STATISTICS.get(merge_algorithm)
    unknown = sorted(set(merge_knobs) - set(accepted) | ({stat} & set(merge_knobs)))
    if unknown:
        raise ValueError(
            f"merge method {merge_algorithm!r} does not take {unknown}; its knobs: "
            f"{sorted(k for k in accepted if k != stat)}"
            + (f" ({stat} are computed here from each source's train split)" if stat else "")
        )
    return weights


def _prepare(out: Path, params: Mapping[str, Any], resume: bool) -> None:
    """Start fresh (``resume=False``) or check that ``out`` holds this same run; drop stale temporaries."""
    if not resume:
        for name in (RESULT_JSON, RUN_JSON, LOG_JSON):
            (out / name).unlink(missing_ok=True)
        for p in [out / "merged", out / "runs", *out.glob("cycle_*")]:
            if p.is_dir():
                shutil.rmtree(p)
    if out.is_dir():  # folders half-written by a killed run (atomic_path temporaries)
        for p in out.glob(".*.tmp"):
            shutil.rmtree(p, ignore_errors=True)
    stamp = out / RUN_JSON
    if stamp.is_file():
        saved = paths.read_json(stamp)["params"]
        differ = {
            k: (saved.get(k), params.get(k)) for k in sorted(set(saved) | set(params)) if saved.get(k) != params.get(k)
        }
        if differ:
            raise ValueError(
                f"{out} holds an iterative run with other parameters (saved, now): {differ}; "
                "use another out_dir, or resume=False to start over"
            )
        return
    paths.write_json(stamp, {"params": dict(params), "versions": report.versions()})


def _dev_accuracy(log_history: Sequence[Mapping[str, Any]]) -> list[float]:
    return [float(h["eval_accuracy"]) for h in log_history if "eval_accuracy" in h]


def _save_weights(model: Any, file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(file))


def _statistics(
    stat: str,
    model: Any,
    tokenizer: Any,
    train_ds: Any,
    *,
    num_examples: int,
    batch_size: int,
    max_seq_length: int,
    seed: int,
) -> dict:
    fn = merge.fisher_diagonal if stat == "fishers" else merge.regmean_grams
    return fn(
        model,
        tokenizer,
        train_ds,
        num_examples=num_examples,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        seed=seed,
    )


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


def _run_cycle(
    k: int,
    start: Path,
    log: list[dict],
    *,
    out: Path,
    target_lang: str,
    weights: Mapping[str, float],
    data: str | os.PathLike,
    merge_algorithm: str,
    merge_knobs: Mapping[str, Any],
    stats_params: Mapping[str, int],
    batch_size: int,
    max_seq_length: int,
    seed: int,
    **train_kw: Any,
) -> list[dict]:
    """Train every source from ``start`` until the schedule merges, checkpoint, merge, evaluate;
    write ``cycle_<k>/`` atomically."""
    started = time.perf_counter()
    stat = merge.STATISTICS.get(merge_algorithm)
    for old in (out / "runs").glob(f"*/cycle_{k}"):  # tracking logs of an interrupted try of this cycle
        shutil.rmtree(old)
    with paths.atomic_path(cycle_dir(out, k)) as tmp:
        tmp.mkdir()
        entry = _train_cycle(k, tmp, start, log, weights=weights, seed=seed, data=data, out=out, **train_kw)
        if stat:
            for loc in weights:
                model, tokenizer = models.load_classifier(start)
                model.load_state_dict(models.load_state_dict(tmp / "sources" / f"{loc}.safetensors"), strict=True)
                stats = _statistics(
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

        knobs = dict(merge_knobs)
        if "seed" in merge.knobs(merge_algorithm):
            knobs.setdefault("seed", derive_seed(seed, "merge", k))
        if stat:
            knobs[stat] = {loc: lazy.LazyStateDict.from_file(tmp / "stats" / f"{loc}.safetensors") for loc in weights}
        state_dicts = {loc: lazy.LazyStateDict.from_file(tmp / "sources" / f"{loc}.safetensors") for loc in weights}
        base = lazy.open_model(start) if merge_algorithm in merge.USES_BASE else None
        merged = merge.merge(merge_algorithm, state_dicts, weights, base, **knobs)
        model, tokenizer = models.load_classifier(start)
        model.load_state_dict(merged, strict=True)
        del merged
        details = {
            "target": target_lang,
            "cycle": k,
            "epochs": entry["epochs"][1],
            "weights": dict(weights),
            "merge_algorithm": merge_algorithm,
            "merge_reason": entry["merge_reason"],
            "knobs": {n: v for n, v in knobs.items() if n != stat},
            "started_from": entry["start"],
        }
        models.save_classifier(model, tokenizer, tmp / "merged", extra_files={DETAILS_JSON: details})
        del model
        entry["merge_seed"] = knobs.get("seed")
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


def run(
    target_lang: str,
    sources: Mapping[str, float],
    *,
    base_model: str | os.PathLike,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_epochs: int,
    merge_frequency: int | None = None,
    merge_schedule: str = "fixed",
    min_interval: int | None = None,
    max_interval: int | None = None,
    patience: int | None = None,
    convergence_threshold: float | None = None,
    performance_drop: float | None = None,
    merge_algorithm: str = "linear",
    batch_size: int = 32,
    lr: float = 2e-5,
    max_seq_length: int = 128,
    seed: int = 42,
    resume: bool = True,
    keep_cycles: bool = False,
    stats_num_examples: int | None = None,
    stats_batch_size: int | None = None,
    report_to: str | Sequence[str] | None = None,
    callbacks: Sequence[TrainerCallback] | None = None,
    **merge_knobs: Any,
) -> dict[str, Any]:
    """Train ``sources`` ({locale: weight}, from ``mu.langs.similarity.select``) for ``max_epochs`` with
    merges on the way; return the final merged model's result.

    ``merge_schedule="fixed"``: a merge every ``merge_frequency`` epochs.
    ``merge_schedule="adaptive"``: after each epoch ``mu.combine.schedule.decide`` merges or not,
    from the sources' dev accuracies (``min_interval``, ``max_interval``, ``patience``,
    ``convergence_threshold``, ``performance_drop``; None = ``mu.combine.schedule.ADAPTIVE_DEFAULTS``);
    every epoch is then its own ``fit``: the learning rate follows one linear decay over
    ``max_interval`` epochs, cut short by an earlier merge; AdamW's moments restart each epoch.
    Each cycle's log entry says why it merged (``merge_reason``, ``merge_detail``; adaptive:
    every epoch's ``decisions``).
    ``base_model``: the shared starting model (same head for every source).
    ``merge_knobs``: the method's parameters (``mu.merge.knobs(merge_algorithm)``).
    ``stats_num_examples`` / ``stats_batch_size``: sample of each source's train
    split for ``fisher_dataset`` (default 256 / 1) or ``regmean`` (256 / 8).
    ``report_to`` (``mu.learn.tracking``): experiment tracking of every ``fit`` (train loss and
    dev accuracy per epoch; TensorBoard under ``out_dir/runs/<locale>/cycle_<k>``, one
    continuous step axis per source); not a parameter of the run, so resuming may change it.
    ``callbacks``: ``TrainerCallback``s passed to every ``fit``. ``resume=True``
    continues after the last complete cycle of ``out_dir`` (a finished run returns
    its saved result); ``resume=False`` starts over. ``keep_cycles`` keeps every
    cycle's checkpoint instead of the last one only.

    Returns ``{"target", "sources", "merged" (folder), "test" ({accuracy, macro_f1, n}),
    "log" (per cycle), "params"}``, also written to ``out_dir/result.json``.
    """
    weights = _check_inputs(target_lang, sources, merge_algorithm, merge_knobs)
    backends = tracking.check(report_to)
    adaptive = schedule.check(
        merge_schedule,
        max_epochs,
        merge_frequency,
        min_interval=min_interval,
        max_interval=max_interval,
        patience=patience,
        convergence_threshold=convergence_threshold,
        performance_drop=performance_drop,
    )
    base = models.check_model_dir(paths.resolve(base_model))
    stat = merge.STATISTICS.get(merge_algorithm)
    if stat is None and (stats_num_examples is not None or stats_batch_size is not None):
        raise ValueError(
            f"stats_num_examples / stats_batch_size apply to {sorted(merge.STATISTICS)}, not to {merge_algorithm!r}"
        )
    stats_params = {}
    if stat:
        n_default, b_default = STATS_DEFAULTS[stat]
        stats_params = {
            "num_examples": n_default if stats_num_examples is None else stats_num_examples,
            "batch_size": b_default if stats_batch_size is None else stats_batch_size,
        }
    params = {
        "target_lang": target_lang,
        "sources": weights,
        "base_model": str(base_model),
        "base_sha256": report.sha256(base / models.WEIGHTS_FILE),
        "data": str(data),
        "train_sha256": {loc: mu_data.fingerprint(mu_data.load_split(loc, "train", data)) for loc in weights},
        "max_epochs": max_epochs,
        "merge_schedule": merge_schedule,
        "merge_frequency": merge_frequency,
        **({"adaptive": adaptive} if adaptive is not None else {}),
        "merge_algorithm": merge_algorithm,
        "merge_knobs": dict(merge_knobs),
        "statistics": stats_params,
        "batch_size": batch_size,
        "lr": lr,
        "max_seq_length": max_seq_length,
        "seed": seed,
    }
    out = paths.resolve(out_dir)
    _prepare(out, params, resume)
    if (out / RESULT_JSON).is_file():
        return paths.read_json(out / RESULT_JSON)

    done = completed_cycles(out)
    log = paths.read_json(cycle_dir(out, done[-1]) / CYCLE_JSON)["log"] if done else []
    epochs_done = log[-1]["epochs"][1] if log else 0
    fit_args = {
        "batch_size": batch_size,
        "lr": lr,
        "max_seq_length": max_seq_length,
        "callbacks": callbacks,
        "report_to": backends,
    }
    with tqdm(
        desc=f"iterative {target_lang} ({merge_schedule})", unit="epoch", total=max_epochs, initial=epochs_done
    ) as bar:
        while epochs_done < max_epochs:
            k = len(log) + 1
            start = base if k == 1 else cycle_dir(out, k - 1) / "merged"
            log = _run_cycle(
                k,
                start,
                log,
                out=out,
                target_lang=target_lang,
                weights=weights,
                data=data,
                merge_algorithm=merge_algorithm,
                merge_knobs=merge_knobs,
                stats_params=stats_params,
                batch_size=batch_size,
                max_seq_length=max_seq_length,
                seed=seed,
                epochs_done=epochs_done,
                max_epochs=max_epochs,
                merge_frequency=merge_frequency,
                adaptive=adaptive,
                fit_args=fit_args,
            )
            bar.update(log[-1]["epochs"][1] - epochs_done)
            epochs_done = log[-1]["epochs"][1]
            paths.write_json(out / LOG_JSON, log)
            if not keep_cycles:  # only the newest complete checkpoint is needed to resume
                for old in out.glob("cycle_*"):
                    if old.name[6:].isdigit() and int(old.name[6:]) < k:
                        shutil.rmtree(old)
    paths.write_json(out / LOG_JSON, log)  # also when a killed run had finished its last cycle

    final = cycle_dir(out, len(log)) / "merged"
    with paths.atomic_path(out / "merged") as tmp:
        shutil.copytree(final, tmp)
    result = {
        "target": target_lang,
        "sources": weights,
        "merged": str(out / "merged"),
        "test": evaluate.evaluate(
            out / "merged", target_lang, "test", data=data, batch_size=batch_size, max_seq_length=max_seq_length
        ),
        "log": log,
        "params": params,
    }
    paths.write_json(out / RESULT_JSON, result)
    return result
