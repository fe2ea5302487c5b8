"""Evaluation: per-example logits (cached on disk), accuracy / macro-F1, the N×N transfer matrix.

Logits are cached under ``cache/logits/`` keyed by (model fingerprint = sha256 of
its config and weights, data fingerprint = sha256 of the split's rows, locale,
split, max_seq_length): evaluating the same model on the same data twice runs
no forward pass. ``forward_calls()`` counts the forward batches run in this
process, so tests can check that.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from mu.analysis.aggregate import nxn_items_path, nxn_path, read_nxn  # noqa: F401  (one reader each, torch-free)
from mu.core import cache, paths, report, threads
from mu.corpus import data as mu_data
from mu.learn import batching
from mu.learn import models as mu_models

_FORWARD_CALLS = 0  # forward batches run by this process (see forward_calls)
PROGRESS_BATCHES = 100  # fewer batches take seconds: no bar (one would flicker past for every N×N cell)


def forward_calls() -> int:
    """Number of model forward batches run so far in this process."""
    return _FORWARD_CALLS


def model_fingerprint(model: str | os.PathLike) -> str:
    """sha256 of a model folder's config.json and model.safetensors (``mu.core.report.file_sha256``,
    memoised on path, size and mtime)."""
    folder = mu_models.check_model_dir(paths.resolve(model))
    parts = [report.file_sha256(folder / f) for f in (mu_models.CONFIG_FILE, mu_models.WEIGHTS_FILE)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_path(model: str | os.PathLike, ds: Dataset, locale: str, split: str, max_seq_length: int) -> Path:
    key = json.dumps(
        {
            "model": model_fingerprint(model),
            "data": mu_data.fingerprint(ds),
            "locale": locale,
            "split": split,
            "max_seq_length": max_seq_length,
        },
        sort_keys=True,
    )
    return paths.cache_dir("logits", hashlib.sha256(key.encode()).hexdigest() + ".npz")


def _read(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A cache entry's (logits, labels); None when absent or corrupt (``mu.core.cache.read`` warns and deletes it)."""
    return cache.read(path, _read_npz, "logits cache entry")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        lg, lb = z["logits"], z["labels"]
    if lg.ndim != 2 or lb.shape != (lg.shape[0],):
        raise ValueError(f"logits {lg.shape} and labels {lb.shape} do not form an [n, C] / [n] pair")
    return lg, lb


def _write(path: Path, logits_: np.ndarray, ds: Dataset, meta: Mapping[str, Any]) -> None:
    buf, cols = io.BytesIO(), mu_data.columns(ds)
    np.savez(
        buf,
        logits=logits_,
        labels=np.asarray(cols["label"], dtype=np.int64),
        ids=np.asarray(cols["id"], dtype=str),
        id2label=np.asarray(json.dumps(mu_data.ID2LABEL)),
        meta=np.asarray(json.dumps(dict(meta))),
    )
    with paths.atomic_path(path, suffix=".npz") as tmp:
        tmp.write_bytes(buf.getvalue())


def logits(
    model: str | os.PathLike,
    locale: str,
    split: str = "test",
    *,
    data: str | os.PathLike,
    batch_size: int = 64,
    max_seq_length: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits ``[n, 60]`` float32, gold labels ``[n]``) of a model folder on a locale's split, cached."""
    return _logits(model, locale, split, data=data, batch_size=batch_size, max_seq_length=max_seq_length, load=_load)


def _load(model: str | os.PathLike) -> tuple[Any, Any]:
    classifier, tokenizer = mu_models.load_classifier(paths.resolve(model), shared_tokenizer=True)
    return classifier.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")), tokenizer


def _logits(model, locale, split, *, data, batch_size, max_seq_length, load) -> tuple[np.ndarray, np.ndarray]:
    ds = mu_data.load_split(locale, split, data)
    path = cache_path(model, ds, locale, split, max_seq_length)
    hit = _read(path)
    if hit is not None:
        return hit
    out = forward(*load(model), mu_data.columns(ds)["text"], batch_size=batch_size, max_seq_length=max_seq_length)
    _write(
        path,
        out,
        ds,
        {"model": str(model), "locale": locale, "split": split, "data": str(data), "max_seq_length": max_seq_length},
    )
    return out, np.asarray(mu_data.columns(ds)["label"], dtype=np.int64)


