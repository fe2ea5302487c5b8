"""The one registry of merge methods, and ``merge``: validate, then merge tensor by tensor.

``METHODS[name](state_dicts, weights, base=None, **knobs) -> state dict`` is the catalog's method run by
the one loop of ``mu.merge.stream`` (its ``prepare`` once per tensor, its ``apply`` per chunk).
``merge`` checks the inputs, normalises the weights to sum 1, keeps the classifier head / embeddings
of one source when asked, and runs that loop on ``device`` (default: CUDA when available). The
methods in ``STREAMED`` are given each tensor in row chunks: with lazily read inputs their peak
memory is the output plus bounded scratch. The others are given the tensor of each source (and
base, statistics) on ``device``: the output plus one tensor per input plus the method's scratch on it.

How the weights ({locale: weight}, validated and normalised to sum 1 here)
reach each data-free method (all computed by ``mu`` chunk by chunk, equal to
mergekit 0.1.5's to float32 rounding; tests compare the two):

* ``linear``: θ = Σ w_i θ_i (mergekit's ``linear`` with per-model ``weight``).
* task-vector family (``task_arithmetic``, ``ties``, ``dare_ties``,
  ``dare_linear``, ``breadcrumbs``; ``mu.merge.taskvec.task_vectors``): each
  δ_i = θ_i − θ_base is sparsified (``density``), scaled by its weight, combined,
  scaled by ``lambda_`` and added to the base: θ = θ_base + λ · Σ w_i δ_i / Σ w_i
  (with TIES consensus, sums and divisor over the sources that agree with the
  elected sign). With weights summing to 1 the combined task vector is a weighted
  mean; classic task arithmetic (a sum of N task vectors) is ``lambda_=N`` with
  equal weights; ``task_arithmetic`` with ``lambda_=1`` equals ``linear``.
* ``slerp``: exactly two sources; from the first (in the weights' order) to the
  second with ``t`` = the second's weight (``mu.merge.geometric``).
* ``multislerp``: barycentric spherical interpolation with per-model weights;
  around ``base`` (on task vectors) when a base is given, on raw weights otherwise.
* ``model_stock``: needs base and at least two sources; it ignores the weights
  (its ratio comes from the angle between task vectors), they only pick the sources.
* mergekit 0.1.5's other methods: ``breadcrumbs_ties``, ``della``, ``della_linear``
  (task-vector family, weights as TIES/DARE), ``sce`` (task-vector family; weights from
  the task vectors' energy, the given ones unused), ``karcher`` (α_i = the weights; no
  base), ``nuslerp`` (two sources, t = the second's weight, around ``base`` when given)
  (``mu.merge.geometric``), ``ram`` / ``ramplus_tl`` (need base, ignore the weights),
  ``nearswap`` / ``arcee_fusion`` (two sources: the larger weight is mergekit's base,
  the pretrained base unused) (``mu.merge.selective``). ``passthrough`` (layer
  stacking) does not apply: it builds a model with more layers, not a classifier of
  the sources' architecture.
* ``tsv_m``, ``iso_c``, ``iso_cts`` (``mu.merge.spectral``) and ``widen`` (``mu.merge.widen``), written in
  ``mu`` after the papers and their authors' code (mergekit has none): each task vector is scaled by
  N·w_i first, so equal weights give the published method; θ = θ_base + λ·Δ (``lambda_``; widen: none).
  ``widen_rowwise`` (``mu.merge.widen``) is ``mu``'s earlier reading of WIDEN (per row, threshold over
  the sources), kept beside it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from mu.merge import catalog, checks, lazy, plan, stream

StateDict = dict[str, torch.Tensor]

# {name: kernel}: each catalog method run by the one loop, with the arguments that make it that method
METHODS: dict[str, Callable[..., StateDict]] = {m.name: functools.partial(stream.run, m) for m in catalog.METHODS}
HEAD_PREFIX = "classifier."
EMBEDDINGS_PREFIX = "roberta.embeddings."


def knobs(method: str) -> dict[str, Any]:
    """The knobs ``method`` accepts, with their defaults (the catalog's)."""
    return catalog.get(method).defaults()


def knobs_for(method: str, **candidates: Any) -> dict[str, Any]:
    """The knobs to pass to ``method`` from ``candidates`` (every knob a notebook exposes), checked.

    ``None`` means "the method's default" and is dropped; a knob set to a value that ``method`` does
    not take is a ValueError (it would silently have no effect), as is a value out of its range.
    """
    checked = catalog.resolve(method, candidates)
    return {k: checked[k] for k, v in candidates.items() if v is not None}


def label(method: str, **knobs_: Any) -> str:
    """A name for ``method`` with these knobs: the method, plus each knob that differs from its
    default (``ties``, ``ties-density0.3``), so merges with other knobs never share a name."""
    defaults = knobs(method)
    unknown = sorted(set(knobs_) - set(defaults))
    if unknown:
        raise ValueError(f"merge method {method!r} does not take {unknown}; its knobs: {sorted(defaults)}")
    return method + "".join(f"-{k.rstrip('_')}{v}" for k, v in sorted(knobs_.items()) if v != defaults[k])


def check_state_dicts(
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]], base: Mapping[str, torch.Tensor] | None = None
) -> list[str]:
    """Same tensor names, shapes and floating dtypes everywhere; returns the names (first source's order)."""
    named = dict(state_dicts)
    if base is not None:
        named["<base>"] = base
    metas = {name: lazy.meta(sd) for name, sd in named.items()}
    ref_name, ref = next(iter(metas.items()))
    for name, m in metas.items():
        if set(m) != set(ref):
            raise ValueError(
                f"{name} and {ref_name} have different tensors: only in {name}: "
                f"{sorted(set(m) - set(ref))[:10]}, only in {ref_name}: {sorted(set(ref) - set(m))[:10]}"
            )
        for key, (shape, dtype) in m.items():
            if shape != ref[key][0]:
                shapes = {n: metas[n][key][0] for n in metas}
                raise ValueError(f"tensor {key} differs in shape between sources: {shapes}")
            if not dtype.is_floating_point:
                raise ValueError(f"tensor {key} of {name} has dtype {dtype}; only floating tensors can be merged")
    return list(ref)


