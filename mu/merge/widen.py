"""WIDEN: merging by weight disentanglement (Yu et al. 2024, "Extend Model Merging from Fine-Tuned to
Pre-Trained Large Language Models via Weight Disentanglement"), written in ``mu`` (mergekit 0.1.5 has
none; the seed's backend, auto-merge-llm, lists it as ``widen``).

Per weight matrix (torch layout: one row per output unit of a Linear, per token of an Embedding):

1. Disentangle each row into a magnitude and a direction, m = ‖w_j‖ and d = w_j / ‖w_j‖ (the
   paper's column-wise decomposition of W ∈ R^{in×out}, DoRA-style), for every source t and the base.
2. Differences from the base per row: ΔM_t,j = |m_t,j − m_base,j| and ΔD_t,j = 1 − cos(w_t,j, w_base,j).
3. Rank within each model: each source's rows are ranked by ascending difference and the rank r
   becomes the significance r / R (R rows), so the scale of a source's changes does not matter.
4. Importance across models: softmax over the sources of the significances, then score calibration:
   where a source's significance exceeds ``threshold`` × the mean over the sources (the paper's t,
   ``above_average_value_ratio``) its score is set to ``calibration`` (the paper's s,
   ``score_calibration_value``); magnitude and direction scores are averaged, S_t,j = (S^M + S^D) / 2.
5. θ_j = θ_base,j + Σ_t S_t,j · τ_t,j with τ_t = θ_t − θ_base.

1-D (and 0-D) tensors (biases, LayerNorm) have no direction: their elements are scored by the magnitude
of their change alone, |τ_t,i| ranked within the model, softmax and calibration as above. This follows
the description of the authors' implementation (github.com/yule-BUAA/MergeLM, ``widen_merging``) as
far as it is known here; the code was not available offline to check it line by line, so the tests
check these steps against a direct (stacked, in-memory) transcription of them, not against the
authors' code. Defaults t = 1 and s = 1 are the paper's.

**Weights.** ``{locale: weight}`` (normalised to sum 1) scale each task vector in step 5 by T·w_t
(T sources): equal weights give the paper's method; the scores (steps 1-4) come from the unscaled
models, since ranks and the softmax compare sources, not their share.

**Memory and streaming.** Computed by ``mu`` chunk by chunk (``mu.merge.chunks``): a first pass over
row chunks of every source collects two floats per row and source (one per element for 1-D tensors),
a second pass writes the output; scratch is the output tensor, those scores and a few chunks, so the
word embeddings are never held whole per source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from mu.merge import chunks

StateDict = dict[str, torch.Tensor]
COS_EPS = 1e-8  # torch.cosine_similarity's default, as the authors' code


def significance(diff: torch.Tensor) -> torch.Tensor:
    """[T, R] differences → [T, R] within-model significance: rank (ascending, ties by index) / R."""
    order = torch.argsort(diff, dim=1, stable=True)
    ranks = (torch.arange(diff.shape[1], device=diff.device, dtype=diff.dtype) / diff.shape[1]).expand_as(diff)
    return torch.empty_like(diff).scatter_(1, order, ranks)


def scores(sig: torch.Tensor, threshold: float, calibration: float) -> torch.Tensor:
    """Softmax over the sources (dim 0) of the significances; ``calibration`` where one exceeds
    ``threshold`` × their mean over the sources."""
    out = torch.softmax(sig, dim=0)
    out[sig > sig.mean(0, keepdim=True) * threshold] = calibration
    return out


def _check(threshold: float, calibration: float) -> None:
    for name, value in (("threshold", threshold), ("calibration", calibration)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"widen: {name} must be a finite number, got {value!r}")
    if threshold < 0:
        raise ValueError(f"widen: threshold must be >= 0 (a multiple of the mean significance), got {threshold}")


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
    """θ_base + Σ_t S_t · T·w_t · τ_t with WIDEN's per-row importance scores S_t (module docstring)."""
    if base is None:
        raise ValueError("widen merges task vectors: it needs the base (pretrained) state dict")
    _check(threshold, calibration)
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    names = list(state_dicts)
    total = float(sum(weights[k] for k in names))
    scale = [len(names) * float(weights[k]) / total for k in names]
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in base:
            out[key] = _tensor(state_dicts, names, scale, base, key, dev, step, threshold, calibration)
    return out


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
    dst = res.reshape(-1)
    for span in spans:  # pass 2: θ_base + Σ_t S_t · T w_t · τ_t
        where = chunks.flat(shape, span)
        units_here = slice(*span) if rowwise else where
        b = chunks.read(base, key, span, dev, out=base_buf)
        acc = acc_buf[: b.numel()].copy_(b)
        for t, name in enumerate(names):
            x = chunks.read(state_dicts[name], key, span, dev, out=src_buf).sub_(b)
            acc.view(-1, row_len).addcmul_(x.view(-1, row_len), weight[t, units_here].unsqueeze(1))
        dst[where] = acc
    return res
