"""Data-free merge methods, computed by mergekit 0.1.5's in-memory
``mergekit.merge_methods.merge_state_dicts`` (LGPL-3.0 dependency).

Every function takes ``state_dicts`` ({locale: state dict}), ``weights``
({locale: weight}, already validated and normalised to sum 1 by
``mu.merge.merge``) and, where it needs one, ``base`` (the pretrained state dict
the sources were fine-tuned from), and returns the merged state dict.

How weights reach mergekit:

* ``linear``: θ = Σ w_i θ_i, computed in place by ``mu`` (equal to mergekit's
  ``linear`` with per-model ``weight``; see :func:`linear`).
* task-vector family (``task_arithmetic``, ``ties``, ``dare_ties``,
  ``dare_linear``, ``breadcrumbs``): one routine, :func:`task_vectors`. Each
  source's task vector δ_i = θ_i − θ_base is sparsified (``density``), scaled by
  its weight (mergekit per-model ``weight``), combined, scaled by the global
  ``lambda_`` (mergekit ``lambda``) and added to the base:
  θ = θ_base + λ · Σ w_i δ_i / Σ w_i. With consensus (TIES sign election) the
  sum and the divisor run only over the sources whose δ agrees with the elected
  sign (the TIES "disjoint mean"). mergekit's ``normalize`` is always on, so with
  weights summing to 1 the combined task vector is a weighted *mean*; classic
  task arithmetic (sum of N task vectors) is ``lambda_=N`` with equal weights.
  ``task_arithmetic`` with ``lambda_=1`` equals ``linear``.
* ``slerp``: exactly two sources; interpolates from the first source (in the
  weights' order) to the second with ``t`` = the second's weight.
* ``multislerp``: barycentric spherical interpolation with per-model ``weight``;
  around ``base`` (on task vectors) when a base is given, on raw weights otherwise.
* ``model_stock``: needs base and at least two sources; it ignores the weights
  (its interpolation ratio comes from the angle between task vectors), the
  weights only choose the sources.
"""

from __future__ import annotations

import zlib
from typing import Literal, Mapping

import torch
from mergekit.merge_methods import get as mergekit_method
from mergekit.merge_methods import merge_state_dicts
from mergekit.merge_methods.generalized_task_arithmetic import (
    ConsensusMethod,
    GeneralizedTaskArithmeticMerge,
)
from mergekit.sparsify import SparsificationMethod

StateDict = dict[str, torch.Tensor]

BASE_ID = "__base__"
SPARSIFY = {
    "none": None,
    "magnitude": SparsificationMethod.magnitude,
    "random": SparsificationMethod.random,
    "breadcrumbs": SparsificationMethod.magnitude_outliers,
}


def _with_base(state_dicts: Mapping[str, StateDict], base: StateDict) -> dict[str, StateDict]:
    if BASE_ID in state_dicts:
        raise ValueError(f"a source may not be named {BASE_ID!r} (reserved for the base model)")
    return {**state_dicts, BASE_ID: base}


def _out_dtype(state_dicts: Mapping[str, StateDict]) -> torch.dtype | None:
    first = next(iter(next(iter(state_dicts.values())).values()), None)
    return first.dtype if first is not None and first.is_floating_point() else None


@torch.no_grad()
def linear(state_dicts: Mapping[str, StateDict], weights: Mapping[str, float],
           base: StateDict | None = None) -> StateDict:
    """Weighted mean of the parameters: θ = Σ w_i θ_i / Σ w_i (the base is not used).

    Computed in place in float32 (``out = w_0 θ_0``, then ``out.add_(θ_i, alpha=w_i)``):
    one pass over each input and no zero-filled buffers. This is the one data-free
    method not routed through mergekit, for speed (``make bench``: mergekit's linear
    allocates, zero-fills and divides a full output); a test checks it equals
    mergekit's ``linear`` to 1e-6.
    """
    total = float(sum(weights.values()))
    names = list(state_dicts)
    out: StateDict = {}
    for key, first in state_dicts[names[0]].items():
        acc = first.to(torch.float32, copy=True).mul_(weights[names[0]] / total)
        for name in names[1:]:
            acc.add_(state_dicts[name][key].to(torch.float32), alpha=weights[name] / total)
        out[key] = acc if first.dtype == torch.float32 else acc.to(first.dtype)
    return out


