"""WIDEN: merging by weight disentanglement (Yu et al. 2024, "Extend Model Merging from Fine-Tuned to
Pre-Trained Large Language Models via Weight Disentanglement"), written in ``mu`` (mergekit 0.1.5 has
none; the seed's backend, auto-merge-llm, lists it as ``widen``).

``widen`` follows the authors' code: ``MergingMethod.widen_merging`` in
``model_merging_methods/merging_methods.py`` of github.com/yule-BUAA/MergeLLM (commit 9178ef9,
2024-08-07). ``tests/test_merge_spectral.py`` checks it against a line-by-line transcription of that
function (transcribed, not copied: the repository states no licence). Per tensor:

**Weight matrices** (2-D, torch layout ``[out, in]`` of a Linear):

1. Disentangle each column (one per input feature) into a magnitude and a direction,
   m_j = ‖W[:, j]‖ and D[:, j] = W[:, j] / m_j, for every source t and the base.
2. Differences from the base per column: ΔM_t,j = |m_t,j − m_base,j| and
   ΔD_t,j = 1 − cos(W_t[:, j], W_base[:, j]); a zero column has the authors' 0/0 direction, so its
   ΔD is NaN and it ranks last.
3. Rank within each model: each source's columns are ranked by ascending difference (stable) and the
   rank r becomes the significance r / C (C columns), so the scale of a source's changes does not matter.
4. Importance: softmax over the sources of the significances, then score calibration: where a source's
   significance exceeds ``threshold`` × its mean over the tensor's columns (the paper's t,
   ``above_average_value_ratio``) its score is set to ``calibration`` (the paper's s,
   ``score_calibration_value``). That mean is (C − 1) / 2C, so with t = 1 the upper half of every
   source's columns gets s. Magnitude and direction scores are averaged, S_t,j = (S^M + S^D) / 2.
5. θ[:, j] = θ_base[:, j] + Σ_t S_t,j · τ_t[:, j] with τ_t = θ_t − θ_base.

**Embeddings** (2-D tensors with a dotted part of the name containing ``embed``: word, position and
token-type embeddings, stored ``[vocab, hidden]``): the authors transpose the token embeddings before the
steps above, so the unit is a token, a row of the stored matrix. Their Llama has one ``nn.Embedding``
(``model.embed_tokens.weight``); every ``nn.Embedding`` of XLM-R is treated the same way here.

**1-D tensors** (biases, LayerNorm): no decomposition and no ranking. Step 4 is applied to the raw
changes: softmax over the sources of |τ_t,i|, and s where |τ_t,i| exceeds t × the mean of |τ_t| over
the tensor's elements; θ = θ_base + Σ_t S_t · τ_t (no halving). The authors' code supports 1-D and 2-D
parameters only; here a 0-D tensor is a one-element 1-D tensor and a tensor of more than two
dimensions a matrix ``[shape[0], rest]``. Defaults t = 1 and s = 1 are the paper's.

The calibrated score is an absolute weight, not a share of the sources: T identical sources add T·s·τ
where they are calibrated (and τ elsewhere); one source with s = 1 gives that source back.

**``widen_rowwise``** is ``mu``'s earlier reading of the paper, written before the authors' code could
be checked, kept as its own method. It departs in three ways: (1) every matrix is scored per row (for
the embeddings that is the authors' unit; for a Linear it is an output unit instead of an input column),
and the cosine of a zero row is torch's eps-clamped 0; (2) the threshold is t × the mean over the
sources of that unit's significances, not over the tensor's units, so identical sources give that
source back; (3) the elements of 1-D tensors are ranked like matrix units (significance of |τ|), not
scored on the raw |τ|.

**Weights.** ``{locale: weight}`` (normalised to sum 1) scale each task vector in step 5 by T·w_t
(T sources): equal weights give the authors' method (which has no weights); the scores (steps 1-4)
come from the unscaled models, since ranks and the softmax compare sources, not their share.

**One kernel, two variants.** ``widen`` and ``widen_rowwise`` are the catalog's two names for one
kernel (``prepare``, ``apply``) with ``variant="columns"`` (the authors') or ``"rowwise"``.

**Memory and streaming.** Computed chunk by chunk (``mu.merge.stream``): ``prepare``, a first pass over
row chunks of every source, collects, per scored unit (column of a matrix, row of an embedding, element
of a 1-D tensor), two floats per source and one for the base (a column's sums of squares and its dot
product with the base, summed over the chunks); ``apply`` merges each chunk. Scratch is the output
tensor, those statistics and a few chunks, so no source's tensor (the word embeddings included) is held
whole.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mu.merge import stream

StateDict = dict[str, torch.Tensor]
COS_EPS = 1e-8  # torch.cosine_similarity's default (widen_rowwise)


def significance(diff: torch.Tensor) -> torch.Tensor:
    """[T, R] differences → [T, R] within-model significance: rank (ascending, ties by index, NaN last) / R."""
    order = torch.argsort(diff, dim=1, stable=True)
    ranks = (torch.arange(diff.shape[1], device=diff.device, dtype=diff.dtype) / diff.shape[1]).expand_as(diff)
    return torch.empty_like(diff).scatter_(1, order, ranks)


def importance(values: torch.Tensor, threshold: float, calibration: float) -> torch.Tensor:
    """[T, R] → [T, R] the authors' importance scores: softmax over the sources (dim 0); ``calibration``
    where a value exceeds ``threshold`` × its source's mean over the R units (dim 1)."""
    out = torch.softmax(values, dim=0)
    out[values > values.mean(1, keepdim=True) * threshold] = calibration
    return out