def split_ids(locale: str, split: str, data: str | os.PathLike) -> list[str]:
    """The item ids of a locale's split, in the order of its logits (``mu.corpus.data.load_split``, memoised)."""
    return [str(i) for i in mu_data.columns(mu_data.load_split(locale, split, data))["id"]]


def _nxn_row(
    model: str | os.PathLike,
    *,
    targets: Sequence[str],
    split: str,
    data: str | os.PathLike,
    batch_size: int,
    max_seq_length: int,
) -> list[tuple[float, str]]:
    """One row of the N×N matrix: ``model``'s (accuracy, per-item 0/1 string) on each target (loaded once)."""
    load = functools.lru_cache(maxsize=1)(_load)
    out = []
    for t in targets:
        lg, lb = _logits(model, t, split, data=data, batch_size=batch_size, max_seq_length=max_seq_length, load=load)
        m = metrics(lg, lb, split_ids(t, split, data))
        out.append((m["accuracy"], m["items"]["correct"]))
    return out


def cached_logits(
    model: str | os.PathLike, locale: str, split: str = "test", *, data: str | os.PathLike, max_seq_length: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Like ``logits`` but only reads the cache; FileNotFoundError if this evaluation was never run."""
    ds = mu_data.load_split(locale, split, data)
    path = cache_path(model, ds, locale, split, max_seq_length)
    hit = _read(path)
    if hit is None:
        raise FileNotFoundError(
            f"no cached logits for model {model} on {locale}/{split} (data={data!s}, "
            f"max_seq_length={max_seq_length}); expected {path}; run mu.learn.evaluate.logits "
            "(or source_logits(..., compute=True)) first"
        )
    return hit


def _batches(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_seq_length: int, desc: str):
    """(indices, input_ids, attention_mask) of length-sorted, dynamically padded batches of ``texts``
    (``mu.learn.batching.sorted_batches``) on the model's device, in inference mode; every batch counts
    in ``forward_calls()``."""
    global _FORWARD_CALLS
    device = next(model.parameters()).device
    ids, lengths = batching.encode(tokenizer, texts, max_seq_length)
    batches = batching.sorted_batches(lengths, batch_size)
    with torch.inference_mode(), mu_models.cpu_threads(model):
        for idx in tqdm(batches, desc=desc, unit="batch", leave=False, disable=len(batches) < PROGRESS_BATCHES):
            batch, mask = batching.collate(ids, lengths, idx)
            _FORWARD_CALLS += 1
            yield idx, batch.to(device), mask.to(device)


def forward(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_seq_length: int) -> np.ndarray:
    """Logits ``[len(texts), num_labels]`` in the texts' order: length-sorted batches, dynamic
    padding, inference mode. The one inference loop of the package (cached evaluation and
    the live ensemble both use it); every batch counts in ``forward_calls()``."""
    out = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    for idx, ids, mask in _batches(
        model, tokenizer, texts, batch_size=batch_size, max_seq_length=max_seq_length, desc="forward"
    ):
        out[idx] = model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()
    return out


def metrics(logits_: np.ndarray, labels: np.ndarray, ids: Sequence[Any] | None = None) -> dict[str, Any]:
    """Accuracy and macro-F1 (averaged over the labels present in the gold set); with the examples' item
    ``ids`` (in the logits' order) also ``items``, the per-item correctness a result row carries
    (``mu.core.report.items``)."""
    labels = np.asarray(labels)
    if len(labels) == 0 or len(logits_) != len(labels):
        raise ValueError(f"metrics: need equally many logits and labels (>0), got {len(logits_)} and {len(labels)}")
    if ids is not None and len(ids) != len(labels):
        raise ValueError(f"metrics: {len(ids)} item ids for {len(labels)} examples")
    pred = np.asarray(logits_).argmax(axis=-1)
    f1s = []
    for c in np.unique(labels):
        tp = np.sum((pred == c) & (labels == c))
        precision = tp / max(np.sum(pred == c), 1)
        recall = tp / np.sum(labels == c)
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    out = {"accuracy": float(np.mean(pred == labels)), "macro_f1": float(np.mean(f1s)), "n": int(len(labels))}
    if ids is not None:
        out["items"] = report.items(ids, pred == labels)
    return out


def evaluate(
    model: str | os.PathLike,
    locale: str,
    split: str = "test",
    *,
    data: str | os.PathLike,
    batch_size: int = 64,
    max_seq_length: int = 128,
    items: bool = False,
) -> dict[str, Any]:
    """``metrics`` of a model folder on a locale's split (logits cached); ``items=True`` adds the per-item
    correctness (what a result row carries; logs and selections keep the scores only)."""
    lg, lb = logits(model, locale, split, data=data, batch_size=batch_size, max_seq_length=max_seq_length)
    return metrics(lg, lb, split_ids(locale, split, data) if items else None)


def nxn(
    models: Mapping[str, str | os.PathLike],
    targets: Sequence[str] | None = None,
    *,
    data: str | os.PathLike,
    profile: str,
    split: str = "test",
    batch_size: int = 64,
    max_seq_length: int = 128,
    workers: int | None = None,
) -> pd.DataFrame:
    """Accuracy of every source model (rows, ``{locale: model folder}``) on every target (columns).

    ``targets`` default: the models' locales. Written atomically to
    ``nxn_path(profile, split)`` with a heatmap PNG beside it (left as is when the matrix
    is unchanged), and each cell's per-item correctness to ``nxn_items_path`` (what the zero-shot and
    oracle rows of notebook 06 carry as their items). ``workers`` > 1 evaluates that many source models at once, each process on one
    thread (every logit is cached, so the matrix is the same); ``None``: ``mu.learn.models.fit_workers``.
    """
    targets = list(models) if targets is None else list(targets)
    if not models or not targets:
        raise ValueError(f"nxn needs at least one model and one target, got {list(models)} and {targets}")
    frame = pd.DataFrame(
        index=pd.Index(list(models), name="source"), columns=pd.Index(targets, name="target"), dtype=float
    )
    row = functools.partial(
        _nxn_row, targets=targets, split=split, data=data, batch_size=batch_size, max_seq_length=max_seq_length
    )
    workers = mu_models.fit_workers(next(iter(models.values()))) if workers is None else workers
    with tqdm(total=len(models) * len(targets), desc="N×N", unit="pair") as bar:
        rows = threads.map_processes(row, list(models.values()), workers, done=lambda: bar.update(len(targets)))
    for source, cells in zip(models, rows):
        frame.loc[source] = [accuracy for accuracy, _ in cells]
    path = nxn_path(profile, split)
    per_item = {
        "split": split,
        "ids": {t: split_ids(t, split, data) for t in targets},
        "correct": {s: {t: bits for t, (_, bits) in zip(targets, cells)} for s, cells in zip(models, rows)},
    }
    items_path = nxn_items_path(path)
    if not items_path.is_file() or paths.read_json(items_path) != per_item:
        paths.write_json(items_path, per_item)
    png = path.with_suffix(".png")
    if path.is_file() and png.is_file() and _same(read_nxn(path), frame):
        return frame
    with paths.atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp)
    import matplotlib.pyplot as plt

    from mu.analysis import plots  # matplotlib is only needed here

    fig = plots.heatmap(
        frame, png, title=f"{profile}: accuracy of source (row) on target (column), {split} split", vmin=0.0, vmax=1.0
    )
    plt.close(fig)
    return frame


def nxn_inputs(profile: str) -> dict[str, dict[str, str]]:
    """``mu.core.report`` inputs of a result that read notebook 02's matrices: the test N×N (``nxn``: oracle
    baselines) and, where notebook 02 wrote it, the dev N×N (``nxn_dev``: what ``transfer`` ranks by)."""
    found = {"nxn": nxn_path(profile), "nxn_dev": nxn_path(profile, "dev")}
    return {k: report.describe_input(p) for k, p in found.items() if k == "nxn" or p.is_file()}


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return (
        list(a.index) == list(b.index)
        and list(a.columns) == list(b.columns)
        and np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=1e-12)
    )


def native_rows(
    models: Mapping[str, str | os.PathLike],
    *,
    data: str | os.PathLike,
    split: str = "test",
    batch_size: int = 64,
    max_seq_length: int = 128,
) -> list[dict]:
    """One ``mu.core.report`` row per locale: its own model on its own split (``system="native"``)."""
    return [
        {
            "system": "native",
            "family": "native",
            "target": loc,
            "sources": {loc: 1.0},
            **evaluate(path, loc, split, data=data, batch_size=batch_size, max_seq_length=max_seq_length, items=True),
        }
        for loc, path in models.items()
    ]


# --------------------------------------------------------------------------- encoder (STS)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [batch, seq, dim]`` over the real tokens of ``mask [batch, seq]`` (padding out)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def embed(
    model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 64, max_seq_length: int = 128
) -> np.ndarray:
    """Sentence embeddings ``[len(texts), hidden]``: the mean of the encoder's last hidden layer
    over the real tokens (padding masked out); the classifier head is not used."""
    encoder = model.base_model  # XLMRobertaModel under the classification head
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    for idx, ids, mask in _batches(
        model, tokenizer, texts, batch_size=batch_size, max_seq_length=max_seq_length, desc="embed"
    ):
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        out[idx] = mean_pool(hidden, mask).cpu().numpy()
    return out


def sts(
    model: str | os.PathLike, pairs: pd.DataFrame, *, batch_size: int = 64, max_seq_length: int = 128
) -> dict[str, float | int]:
    """How well the encoder's sentence representations keep meaning: Spearman correlation between
    the cosine similarity of the two sentences' ``embed`` vectors and the gold ``score``, over
    ``pairs`` (columns ``sentence1``, ``sentence2``, ``score``: ``mu.corpus.sts.load_pairs``).
    ``model``: a model folder or hub id. Returns ``{"spearman", "n"}``."""
    from scipy import stats

    missing = [c for c in ("sentence1", "sentence2", "score") if c not in pairs.columns]
    if missing or len(pairs) < 2:
        raise ValueError(
            f"sts needs >= 2 pairs with columns sentence1, sentence2, score; got {len(pairs)} rows, missing {missing}"
        )
    classifier, tokenizer = _load(model)
    texts = sorted(set(pairs["sentence1"]) | set(pairs["sentence2"]))
    vectors = dict(
        zip(texts, embed(classifier, tokenizer, texts, batch_size=batch_size, max_seq_length=max_seq_length))
    )
    a = np.stack([vectors[t] for t in pairs["sentence1"]])
    b = np.stack([vectors[t] for t in pairs["sentence2"]])
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"spearman": float(stats.spearmanr(cosine, pairs["score"]).statistic), "n": int(len(pairs))}


def sts_table(
    base: str | os.PathLike,
    sources: Mapping[str, str | os.PathLike],
    merges: Mapping[str, str | os.PathLike],
    pairs: pd.DataFrame,
    *,
    batch_size: int = 64,
    max_seq_length: int = 128,
) -> pd.DataFrame:
    """``sts`` of the base model, each source (``{locale: folder}``) and each merge (``{system:
    folder}``) on the same pairs, so one sees whether merging keeps the sources' representations:
    columns ``model``, ``role`` (base / source / merge), ``spearman``, ``n``."""
    models = [
        ("base", "base", base),
        *[(loc, "source", p) for loc, p in sources.items()],
        *[(name, "merge", p) for name, p in merges.items()],
    ]
    return pd.DataFrame(
        [
            {"model": name, "role": role, **sts(path, pairs, batch_size=batch_size, max_seq_length=max_seq_length)}
            for name, role, path in tqdm(models, desc="STS", unit="model")
        ],
        columns=["model", "role", "spearman", "n"],
    )