def _magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep exactly the ``max(1, int(density·n))`` largest-magnitude entries of ``delta`` (as
    mergekit's ``magnitude``), found with ``kthvalue`` (linear time) rather than a full sort.

    Entries tied at the threshold are common (fine-tuning deltas are float32 differences, so
    they take few distinct values): of those, the lowest indices are kept. mergekit keeps
    whichever its unstable argsort puts first, so the two may differ in which tied entries survive.
    """
    n = delta.numel()
    k = max(1, int(density * n))
    if n == 0 or k >= n:
        return delta
    w = delta.abs().reshape(-1).float()
    threshold = torch.kthvalue(w, n - k + 1).values
    keep = w > threshold
    tied = torch.nonzero(w == threshold).squeeze(1)
    keep[tied[: k - int(keep.sum())]] = True
    return delta * keep.reshape(delta.shape).to(delta.dtype)


@torch.no_grad()
def task_vectors(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    sparsify: Literal["none", "magnitude", "random", "breadcrumbs"] = "none",
    consensus: bool = False,
    density: float = 1.0,
    gamma: float = 0.01,
    lambda_: float = 1.0,
    rescale: bool = False,
    seed: int = 42,
) -> StateDict:
    """θ_base + λ · (weighted, optionally sparsified and sign-elected) mean of task vectors.

    ``sparsify``: keep a ``density`` fraction of each task vector by magnitude
    (TIES), at random (DARE, seeded by ``seed`` and the tensor name so results do
    not depend on the order tensors are merged in) or by magnitude after dropping
    the top ``gamma`` outliers (breadcrumbs). ``consensus``: TIES sign election
    (sum rule). ``rescale``: rescale each kept task vector to its original L1
    norm (DARE's rescaling, as mergekit does it).
    """
    if base is None:
        raise ValueError("task-vector methods need the base (pretrained) state dict")
    if sparsify not in SPARSIFY:
        raise ValueError(f"unknown sparsify {sparsify!r}; valid: {list(SPARSIFY)}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    method = GeneralizedTaskArithmeticMerge(
        consensus_method=ConsensusMethod.sum if consensus else None,
        sparsification_method=SPARSIFY[sparsify],
        default_normalize=True,
        default_rescale=rescale,
        method_name=f"mu_task_vectors_{sparsify}_{'ties' if consensus else 'sum'}",
        method_pretty_name=None,
        method_reference_url=None,
    )
    parameters = {"weight": dict(weights), "density": density, "lambda": lambda_,
                  "normalize": True, "rescale": rescale}
    if sparsify == "breadcrumbs":
        parameters["gamma"] = gamma
    out_dtype = _out_dtype(state_dicts)
    if sparsify == "magnitude" and not rescale and density < 1.0:
        # TIES pruning by a k-th-value threshold (linear time) instead of mergekit's full argsort of
        # every task vector (~60% of TIES's time on the word embeddings); then mergekit without
        # sparsification. Both keep exactly k entries; they may differ in which entries tied at the
        # threshold survive (see _magnitude_prune).
        state_dicts = {name: {k: base[k] + _magnitude_prune(sd[k] - base[k], density) for k in sd}
                       for name, sd in state_dicts.items()}
        method = GeneralizedTaskArithmeticMerge(
            consensus_method=method.consensus_method, sparsification_method=None, default_normalize=True,
            default_rescale=False, method_name=f"{method.method_name}_prepruned", method_pretty_name=None,
            method_reference_url=None)
    models = _with_base(state_dicts, base)
    if sparsify != "random":
        return merge_state_dicts(models, method, parameters=parameters, base=BASE_ID, out_dtype=out_dtype)
    merged: StateDict = {}
    for key in base:  # one seeded RNG stream per tensor: reproducible, independent of chunking
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + zlib.crc32(key.encode()))
            merged.update(merge_state_dicts({m: {key: sd[key]} for m, sd in models.items()}, method,
                                            parameters=parameters, base=BASE_ID, out_dtype=out_dtype))
    return merged


@torch.no_grad()
def slerp(state_dicts: Mapping[str, StateDict], weights: Mapping[str, float],
          base: StateDict | None = None) -> StateDict:
    """Spherical interpolation between exactly two sources, ``t`` = the second source's weight."""
    if len(state_dicts) != 2:
        raise ValueError(f"slerp merges exactly 2 sources, got {len(state_dicts)}: {list(state_dicts)}; "
                         "use multislerp for more")
    first, second = list(state_dicts)
    return merge_state_dicts(dict(state_dicts), "slerp", parameters={"t": float(weights[second])},
                             base=first, out_dtype=_out_dtype(state_dicts))


@torch.no_grad()
def multislerp(state_dicts: Mapping[str, StateDict], weights: Mapping[str, float],
               base: StateDict | None = None) -> StateDict:
    """Barycentric interpolation on the hypersphere (around ``base`` when given)."""
    models, base_id = (_with_base(state_dicts, base), BASE_ID) if base is not None else (dict(state_dicts), None)
    return merge_state_dicts(models, mergekit_method("multislerp"),
                             parameters={"weight": dict(weights), "normalize_weights": True},
                             base=base_id, out_dtype=_out_dtype(state_dicts))


@torch.no_grad()
def model_stock(state_dicts: Mapping[str, StateDict], weights: Mapping[str, float],
                base: StateDict | None = None, *, filter_wise: bool = False) -> StateDict:
    """Model Stock (needs base and >= 2 sources; weights are not used, see module doc)."""
    if base is None:
        raise ValueError("model_stock needs the base (pretrained) state dict")
    if len(state_dicts) < 2:
        raise ValueError(f"model_stock needs at least 2 sources, got {list(state_dicts)}")
    return merge_state_dicts(_with_base(state_dicts, base), "model_stock",
                             parameters={"filter_wise": filter_wise}, base=BASE_ID,
                             out_dtype=_out_dtype(state_dicts))