def scores(sig: torch.Tensor, threshold: float, calibration: float) -> torch.Tensor:
    """``widen_rowwise``'s scores: softmax over the sources (dim 0) of the significances; ``calibration``
    where one exceeds ``threshold`` × their mean over the sources."""
    out = torch.softmax(sig, dim=0)
    out[sig > sig.mean(0, keepdim=True) * threshold] = calibration
    return out


def is_embedding(key: str) -> bool:
    """Whether ``key`` is an embedding matrix, scored per row (token) as the authors' transposed token
    embeddings; the same rule as ``mu.merge.spectral.is_matrix`` uses to leave embeddings out of its SVDs."""
    return any("embed" in part for part in key.split("."))


def _check(method: str, threshold: float, calibration: float) -> None:
    for name, value in (("threshold", threshold), ("calibration", calibration)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{method}: {name} must be a finite number, got {value!r}")
    if threshold < 0:
        raise ValueError(f"{method}: threshold must be >= 0 (a multiple of the mean significance), got {threshold}")


def setup(
    names: list[str],
    w: list[float],
    base: Any,
    *,
    method: str = "widen",
    threshold: float = 1.0,
    calibration: float = 1.0,
    **_: Any,
) -> dict[str, Any]:
    if base is None:
        raise ValueError(f"{method} merges task vectors: it needs the base (pretrained) state dict")
    _check(method, threshold, calibration)
    total = float(sum(w))
    return {"scale": [len(w) * x / total for x in w]}


def prepare(
    t: stream.Tensor,
    w: list[float],
    *,
    scale: list[float],
    variant: str = "columns",
    threshold: float = 1.0,
    calibration: float = 1.0,
    **_: Any,
) -> dict[str, Any]:
    """Pass 1: the scores of every unit of the tensor (times T·w_t), and which unit they are per."""
    score = _scores if variant == "columns" else _scores_rowwise
    weight, unit = score(t, threshold, calibration)
    weight.mul_(torch.tensor(scale, device=t.device).unsqueeze(1))
    return {"weight": weight, "unit": unit, "acc": torch.empty(t.size, device=t.device)}


def _scores(t: stream.Tensor, threshold: float, calibration: float) -> tuple[torch.Tensor, str]:
    shape, dev, n = t.shape, t.device, t.n
    matrix = len(shape) >= 2
    row_len = math.prod(shape[1:]) if matrix else 1
    by_column = matrix and not is_embedding(t.key)
    units = (row_len if by_column else shape[0]) if matrix else t.numel
    if not matrix:  # a 1-D tensor: |τ| per element and source, scored as it is
        diff = torch.empty(n, units, device=dev)
        for at, xs, b in t.chunks():
            diff[:, at.flat] = xs.sub_(b).abs_()
        return importance(diff, threshold, calibration), "elements"
    # a matrix: per unit Σx² and Σx·base of each source and Σbase², summed over row chunks
    sq, dot = (torch.zeros(n, units, device=dev) for _ in range(2))
    base_sq = torch.zeros(units, device=dev)
    axis = 0 if by_column else 1
    scratch = torch.empty(t.size, device=dev)
    for at, xs, b in t.chunks():
        where = slice(None) if by_column else at.rows
        b_rows = b.view(-1, row_len)
        prod = scratch[: b_rows.numel()].view(-1, row_len)
        base_sq[where] += torch.mul(b_rows, b_rows, out=prod).sum(axis)
        for i in range(n):
            x_rows = xs[i].view(-1, row_len)
            dot[i, where] += torch.mul(x_rows, b_rows, out=prod).sum(axis)
            sq[i, where] += x_rows.square_().sum(axis)
    norm, base_norm = sq.sqrt_(), base_sq.sqrt_()
    cos = dot.div_(norm * base_norm)  # 0/0 = NaN for a zero unit, as the authors' 0/0 direction
    weight = importance(significance(norm.sub_(base_norm).abs_()), threshold, calibration)
    weight.add_(importance(significance(cos.neg_().add_(1.0)), threshold, calibration)).mul_(0.5)
    return weight, "columns" if by_column else "rows"


def _scores_rowwise(t: stream.Tensor, threshold: float, calibration: float) -> tuple[torch.Tensor, str]:
    shape, dev, n = t.shape, t.device, t.n
    rowwise = len(shape) >= 2
    row_len = math.prod(shape[1:]) if rowwise else 1
    units = shape[0] if rowwise else t.numel  # rows, or elements of a 1-D / 0-D tensor
    mag = torch.empty(n, units, device=dev)
    cos = torch.empty(n, units, device=dev) if rowwise else None
    for at, xs, b in t.chunks():  # per row (element) differences from the base
        if rowwise:
            b_rows = b.view(-1, row_len)
            b_norm = b_rows.norm(dim=1)
            for i in range(n):
                x_rows = xs[i].view(-1, row_len)
                mag[i, at.rows] = x_rows.norm(dim=1).sub_(b_norm).abs_()
                cos[i, at.rows] = 1.0 - F.cosine_similarity(x_rows, b_rows, dim=1, eps=COS_EPS)
        else:
            mag[:, at.flat] = xs.sub_(b).abs_()
    weight = scores(significance(mag), threshold, calibration)
    if rowwise:
        weight.add_(scores(significance(cos), threshold, calibration)).mul_(0.5)
    return weight, "rows" if rowwise else "elements"


def apply(
    xs: torch.Tensor,
    b: torch.Tensor,
    w: list[float],
    *,
    at: stream.At,
    weight: torch.Tensor,
    unit: str,
    acc: torch.Tensor | None = None,
    **_: Any,
) -> torch.Tensor:
    """θ_base + Σ_t weight_t · τ_t of one chunk, ``weight`` [T, units] per column, row or element (from
    ``prepare``, scaled by T·w_t)."""
    row_len = math.prod(at.shape[1:]) if unit != "elements" else 1
    part = at.flat if unit == "elements" else at.rows
    out = (torch.empty_like(b) if acc is None else acc[: b.numel()]).copy_(b)
    for i in range(len(xs)):
        x = xs[i].sub_(b)
        f = weight[i].unsqueeze(0) if unit == "columns" else weight[i, part].unsqueeze(1)
        out.view(-1, row_len).addcmul_(x.view(-1, row_len), f)
    return out
