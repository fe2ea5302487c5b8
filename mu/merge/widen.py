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

**Memory and streaming.** Computed by ``mu`` chunk by chunk (``mu.merge.chunks``): a first pass over
row chunks of every source collects, per scored unit (column of a matrix, row of an embedding, element
of a 1-D tensor), two floats per source and one for the base (a column's sums of squares and its dot
product with the base, summed over the chunks); a second pass writes the output. Scratch is the output
tensor, those statistics and a few chunks, so no source's tensor (the word embeddings included) is held
whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mu.merge import chunks

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


def _merge(
    method: str,
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None,
    threshold: float,
    calibration: float,
    device: str | torch.device | None,
    chunk_elements: int | None,
) -> StateDict:
    if base is None:
        raise ValueError(f"{method} merges task vectors: it needs the base (pretrained) state dict")
    _check(method, threshold, calibration)
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    names = list(state_dicts)
    total = float(sum(weights[k] for k in names))
    scale = [len(names) * float(weights[k]) / total for k in names]
    tensor = _tensor if method == "widen" else _tensor_rowwise
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in base:
            out[key] = tensor(state_dicts, names, scale, base, key, dev, step, threshold, calibration)
    return out


@torch.no_grad()
def widen(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    threshold: float = 1.0,
    calibration: float = 1.0,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """θ_base + Σ_t S_t · T·w_t · τ_t with the authors' WIDEN scores S_t: per column of a weight matrix,
    per token of an embedding, per element of a 1-D tensor (module docstring)."""
    return _merge("widen", state_dicts, weights, base, threshold, calibration, device, chunk_elements)


@torch.no_grad()
def widen_rowwise(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    threshold: float = 1.0,
    calibration: float = 1.0,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """θ_base + Σ_t S_t · T·w_t · τ_t with per-row scores thresholded against the mean over the sources and
    ranked 1-D elements: ``mu``'s earlier reading of WIDEN (module docstring)."""
    return _merge("widen_rowwise", state_dicts, weights, base, threshold, calibration, device, chunk_elements)


def _tensor(
    state_dicts: Mapping[str, StateDict],
    names: list[str],
    scale: list[float],
    base: StateDict,
    key: str,
    dev: torch.device,
    step: int,
    threshold: float,
    calibration: float,
) -> torch.Tensor:
    shape, dtype = chunks.shape_dtype(base, key)
    res = torch.empty(shape, dtype=dtype)
    if res.numel() == 0:
        return res
    matrix = len(shape) >= 2
    row_len = math.prod(shape[1:]) if matrix else 1
    by_column = matrix and not is_embedding(key)
    units = (row_len if by_column else shape[0]) if matrix else res.numel()
    spans = chunks.spans(shape, step)
    size = chunks.flat(shape, spans[0]).stop
    base_buf, src_buf, acc_buf = (torch.empty(size, device=dev) for _ in range(3))
    if not matrix:  # pass 1 of a 1-D tensor: |τ| per element and source, scored as it is
        diff = torch.empty(len(names), units, device=dev)
        for span in spans:
            where = chunks.flat(shape, span)
            b = chunks.read(base, key, span, dev, out=base_buf)
            for t, name in enumerate(names):
                diff[t, where] = chunks.read(state_dicts[name], key, span, dev, out=src_buf).sub_(b).abs_()
        weight = importance(diff, threshold, calibration)
    else:  # pass 1 of a matrix: per unit Σx² and Σx·base of each source and Σbase², summed over row chunks
        sq, dot = (torch.zeros(len(names), units, device=dev) for _ in range(2))
        base_sq = torch.zeros(units, device=dev)
        axis = 0 if by_column else 1
        for span in spans:
            where = slice(None) if by_column else slice(*span)
            b_rows = chunks.read(base, key, span, dev, out=base_buf).view(-1, row_len)
            prod = acc_buf[: b_rows.numel()].view(-1, row_len)  # scratch: acc_buf is free until pass 2
            base_sq[where] += torch.mul(b_rows, b_rows, out=prod).sum(axis)
            for t, name in enumerate(names):
                x_rows = chunks.read(state_dicts[name], key, span, dev, out=src_buf).view(-1, row_len)
                dot[t, where] += torch.mul(x_rows, b_rows, out=prod).sum(axis)
                sq[t, where] += x_rows.square_().sum(axis)
        norm, base_norm = sq.sqrt_(), base_sq.sqrt_()
        cos = dot.div_(norm * base_norm)  # 0/0 = NaN for a zero unit, as the authors' 0/0 direction
        weight = importance(significance(norm.sub_(base_norm).abs_()), threshold, calibration)
        weight.add_(importance(significance(cos.neg_().add_(1.0)), threshold, calibration)).mul_(0.5)
    weight.mul_(torch.tensor(scale, device=dev).unsqueeze(1))
    _sum(
        state_dicts,
        names,
        base,
        key,
        shape,
        spans,
        dev,
        (base_buf, src_buf, acc_buf),
        weight,
        res,
        "columns" if by_column else "rows" if matrix else "elements",
    )
    return res


def _tensor_rowwise(
    state_dicts: Mapping[str, StateDict],
    names: list[str],
    scale: list[float],
    base: StateDict,
    key: str,
    dev: torch.device,
    step: int,
    threshold: float,
    calibration: float,
) -> torch.Tensor:
    shape, dtype = chunks.shape_dtype(base, key)
    res = torch.empty(shape, dtype=dtype)
    if res.numel() == 0:
        return res
    rowwise = len(shape) >= 2
    row_len = math.prod(shape[1:]) if rowwise else 1
    units = shape[0] if rowwise else res.numel()  # rows, or elements of a 1-D / 0-D tensor
    spans = chunks.spans(shape, step)
    size = chunks.flat(shape, spans[0]).stop
    base_buf, src_buf, acc_buf = (torch.empty(size, device=dev) for _ in range(3))
    mag = torch.empty(len(names), units, device=dev)
    cos = torch.empty(len(names), units, device=dev) if rowwise else None
    for span in spans:  # pass 1: per row (element) differences from the base
        where = slice(*span) if rowwise else chunks.flat(shape, span)
        b = chunks.read(base, key, span, dev, out=base_buf)
        b_rows = b.view(-1, row_len) if rowwise else None
        b_norm = b_rows.norm(dim=1) if rowwise else None
        for t, name in enumerate(names):
            x = chunks.read(state_dicts[name], key, span, dev, out=src_buf)
            if rowwise:
                x_rows = x.view(-1, row_len)
                mag[t, where] = x_rows.norm(dim=1).sub_(b_norm).abs_()
                cos[t, where] = 1.0 - F.cosine_similarity(x_rows, b_rows, dim=1, eps=COS_EPS)
            else:
                mag[t, where] = x.sub_(b).abs_()
    weight = scores(significance(mag), threshold, calibration)
    if rowwise:
        weight.add_(scores(significance(cos), threshold, calibration)).mul_(0.5)
    weight.mul_(torch.tensor(scale, device=dev).unsqueeze(1))
    _sum(
        state_dicts,
        names,
        base,
        key,
        shape,
        spans,
        dev,
        (base_buf, src_buf, acc_buf),
        weight,
        res,
        "rows" if rowwise else "elements",
    )
    return res


def _sum(
    state_dicts: Mapping[str, StateDict],
    names: list[str],
    base: StateDict,
    key: str,
    shape: tuple[int, ...],
    spans: list[chunks.Span],
    dev: torch.device,
    bufs: tuple[torch.Tensor, ...],
    weight: torch.Tensor,
    res: torch.Tensor,
    unit: str,
) -> None:
    """Pass 2: ``res`` = θ_base + Σ_t weight_t · τ_t, ``weight`` [T, units] per column, row or element."""
    base_buf, src_buf, acc_buf = bufs
    row_len = math.prod(shape[1:]) if unit != "elements" else 1
    dst = res.reshape(-1)
    for span in spans:
        where = chunks.flat(shape, span)
        part = where if unit == "elements" else slice(*span)
        b = chunks.read(base, key, span, dev, out=base_buf)
        acc = acc_buf[: b.numel()].copy_(b)
        for t, name in enumerate(names):
            x = chunks.read(state_dicts[name], key, span, dev, out=src_buf).sub_(b)
            w = weight[t].unsqueeze(0) if unit == "columns" else weight[t, part].unsqueeze(1)
            acc.view(-1, row_len).addcmul_(x.view(-1, row_len), w)
        dst[where] = acc
