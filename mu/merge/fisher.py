"""Fisher-weighted averaging (Matena & Raffel, 2022), written in ``mu`` (mergekit has none).

θ = Σ w_i (F_i + ε) θ_i / Σ w_i (F_i + ε), elementwise, with ε = ``eps``
(1e-12): where every F_i is zero the result is the weighted mean Σ w_i θ_i, and
with equal Fishers it *is* the weighted mean (= ``linear``).

* ``fisher_simple``: F_i = θ_i² (squared parameter magnitude as importance; no data).
* ``fisher_dataset``: F_i is the diagonal *empirical* Fisher of source i on a
  sample of its own training data, computed beforehand by :func:`fisher_diagonal`
  and passed as ``fishers={locale: state dict of F_i}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from mu.merge import batches as _batches
from mu.merge import chunks

StateDict = dict[str, torch.Tensor]
EPS = 1e-12


def _weighted(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    importance: Callable[[str, str, torch.Tensor, slice], torch.Tensor],
    eps: float,
) -> StateDict:
    """Σ w_i (F_i + eps) θ_i / Σ w_i (F_i + eps) per tensor, F_i = importance(locale, key, θ_i, piece).

    Elementwise, so computed over flat pieces of at most ``chunks.CHUNK_ELEMENTS`` elements (the same
    numbers as whole tensors): the float32 scratch (numerator, denominator, one importance) stays a few
    MB. Whole, it was three copies of the largest tensor, 2.3 GB for XLM-R's 250k × 768 word embeddings,
    which put fisher_simple's peak above (N + 2) × the model in ``make bench``."""
    step = chunks.CHUNK_ELEMENTS
    first = next(iter(state_dicts.values()))
    out: StateDict = {}
    for key, ref in first.items():
        res = torch.empty(ref.shape, dtype=ref.dtype)
        dst, n = res.reshape(-1), ref.numel()
        for start in range(0, max(n, 1), step):
            piece = slice(start, min(start + step, n))
            num = torch.zeros(piece.stop - piece.start, dtype=torch.float32)
            den = torch.zeros_like(num)
            for loc, sd in state_dicts.items():
                theta = sd[key].reshape(-1)[piece].to(torch.float32)
                f = importance(loc, key, theta, piece).to(torch.float32).add(eps).mul_(weights[loc])
                num.addcmul_(f, theta)
                den.add_(f)
            dst[piece] = num.div_(den)
        out[key] = res
    return out


@torch.no_grad()
def fisher_simple(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    eps: float = EPS,
) -> StateDict:
    """Importance-weighted mean with importance F_i = θ_i² (the base is not used)."""
    return _weighted(state_dicts, weights, lambda loc, key, theta, piece: theta.square(), eps)


@torch.no_grad()
def fisher_dataset(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    fishers: Mapping[str, StateDict] | None = None,
    eps: float = EPS,
) -> StateDict:
    """Fisher-weighted mean with ``fishers`` from :func:`fisher_diagonal` (one per source)."""
    if fishers is None:
        raise ValueError(
            "fisher_dataset needs fishers={locale: diagonal Fisher state dict}; "
            "compute them with mu.merge.fisher_diagonal (merge_models does it from `data`)"
        )
    missing = sorted(set(state_dicts) - set(fishers))
    if missing:
        raise ValueError(f"fisher_dataset: no Fisher for sources {missing}; Fishers given for {sorted(fishers)}")
    for loc, sd in state_dicts.items():
        for key, value in sd.items():
            f = fishers[loc].get(key)
            if f is None or f.shape != value.shape:
                raise ValueError(
                    f"fisher_dataset: Fisher of {loc} for tensor {key} is "
                    f"{'missing' if f is None else tuple(f.shape)}; expected {tuple(value.shape)}"
                )
    return _weighted(state_dicts, weights, lambda loc, key, theta, piece: fishers[loc][key].reshape(-1)[piece], eps)


def fisher_diagonal(
    model: torch.nn.Module,
    tokenizer: Any,
    dataset: Dataset,
    *,
    num_examples: int = 256,
    batch_size: int = 1,
    max_seq_length: int = 128,
    seed: int = 42,
    normalize: bool = True,
    device: str | None = None,
) -> StateDict:
    """Diagonal empirical Fisher of a classifier on a sample of ``dataset`` (columns ``text``, ``label``).

    F = (1/N) Σ_batches |b| · (∇_θ mean_{n∈b} −log p(y_n | x_n))², over
    ``num_examples`` examples drawn with ``seed``. With ``batch_size=1`` (default)
    this is exactly the per-example empirical Fisher (1/N) Σ_n g_n²; a larger batch
    squares batch-mean gradients instead (cheaper, the usual approximation).
    ``normalize`` divides F by its mean over all parameters so sources whose
    gradients differ in overall scale get comparable importances. Dropout is off
    (eval mode). Returns float32 tensors on CPU, keyed like ``model.state_dict()``.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    params = dict(model.named_parameters())
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    subset = _batches.sample(dataset, num_examples, seed)
    total = 0
    for batch in tqdm(
        _batches.batches(subset, tokenizer, batch_size=batch_size, max_seq_length=max_seq_length, device=device),
        total=-(-len(subset) // batch_size),
        desc="fisher",
        leave=False,
    ):
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss  # mean NLL of the true labels over the batch
        loss.backward()
        n = int(batch["labels"].shape[0])
        for name, p in params.items():
            if p.grad is not None:
                fisher[name].add_(p.grad.detach().to(torch.float32).square().mul_(n))
        total += n
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        mean = float(sum(f.sum() for f in fisher.values())) / sum(f.numel() for f in fisher.values())
        scale = 1.0 / mean if normalize and mean > 0 else 1.0 / total
        out = {name: f.mul_(scale).cpu() for name, f in fisher.items()}
    missing = set(model.state_dict()) - set(out)
    for name in missing:  # buffers (none in XLM-R classifiers): zero importance → weighted mean
        out[name] = torch.zeros_like(model.state_dict()[name], dtype=torch.float32).cpu()
    return out
