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
from it in the next cycle (one cycle: ``mu.combine.iterative_cycle``). The log says,
per cycle, why it merged. The target's own data is never trained on. What a finished run is compared with (the one-shot merge
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
cycle's merge seed are derived from ``seed``, and ``fit`` reseeds every RNG (``transformers.set_seed``)
at the start of each call; each source model is always loaded from the start
model's folder on disk. So a resumed run computes exactly what an uninterrupted
one does: the same weights bit for bit on CPU with the same thread count (on a
GPU only as far as its kernels are deterministic; e.g. the embedding backward's
atomic adds are not, unless torch's deterministic algorithms are switched on).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback

from mu.combine import iterative_cycle, schedule
from mu.core import paths, report
from mu.corpus import data as mu_data
from mu.langs import locales
from mu.learn import evaluate, models, tracking
from mu.merge import catalog, plan
from mu.merge.run import STATS_DEFAULTS

RUN_JSON = "run.json"
LOG_JSON = "log.json"
RESULT_JSON = "result.json"


def _check_inputs(
    target_lang: str, sources: Mapping[str, float], merge_algorithm: str, merge_knobs: Mapping[str, Any]
) -> plan.Plan:
    locales.check_locale(target_lang)
    locales.check_locales(list(sources))
    if target_lang in sources:
        raise ValueError(
            f"the target {target_lang} is among the sources {sorted(sources)}: iterative training "
            "never trains on the target's data; pass the weights of mu.langs.similarity.select"
        )
    stat = catalog.get(merge_algorithm).statistics
    if stat and stat in merge_knobs:
        raise ValueError(
            f"merge method {merge_algorithm!r}: its {stat} are computed here from each source's train split, not given"
        )
    # the plan checks the method, its knobs and the weights once; every cycle's merge runs it as checked
    p = plan.make(merge_algorithm, sources, merge_knobs, base=True)
    return p


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
    merge_plan = _check_inputs(target_lang, sources, merge_algorithm, merge_knobs)
    weights = merge_plan.weights
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
    stat = merge_plan.method.statistics
    if stat is None and (stats_num_examples is not None or stats_batch_size is not None):
        raise ValueError(
            f"stats_num_examples / stats_batch_size apply to {sorted(catalog.STATISTICS)}, not to {merge_algorithm!r}"
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

    done = iterative_cycle.completed_cycles(out)
    log = paths.read_json(iterative_cycle.cycle_dir(out, done[-1]) / iterative_cycle.CYCLE_JSON)["log"] if done else []
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
            start = base if k == 1 else iterative_cycle.cycle_dir(out, k - 1) / "merged"
            log = iterative_cycle.run_cycle(
                k,
                start,
                log,
                out=out,
                target_lang=target_lang,
                weights=weights,
                data=data,
                merge_plan=merge_plan,
                reseed="seed" in merge_plan.method.defaults() and merge_knobs.get("seed") is None,
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

    final = iterative_cycle.cycle_dir(out, len(log)) / "merged"
    with paths.atomic_path(out / "merged") as tmp:
        shutil.copytree(final, tmp)
    result = {
        "target": target_lang,
        "sources": weights,
        "merged": str(out / "merged"),
        "test": evaluate.evaluate(  # with per-item results: the run's report row carries them
            out / "merged",
            target_lang,
            "test",
            data=data,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            items=True,
        ),
        "log": log,
        "params": params,
    }
    paths.write_json(out / RESULT_JSON, result)
    return result
