"""``merge_models``: merge model folders on disk into a new HF model folder with ``merge_details``.

Streaming: sources (and base, Fishers, Grams) are read lazily (``mu.merge.lazy``).
The methods in ``mu.merge.STREAMED`` read
each tensor in row chunks (``tsv_m`` / ``iso_c`` / ``iso_cts`` only their non-matrix tensors; they read
each weight matrix whole, one source at a time) of ≤ ``mu.merge.chunks.CHUNK_ELEMENTS`` into reused
buffers; for N sources of P parameters (fp32) whose largest tensor has T
parameters (xlm-roberta-base: P ≈ 278M ≈ 1.11 GB, T = word embeddings
250002×768 ≈ 0.77 GB):

    peak ≈ 4P (output) + N chunks
           + 4T (base) + 4T (one source, for its magnitude threshold)    TIES, breadcrumbs(_ties)
           + 4T (base) + N·T (one-byte masks)                            DARE
           + 4T (base) + 4T (one source) + N·T (one-byte masks)          DELLA
           + 4T (base) + 4T (variances) + T (one-byte mask)              SCE
           + 4T (the float32 output of one tensor)                       multislerp
           + 24 bytes per row of the largest tensor (float64 partials)   slerp
           + 24 bytes per vector (float64 partials; per tensor: none)    nuslerp
           + ≤ 1M importances (+ 1M int64 sample positions)              arcee_fusion
           + nothing more (N × N Gram; counts)                           karcher, nearswap, ram, ramplus_tl
           + max(8 × the largest weight matrix, 4T (base))               tsv_m, iso_c, iso_cts
           + (2N + 1) floats per row of the largest tensor               widen, widen_rowwise

The Fisher / RegMean methods hold one
tensor per input (and per statistic) plus their scratch. ``make bench``
measures every data-free method at N = 2, 5, 10 against (N + 2) × the model
(``reports/bench/results.md``): TIES at N = 10 peaks at ~2.2 GB where mergekit's
stacked task vectors needed ~18 GB at N = 5.

Rerunning with identical parameters and unchanged input folders (every file's
size and modification time) returns the existing folder without doing anything;
the inputs' sha256, recorded in ``merge_details.json``, are computed in threads
while the merge runs and memoised on disk (``mu.core.report.file_sha256``: path, size,
mtime), so an unchanged checkpoint is read for hashing once, not at every merge
(hashing 10 × 1.1 GB costs about as much CPU as the merge itself).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import resource
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import AutoConfig

from mu.core import cache, paths, report
from mu.merge import adamerging, catalog, checks, lazy, plan, prepare, registry

DETAILS_JSON = "merge_details.json"
DETAILS_TXT = "merge_details.txt"


def local_dir(source: str | os.PathLike) -> Path:
    """A model folder: a local path (resolved against the project root) or a hub id, downloaded."""
    p = paths.resolve(source)
    if p.is_dir():
        return p
    if Path(str(source)).is_absolute() or str(source).startswith(".") or str(source).count("/") != 1:
        raise ValueError(f"model {str(source)!r} is neither an existing folder nor a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                str(source),
                ignore_patterns=["*.pt", "*.pth", "training_args.bin", "*.h5", "*.msgpack", "*.onnx", "*.ot"],
            )
        )
    except Exception as e:  # offline, unknown repo, ...: huggingface_hub raises many types
        raise ValueError(
            f"model {str(source)!r} is not a local folder ({p}) and could not be fetched from the "
            f"hub: {type(e).__name__}: {e}"
        ) from e


def _signature(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime) of every file in a folder: what the skip check compares."""
    return sorted(
        (str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*") if f.is_file()
    )


# (num_examples, batch_size) of the data statistics, shared with mu.combine.iterative.
STATS_DEFAULTS = {"fishers": (256, 1), "grams": (256, 8)}


def statistics(
    kind: str,
    locale: str,
    model_dir: Path,
    model_sha: str,
    data: str | os.PathLike,
    *,
    num_examples: int,
    batch_size: int,
    max_seq_length: int,
    seed: int,
    device: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fisher (``kind="fishers"``) or Gram (``"grams"``) statistics of one source on its own train split.

    Cached as safetensors under ``cache/merge_stats/`` by (model sha256, data
    fingerprint, sampling parameters); returns (file, description).
    """
    from mu.corpus import data as mu_data
    from mu.learn import models

    train = mu_data.load_split(locale, "train", data)
    desc = {
        "kind": kind,
        "locale": locale,
        "model_sha256": model_sha,
        "data": str(data),
        "data_fingerprint": mu_data.fingerprint(train),
        "split": "train",
        "num_examples": min(num_examples, len(train)),
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "seed": seed,
    }
    if kind == "fishers":
        desc["fisher"] = "empirical, true labels, normalised to mean 1"
    file = paths.cache_dir("merge_stats", f"{kind}-{locale}-{report.digest(desc)[:16]}.safetensors")
    if cache.read(file, lazy.LazyStateDict.from_file, "statistics cache entry") is None:
        model, tokenizer = models.load_classifier(model_dir)
        stats = prepare.statistics(
            kind,
            model,
            tokenizer,
            train,
            num_examples=num_examples,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            seed=seed,
            device=device,
        )
        del model
        with paths.atomic_path(file, suffix=".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in stats.items()}, str(tmp), metadata={"mu": json.dumps(desc)})
    return file, desc


def details_text(details: Mapping[str, Any]) -> str:
    """``merge_details.txt``: the record as readable lines."""
    lines = [
        f"method: {details['method']}",
        f"mode (weighting): {details['mode']}",
        f"base model: {details['base_model']} (used: {details['base_used']})",
        f"head: {details['head']}",
        f"embeddings: {details['embeddings']}",
        "sources and weights:",
    ]
    lines += [f"  {loc}: {w:.6f}  {details['sources'][loc]}" for loc, w in details["weights"].items()]
    lines.append(f"knobs: {json.dumps(details['knobs'], sort_keys=True)}")
    if details["statistics"]:
        lines.append(f"statistics: {json.dumps(details['statistics_params'], sort_keys=True)}")
    if details.get("adaptation"):
        fit = details["adaptation"]
        lines.append(
            f"adapted on unlabeled target texts: {json.dumps(details['statistics_params'], sort_keys=True)}; "
            f"entropy {fit['entropy_before']:.4f} -> {fit['entropy_after']:.4f} in {fit['seconds']:.1f} s"
        )
    lines.append("inputs (sha256):")
    lines += [f"  {name}: {v['sha256']}" for name, v in details["inputs"].items()]
    lines.append(f"elapsed: {details['elapsed_s']:.2f} s, process peak RSS: {details['peak_rss_mb']:.0f} MB")
    lines.append("versions: " + ", ".join(f"{k}={v}" for k, v in details["versions"].items()))
    lines.append(f"fingerprint: {details['fingerprint']}")
    lines.append(f"created: {details['created']}")
    return "\n".join(lines) + "\n"


def _check_inputs(spec: catalog.Method, data: Any, adapt_texts: Any) -> None:
    """What ``merge_models`` needs beyond the plan: the statistics' data, the adaptive method's texts."""
    if spec.adaptive and not adapt_texts:
        raise ValueError(
            f"merge method {spec.name!r} needs adapt_texts: the target's unlabeled utterances (mu.corpus.data.unlabeled)"
        )
    if spec.statistics and not spec.adaptive and data is None:
        raise ValueError(
            f"merge method {spec.name!r} needs data ('toy', 'hub' or a MASSIVE folder) for its {spec.statistics}"
        )


def _save(out: Path, like: Path, merged: Mapping[str, torch.Tensor], details: Mapping[str, Any]) -> None:
    """HF folder: config and tokenizer of ``like``, the merged weights, merge_details.json / .txt (atomic)."""
    from mu.learn import models

    config = AutoConfig.from_pretrained(like)
    checks.check_output(config, merged, f"merged model for {out}")
    tokenizer = models.load_tokenizer(like, "save")
    with paths.atomic_path(out) as tmp:
        tmp.mkdir()
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(
            {k: v.contiguous() for k, v in merged.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"}
        )
        paths.write_json(tmp / DETAILS_JSON, details)
        paths.write_text(tmp / DETAILS_TXT, details_text(details))


def merge_models(
    method: str | plan.Plan,
    sources: Mapping[str, str | os.PathLike],
    weights: Mapping[str, float],
    out_dir: str | os.PathLike,
    *,
    base_model: str | os.PathLike | None = None,
    head: str = "merge",
    embeddings: str = "merge",
    data: str | os.PathLike | None = None,
    mode: str | None = None,
    seed: int = 42,
    fisher_num_examples: int = STATS_DEFAULTS["fishers"][0],
    fisher_batch_size: int = STATS_DEFAULTS["fishers"][1],
    regmean_num_examples: int = STATS_DEFAULTS["grams"][0],
    regmean_batch_size: int = STATS_DEFAULTS["grams"][1],
    max_seq_length: int = 128,
    device: str | None = None,
    adapt_texts: Sequence[str] | None = None,
    adapt_batch_size: int = 16,
    adapt_from: Mapping[str, Any] | None = None,
    **knobs: Any,
) -> Path:
    """Merge the models of ``sources`` ({locale: folder or hub id}) into ``out_dir`` and return it.

    ``method``: a catalog name, or a plan already checked where the arguments entered (``mu.merge.plan.make``,
    as ``python -m mu merge`` makes it), which is not checked again. ``knobs``: the method's parameters
    (``mu.merge.knobs(method)``). ``seed``
    seeds DARE and the statistics' data sample. ``data`` (``"toy"``, ``"hub"`` or
    a MASSIVE-layout folder) is needed by ``fisher_dataset`` / ``regmean``,
    whose statistics are computed on each source's own train split
    (``fisher_*`` / ``regmean_*`` sizes) and cached. ``mode`` is recorded only.
    ``device`` (None: CUDA when available) is where the statistics and the merge
    are computed, tensor by tensor; the result equals the CPU's to float32
    rounding, so it is recorded but not part of the skip fingerprint.
    The folder (config and tokenizer of the first source, ``model.safetensors``,
    ``merge_details.json`` / ``.txt``) is written atomically; nothing is written
    on error; identical inputs and parameters skip. Adaptive methods (``adaptive`` in ``mu.merge.catalog``:
    ``adamerging``) fit on ``adapt_texts``, the target's unlabeled utterances (texts only), in
    batches of ``adapt_batch_size``; ``adapt_from`` (where the texts come from) is recorded only.
    """
    from mu.learn import models

    started = time.perf_counter()
    if isinstance(method, plan.Plan):  # checked where it entered (python -m mu merge): not checked again
        p = method
        if knobs or set(sources) != set(p.weights) or dict(weights) != p.weights:
            raise ValueError("merge_models(plan, ...): the sources and weights are the plan's, and no knobs beside it")
        method = p.name
    else:
        stat = catalog.get(method).statistics
        if stat in knobs:
            raise ValueError(f"merge_models({method!r}): its {stat} are computed from `data`, not given")
        p = plan.make(
            method,
            weights,
            knobs,
            sources=list(sources),
            base=base_model is not None,
            device=device,
            head=head,
            embeddings=embeddings,
            seed=seed,
        )
    stat = p.method.statistics
    head, embeddings = p.head, p.embeddings
    _check_inputs(p.method, data, adapt_texts)
    w, dev, effective, use_base = p.weights, p.device, p.knobs, p.base
    order = list(weights)
    dirs = {loc: local_dir(sources[loc]) for loc in order}
    base_dir = local_dir(base_model) if base_model is not None else None
    named = {**dirs, **({"<base>": base_dir} if base_dir is not None else {})}
    models.check_compatible(named)

    sizes = {"fishers": (fisher_num_examples, fisher_batch_size), "grams": (regmean_num_examples, regmean_batch_size)}
    stat_params = (
        {
            "data": str(data),
            "num_examples": sizes[stat][0],
            "batch_size": sizes[stat][1],
            "max_seq_length": max_seq_length,
            "seed": seed,
        }
        if stat in sizes
        else {}
    )
    if p.method.adaptive:
        stat_params = {
            "texts_sha256": report.digest(list(adapt_texts)),
            "num_texts": len(adapt_texts),
            "batch_size": adapt_batch_size,
            "max_seq_length": max_seq_length,
            "seed": seed,
            "adapt_from": dict(adapt_from or {}),
        }
    fingerprint = report.digest(
        {
            "method": method,
            "weights": w,
            "inputs": {k: _signature(d) for k, d in named.items()},
            "base_used": use_base,
            "head": head,
            "embeddings": embeddings,
            "knobs": effective,
            "statistics": stat_params,
        }
    )
    out = paths.resolve(out_dir)
    if (out / DETAILS_JSON).is_file() and (out / "model.safetensors").is_file():
        if paths.read_json(out / DETAILS_JSON).get("fingerprint") == fingerprint:
            return out

    with ThreadPoolExecutor(max_workers=4) as pool:  # sha256 of the inputs while merging (hashlib frees the GIL)
        hashing = {name: pool.submit(report.describe_input, d) for name, d in named.items()}
        stats_files: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        if stat and not p.method.adaptive:
            for loc in order:
                file, desc = statistics(
                    stat,
                    loc,
                    dirs[loc],
                    hashing[loc].result()["sha256"],
                    data,
                    num_examples=stat_params["num_examples"],
                    batch_size=stat_params["batch_size"],
                    max_seq_length=max_seq_length,
                    seed=seed,
                    device=device,
                )
                stats_files[loc] = {"path": str(file), **desc}
            extra[stat] = {loc: lazy.LazyStateDict.from_file(stats_files[loc]["path"]) for loc in order}
        state_dicts = checks.checked_inputs({loc: lazy.open_model(dirs[loc]) for loc in order})
        base = checks.checked_inputs({"<base>": lazy.open_model(base_dir)})["<base>"] if use_base else None
        adaptation = None
        if p.method.adaptive:  # coefficients fitted on the target's unlabeled texts
            adaptation = adamerging.fit_models(
                base_dir,
                state_dicts,
                base,
                w,
                adapt_texts,
                batch_size=adapt_batch_size,
                max_seq_length=max_seq_length,
                seed=seed,
                device=device,
                **effective,
            )
            extra[stat] = adaptation["coefficients"]
        merged = registry.apply(p, state_dicts, base, statistics=extra.get(stat), progress=True)
        inputs = {name: future.result() for name, future in hashing.items()}
    details = {
        "method": method,
        "mode": mode,
        "weights": w,
        "weights_given": {k: float(v) for k, v in weights.items()},
        "uses_weights": p.method.weights == "used",
        "sources": {loc: str(sources[loc]) for loc in order},
        "base_model": None if base_model is None else str(base_model),
        "base_used": use_base,
        "head": head,
        "embeddings": embeddings,
        "knobs": effective,
        "statistics_params": stat_params,
        "statistics": stats_files,
        "adaptation": adaptation,
        "inputs": inputs,
        "fingerprint": fingerprint,
        "config_from": order[0],
        "tokenizer_from": order[0],
        "device": str(dev),
        "elapsed_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": report.versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    _save(out, dirs[order[0]], merged, details)
    return out
