"""Output-space ensembling: combine the per-example logits of several source models.

Every method is a plain function ``fn(logits, weights) -> predicted label ids``
over ``logits = {locale: array [n, C]}`` and ``weights = {locale: w}`` (same keys):

* ``majority``: one vote per source (its argmax); weights ignored.
* ``weighted_majority``: each source's vote counts its weight.
* ``soft``: weighted average of the sources' softmax probabilities, argmax.
* ``uriel_logits``: weighted sum of the raw logits, argmax (the seed's section 7.3).

Ties are broken deterministically. A source's own argmax and the final argmax of
``soft`` / ``uriel_logits`` take the lowest label id among equal maxima. For the
two voting methods a tie in votes goes to the tied class with the highest
(weighted, for ``weighted_majority``; equal-weight, for ``majority``) summed
probability, then to the lowest label id.

The sources' logits come two ways. The cached path (``source_logits``) reads logits that
``mu.learn.evaluate`` stored for each source on the target's split (``compute=True`` fills the
cache), so a new weighting or top-K costs milliseconds and no model forward; the ensembles
scored on a split (``evaluate_ensemble``, ``table``, ``accuracy_vs_k``) are
``mu.combine.ensemble_eval``. The live path (``live_logits``, ``predict``) runs each source
model once over new texts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from mu.core import paths
from mu.langs.similarity import check_weights

# Relative tolerance under which two weighted vote totals count as tied
# (weights are floats, so 0.1 + 0.2 and 0.3 must tie).
_VOTE_RTOL = 1e-9


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits ``[n, C]``."""
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def weighted_sum(arrays: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Σ_k weights[k] · arrays[k] in float64."""
    return sum(weights[k] * np.asarray(a, dtype=np.float64) for k, a in arrays.items())


def _vote(logits: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Argmax of weighted votes; ties by weighted probability mass, then lowest id."""
    first = next(iter(logits.values()))
    n, c = first.shape
    votes = np.zeros((n, c), dtype=np.float64)
    rows = np.arange(n)
    for k, a in logits.items():
        votes[rows, np.argmax(a, axis=1)] += weights[k]
    best = votes.max(axis=1, keepdims=True)
    tied = votes >= best - _VOTE_RTOL * np.abs(best)
    mass = weighted_sum({k: softmax(np.asarray(a, dtype=np.float64)) for k, a in logits.items()}, weights)
    return np.argmax(np.where(tied, mass, -np.inf), axis=1)


def majority(logits: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """One vote per source; ties by mean probability, then lowest label id. Weights ignored."""
    equal = {k: 1.0 / len(logits) for k in logits}
    return _vote(logits, equal)


def weighted_majority(logits: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Each source votes for its argmax with its weight; ties by weighted probability, then lowest id."""
    return _vote(logits, weights)


def soft(logits: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Argmax of the weighted average of softmax probabilities (lowest id on ties)."""
    probs = {k: softmax(np.asarray(a, dtype=np.float64)) for k, a in logits.items()}
    return np.argmax(weighted_sum(probs, weights), axis=1)


def uriel_logits(logits: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Argmax of the weighted sum of raw logits (lowest id on ties)."""
    return np.argmax(weighted_sum(logits, weights), axis=1)


METHODS: dict[str, Callable[[Mapping[str, np.ndarray], Mapping[str, float]], np.ndarray]] = {
    "majority": majority,
    "weighted_majority": weighted_majority,
    "soft": soft,
    "uriel_logits": uriel_logits,
}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; valid: {list(METHODS)}")
    return method


def check_logits(logits: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every source's logits must be a finite 2-D array of one common shape [n, C]."""
    if not logits:
        raise ValueError("no source logits given; an ensemble needs at least one source")
    out = {k: np.asarray(a) for k, a in logits.items()}
    ref_name, ref = next(iter(out.items()))
    for k, a in out.items():
        if a.ndim != 2:
            raise ValueError(f"logits of {k!r} have shape {a.shape}; expected [n_examples, n_labels]")
        if a.shape != ref.shape:
            raise ValueError(
                f"logits of {ref_name!r} have shape {ref.shape} but those of {k!r} have "
                f"shape {a.shape}: different test split size or label space"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"logits of {k!r} contain NaN or infinite values")
    return out


def combine(method: str, logits: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Predicted label ids [n] of ``method`` over ``{source: logits [n, C]}`` with ``{source: weight}``.

    Weights must be finite, non-negative, with a positive sum; they are normalised to sum 1.
    """
    fn = METHODS[check_method(method)]
    arrays = check_logits(logits)
    w = check_weights(weights, list(arrays))
    return np.asarray(fn(arrays, w), dtype=np.int64)


# --- cached path: logits that mu.learn.evaluate stored for each source on the target's split ---


def candidates(target: str, models_dir: str | os.PathLike) -> list[str]:
    """Locales with a model in ``models_dir``, the target excluded (zero-shot)."""
    from mu.langs import locales
    from mu.learn import models

    locales.check_locale(target)
    return [loc for loc in models.available_sources(models_dir) if loc != target]


def source_logits(
    target: str,
    sources: Sequence[str] | None = None,
    *,
    models_dir: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    max_seq_length: int = 128,
    compute: bool = False,
    batch_size: int = 64,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({source: logits [n, C]}, gold labels [n]) of each source model on ``target``'s split.

    ``sources`` default: every model in ``models_dir`` but the target's (``candidates``).
    ``compute=False`` only reads the cache (``mu.learn.evaluate.cached_logits``; a missing
    entry is a FileNotFoundError) and runs no model. ``compute=True`` computes and
    caches what is missing (``mu.learn.evaluate.logits``). All sources must share the
    label space (``id2label``, number of labels) and the gold labels of the split
    (same size and order); otherwise a ValueError names both sources.
    """
    from mu.learn import evaluate, models

    sources = candidates(target, models_dir) if sources is None else list(sources)
    if not sources:
        raise ValueError(
            f"no source model for target {target} in {paths.resolve(models_dir)} "
            "(train them first: notebook 02_training)"
        )
    folders = {loc: models.resolve(loc, models_dir) for loc in sources}
    models.check_compatible(folders)
    out: dict[str, np.ndarray] = {}
    gold: np.ndarray | None = None
    ref = ""
    for loc in tqdm(list(sources), desc=f"logits on {target}", unit="source", leave=False):
        if compute:
            lg, lb = evaluate.logits(
                folders[loc], target, split, data=data, batch_size=batch_size, max_seq_length=max_seq_length
            )
        else:
            lg, lb = evaluate.cached_logits(folders[loc], target, split, data=data, max_seq_length=max_seq_length)
        if gold is None:
            gold, ref = lb, loc
        elif lb.shape != gold.shape or not np.array_equal(lb, gold):
            raise ValueError(
                f"cached logits of {loc!r} and {ref!r} on {target}/{split} disagree on the gold labels: "
                f"{len(lb)} vs {len(gold)} examples"
                + ("" if lb.shape != gold.shape else f", {int(np.sum(lb != gold))} labels differ")
                + " (different test split)"
            )
        if out and lg.shape[1] != next(iter(out.values())).shape[1]:
            raise ValueError(
                f"cached logits of {loc!r} have {lg.shape[1]} labels but those of {ref!r} have "
                f"{next(iter(out.values())).shape[1]}: different label space"
            )
        out[loc] = lg
    return out, gold


# --- live path: new utterances through every source model ---


def live_logits(
    texts: Sequence[str], sources: Mapping[str, str | os.PathLike], *, batch_size: int = 64, max_seq_length: int = 128
) -> dict[str, np.ndarray]:
    """{source: logits [len(texts), C]}: each model (``mu.learn.models.load_classifier``) loaded once, in batches.

    The models must be compatible (``mu.learn.models.check_compatible``: architecture,
    vocabulary, labels); they are loaded one at a time, so memory holds one model.
    """
    import torch

    from mu.learn import evaluate, models

    texts = list(texts)
    if not texts:
        raise ValueError("predict needs at least one text")
    if not sources:
        raise ValueError("predict needs at least one source model")
    models.check_compatible(dict(sources))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {}
    for loc, path in tqdm(list(sources.items()), desc="sources", unit="model"):
        model, tokenizer = models.load_classifier(path)
        out[loc] = evaluate.forward(
            model.to(device), tokenizer, texts, batch_size=batch_size, max_seq_length=max_seq_length
        )
        del model
    return out


def _id2label(path_or_id: str | os.PathLike) -> dict[int, str]:
    from transformers import AutoConfig

    local = paths.resolve(path_or_id)
    config = AutoConfig.from_pretrained(str(local) if local.exists() else str(path_or_id))
    return {int(k): v for k, v in config.id2label.items()}


def predict(
    texts: Sequence[str],
    sources: Mapping[str, str | os.PathLike],
    weights: Mapping[str, float],
    method: str = "uriel_logits",
    batch_size: int = 64,
    max_seq_length: int = 128,
) -> list[str]:
    """Intent names predicted by the ``method`` ensemble of ``sources`` ({locale: model folder or hub id})."""
    check_method(method)
    check_weights(weights, list(sources))
    logits = live_logits(texts, sources, batch_size=batch_size, max_seq_length=max_seq_length)
    id2label = _id2label(next(iter(sources.values())))
    return [id2label[int(i)] for i in combine(method, logits, weights)]
