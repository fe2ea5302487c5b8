"""How weights reach each data-free merge method, and ``slerp``, computed by mergekit 0.1.5's in-memory
``mergekit.merge_methods.merge_state_dicts`` (LGPL-3.0 dependency). ``linear``,
the task-vector family (``mu.merge.taskvec``), ``model_stock`` and
``multislerp`` (``mu.merge.geometric``) are computed by ``mu`` itself, chunk by
chunk, as mergekit defines them (tests compare the two).

Every function takes ``state_dicts`` ({locale: state dict}), ``weights``
({locale: weight}, already validated and normalised to sum 1 by
``mu.merge.merge``) and, where it needs one, ``base`` (the pretrained state dict
the sources were fine-tuned from), and returns the merged state dict.

How weights reach mergekit:

* ``linear``: θ = Σ w_i θ_i (equal to mergekit's ``linear`` with per-model
  ``weight``; ``mu.merge.taskvec.linear``).
* task-vector family (``task_arithmetic``, ``ties``, ``dare_ties``,
  ``dare_linear``, ``breadcrumbs``): one routine, ``mu.merge.taskvec.task_vectors``. Each
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

from typing import Mapping

import torch
from mergekit.merge_methods import merge_state_dicts

StateDict = dict[str, torch.Tensor]

def _out_dtype(state_dicts: Mapping[str, StateDict]) -> torch.dtype | None:
    first = next(iter(next(iter(state_dicts.values())).values()), None)
    return first.dtype if first is not None and first.is_floating_point() else None


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
