"""Fisher-weighted averaging (Matena & Raffel, 2022), written in ``mu`` (mergekit has none).

θ = Σ w_i (F_i + ε) θ_i / Σ w_i (F_i + ε), elementwise, with ε = ``eps``
(1e-12): where every F_i is zero the result is the weighted mean Σ w_i θ_i, and
with equal Fishers it *is* the weighted mean (= ``linear``).

* ``fisher_simple``: F_i = θ_i² (squared parameter magnitude as importance; no data).
* ``fisher_dataset``: F_i is the diagonal *empirical* Fisher of source i on a
  sample of its own training data, computed beforehand by :func:`fisher_diagonal`
  and passed as ``fishers={locale: state dict of F_i}``.

Both are one kernel (``apply``), run chunk by chunk by ``mu.merge.stream``.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from mu.merge import batches as _batches
from mu.merge import lazy, stream

StateDict = dict[str, torch.Tensor]
EPS = 1e-12


def setup(names: list[str], w: list[float], base: Any, *, statistics: Any = None, **_: Any) -> dict[str, Any]:
    """``fisher_dataset`` needs one Fisher per source (``fisher_simple`` has no setup)."""
    if statistics is None:
        raise ValueError(
            "fisher_dataset needs fishers={locale: diagonal Fisher state dict}; "
            "compute them with mu.merge.fisher_diagonal (merge_models does it from `data`)"
        )
    missing = sorted(set(names) - set(statistics))
    if missing:
        raise ValueError(f"fisher_dataset: no Fisher for sources {missing}; Fishers given for {sorted(statistics)}")
    return {}


def prepare(t: stream.Tensor, w: list[float], *, importance: str = "squares", **_: Any) -> dict[str, Any]:
    """Checks that each source's Fisher has this tensor's shape (``fisher_dataset``)."""
    for i, f in enumerate(t.stats or []) if importance == "fishers" else ():
        got = tuple(lazy.meta(f)[t.key][0]) if t.key in f else None
        if got != tuple(t.shape):
            raise ValueError(
                f"fisher_dataset: Fisher of source {i} for tensor {t.key} is "
                f"{'missing' if got is None else got}; expected {tuple(t.shape)}"
            )
    return {}


def apply(
    xs: torch.Tensor,
    b: torch.Tensor | None,
    w: list[float],
    *,
    importance: str = "squares",
    eps: float = EPS,
    stats: torch.Tensor | None = None,
    **_: Any,
) -> torch.Tensor:
    """Σ w_i (F_i + eps) θ_i / Σ w_i (F_i + eps) of one chunk, F_i = θ_i² (``importance="squares"``,
    ``fisher_simple``) or the source's Fisher ``stats[i]`` (``"fishers"``, ``fisher_dataset``).

    Elementwise, so streamed in chunks (the same numbers as whole tensors): whole, the float32 scratch
    was three copies of the largest tensor, 2.3 GB for XLM-R's 250k × 768 word embeddings."""
    num = torch.zeros(xs.shape[1], dtype=torch.float32, device=xs.device)
    den = torch.zeros_like(num)
    for i, theta in enumerate(xs):
        f = (theta.square() if importance == "squares" else stats[i]).add(eps).mul_(w[i])
        num.addcmul_(f, theta)
        den.add_(f)
    return num.div_(den)


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