def _keep(choice: str, prefix: str, what: str, keys: list[str]) -> str | None:
    if choice == "merge":
        return None
    if not any(k.startswith(prefix) for k in keys):
        raise ValueError(f"{what}={choice!r}: no tensor starts with {prefix!r}")
    return choice


def merge(
    method: str,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    weights: Mapping[str, float],
    base: Mapping[str, torch.Tensor] | None = None,
    *,
    head: str = "merge",
    embeddings: str = "merge",
    progress: bool = False,
    device: str | torch.device | None = None,
    **knobs_: Any,
) -> StateDict:
    """Merge ``state_dicts`` ({locale: state dict}) with ``weights`` ({locale: weight}) by ``method``.

    ``head`` / ``embeddings``: ``"merge"`` (default) or a source locale whose
    ``classifier.*`` / ``roberta.embeddings.*`` tensors are kept unchanged.
    Inputs are checked as ``merge_models`` checks them (``mu.merge.checks``): the same tensors, shapes
    and floating dtypes everywhere, every value finite (a ValueError names the source and tensor).
    ``knobs_`` are the method's parameters (``mu.merge.catalog``); fishers /
    grams are given per source and sliced per tensor here. The base is passed
    only to methods that use it. Inputs may be lazily read state dicts.
    ``device``: where to compute (None: CUDA when available, else CPU); the
    result is on the CPU and equal across devices to float32 rounding.
    """
    stat = catalog.get(method).statistics
    stats = knobs_.pop(stat, None) if stat else None
    p = plan.make(
        method,
        weights,
        knobs_,
        sources=list(state_dicts),
        base=base is not None,
        device=device,
        head=head,
        embeddings=embeddings,
    )
    return apply(p, state_dicts, base, statistics=stats, progress=progress)


def apply(
    p: plan.Plan,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor] | None = None,
    *,
    statistics: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> StateDict:
    """Run a checked plan (``mu.merge.plan.make``) tensor by tensor: the models' contents are checked
    here (tensors, shapes, finite values), the arguments are not checked again."""
    spec, w = p.method, p.weights
    sources = list(w)
    base = base if p.base else None
    keys = check_state_dicts({s: state_dicts[s] for s in sources}, base)
    # finite inputs, named by source and tensor: checked now in memory, as read when lazy (merge_models' check)
    state_dicts = checks.checked_inputs({s: state_dicts[s] for s in sources})
    base = checks.checked_inputs({"<base>": base})["<base>"] if base is not None else None
    keep = {
        HEAD_PREFIX: _keep(p.head, HEAD_PREFIX, "head", keys),
        EMBEDDINGS_PREFIX: _keep(p.embeddings, EMBEDDINGS_PREFIX, "embeddings", keys),
    }
    if statistics is not None and set(sources) - set(statistics):
        raise ValueError(
            f"{spec.name}: {spec.statistics} missing for sources {sorted(set(sources) - set(statistics))}; "
            f"given for {sorted(statistics)}"
        )
    return stream.run(
        spec, state_dicts, w, base, device=p.device, statistics=statistics, keep=keep, progress=progress, **p.knobs
    )
