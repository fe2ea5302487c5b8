"""Spectral task-vector merges: TSV-M, Iso-C and Iso-CTS, written in ``mu`` (mergekit 0.1.5 has none).

Each merges the task vectors τ_t = θ_t − θ_base of every 2-D weight matrix through their
singular value decompositions, and adds the result, scaled by ``lambda_`` (the papers' α),
to the base: θ = θ_base + λ · Δ.

* ``tsv_m`` (Task Singular Vectors: Merge; Gargiulo et al., CVPR 2025, §"TSV-Merge"): the
  SVD τ_t = U_t Σ_t V_tᵀ of each task vector, truncated to its top k = ⌊r / T⌋ components
  (r = min(m, n), T sources); the truncated factors are concatenated, U = [U_1,k … U_T,k],
  Σ = diag(Σ_1,k … Σ_T,k), V = [V_1,k … V_T,k]; U and V are replaced by their nearest
  orthogonal matrices (orthogonal Procrustes: U = P S Qᵀ → P Qᵀ, the same for V), and
  Δ = U⊥ Σ V⊥ᵀ. Follows the authors' ``compute_and_sum_svd_mem_reduction``
  (github.com/AntoSwan/task_singular_vectors): k is their ``int(r · 1/T)``; slots left over
  when T·k < r stay zero; α defaults to their 1.0.
* ``iso_c`` (isotropic merging, Marczak et al., ICML 2025, §"Iso-C"): the SVD of the
  summed task vectors Σ_t τ_t = U S Vᵀ with every singular value replaced by their mean,
  Δ = σ̄ U Vᵀ, σ̄ = (1/r) Σ_i s_i (a flat spectrum; github.com/danielm1405/iso-merging ``iso_c``).
* ``iso_cts`` (§"Iso-CTS"): a common subspace, the top ``k_c`` singular directions of Σ_t τ_t,
  k_c ≈ ``common_fraction`` · r rounded so that the remaining r − k_c split evenly into T
  task-specific blocks of k_t = (r − k_c) / T; block t holds the top k_t directions of τ_t
  with the common subspace projected out (τ_t − U_c U_cᵀ τ_t); the blocks and the common
  directions are concatenated, orthogonalised as in TSV-M, and the spectrum flattened to its
  mean as in Iso-C (the authors' ``iso_cts``, ``common_space_fraction`` 0.8).

Every other tensor (biases, LayerNorm, and the embeddings, see below) is the mean of the task
vectors, θ_base + λ · mean_t τ_t, as in both authors' code (computed chunk by chunk:
``mu.merge.taskvec.mean``). The catalog's ``reads="matrices"`` has ``mu.merge.stream`` give ``apply``
each SVD-merged matrix's sources one at a time, whole, and every other tensor in chunks.

**Weights.** ``{locale: weight}`` (normalised to sum 1) enter by scaling each task vector by
T·w_t before anything else: τ'_t = T w_t τ_t. Equal weights give exactly the papers' methods;
the mean of the τ'_t is the weighted mean Σ w_t τ_t; in TSV-M a source's singular values scale
with its weight, in Iso-C/CTS its share of the summed matrix does.

**Embeddings.** A 2-D tensor whose name has a dotted part containing ``embed``
(``roberta.embeddings.word_embeddings.weight``, position and token-type embeddings) is merged as
the mean, not through an SVD: its task vector is row-sparse (only the tokens a language's data
contains move), not a linear map whose singular directions the papers reason about, and the
250,002 × 768 SVD of xlm-roberta-base would cost ~10× the rest of the model's and ~3 GB per source.

**Memory** (float32, one tensor at a time; inputs read lazily, one source at a time): per weight
matrix of m × n (r = min(m, n)) the peak scratch is the base, one task vector, its SVD
(m·r + r + r·n) and the concatenated factors (m·r + r·n), plus the final SVDs of U and V: about
8 · 4·m·n bytes, independent of the number of sources (xlm-roberta-base: its largest matrix,
3072 × 768, gives ~75 MB). Iso-C/CTS read each source twice (sum, then residual) instead of
holding them. The output (4 bytes per parameter) is held whole, as for every method.

**Threads.** The SVDs and products of a matrix run on the free cores (``mu.merge.chunks.compute_threads``;
one thread for small matrices). Decomposing the T task vectors as one stacked (T, m, n) batch was
measured no faster on the CPU (torch calls LAPACK once per matrix either way: four 3072 × 768 SVDs
took 0.93 s one by one and 0.93 s batched on one thread) and would hold T of them at once, so each
is decomposed as it is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from mu.merge import chunks, stream, taskvec

StateDict = dict[str, torch.Tensor]
TaskVector = Callable[[int], torch.Tensor]  # t -> τ'_t = T·w_t·(θ_t − θ_base) of one matrix (float32, on the device)


is_matrix = stream.is_matrix  # which tensors are merged through their SVD (module docstring)


def _svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD. A wide matrix (fewer rows than columns) is decomposed as its transpose, A = U S Vᵀ from
    Aᵀ = V S Uᵀ: on the CPU a 768 × 3072 float32 SVD took 0.96 s, its (3072 × 768) transpose 0.34 s; the
    factors agree to float32 rounding. A matrix LAPACK's float32 divide-and-conquer does not converge on
    (rank-deficient, with many repeated singular values: Iso-CTS's residuals once the common subspace is
    projected out) is decomposed again in float64 and rounded back."""
    if a.shape[-2] < a.shape[-1]:
        v, s, uh = _svd(a.mT)
        return uh.mT, s, v.mT
    try:
        return torch.linalg.svd(a, full_matrices=False)
    except torch.linalg.LinAlgError:
        u, s, vh = torch.linalg.svd(a.double(), full_matrices=False)
        return u.to(a.dtype), s.to(a.dtype), vh.to(a.dtype)


def _polar(a: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (or rows) to ``a``: P Qᵀ of a = P S Qᵀ (Procrustes)."""
    p, _, qh = _svd(a)
    return p @ qh


def _tsv(task: TaskVector, n_tasks: int, shape: tuple[int, int], dev: torch.device) -> torch.Tensor:
    m, n = shape
    r = min(m, n)
    k = r // n_tasks
    if k == 0:  # more sources than singular values: every source keeps nothing (the authors' code too)
        return torch.zeros(shape, device=dev)
    u_cat = s_cat = v_cat = None
    for t in range(n_tasks):
        u, s, vh = _svd(task(t))
        if u_cat is None:
            u_cat, s_cat, v_cat = u.new_zeros(m, r), s.new_zeros(r), vh.new_zeros(r, n)
        u_cat[:, t * k : (t + 1) * k], s_cat[t * k : (t + 1) * k], v_cat[t * k : (t + 1) * k] = u[:, :k], s[:k], vh[:k]
        del u, s, vh
    return _polar(u_cat).mul_(s_cat) @ _polar(v_cat)


def _summed(task: TaskVector, n_tasks: int) -> torch.Tensor:
    total = task(0)
    for t in range(1, n_tasks):
        total.add_(task(t))
    return total


def _iso_c(task: TaskVector, n_tasks: int, shape: tuple[int, int], dev: torch.device) -> torch.Tensor:
    u, s, vh = _svd(_summed(task, n_tasks))
    return u.mul_(s.mean()) @ vh


def cts_split(r: int, n_tasks: int, common_fraction: float) -> tuple[int, int]:
    """(common directions k_c, directions per source k_t) of Iso-CTS for r = min(m, n), as the authors'
    code: k_c = int(r · fraction), then the task-specific total rounded to a multiple of T."""
    common = int(r * common_fraction)
    specific = round((r - common) / n_tasks) * n_tasks
    common = r - specific
    return common, specific // n_tasks


def _iso_cts(
    task: TaskVector, n_tasks: int, shape: tuple[int, int], dev: torch.device, *, common_fraction: float
) -> torch.Tensor:
    m, n = shape
    r = min(m, n)
    common, per_task = cts_split(r, n_tasks, common_fraction)
    u, s, vh = _svd(_summed(task, n_tasks))
    u_cat, s_cat, v_cat = u.new_zeros(m, r), s.new_zeros(r), vh.new_zeros(r, n)
    u_c = u[:, :common].contiguous()
    at = n_tasks * per_task
    u_cat[:, at : at + common], s_cat[at : at + common], v_cat[at : at + common] = u_c, s[:common], vh[:common]
    del u, s, vh
    if per_task:
        for t in range(n_tasks):
            tau = task(t)
            tau.sub_(u_c @ (u_c.T @ tau))  # the common subspace projected out
            ut, st, vt = _svd(tau)
            block = slice(t * per_task, (t + 1) * per_task)
            u_cat[:, block], s_cat[block], v_cat[block] = ut[:, :per_task], st[:per_task], vt[:per_task]
            del tau, ut, st, vt
    return _polar(u_cat).mul_(s_cat.mean()) @ _polar(v_cat)


def setup(
    names: list[str], w: list[float], base: Any, *, lambda_: float = 1.0, common_fraction: float = 0.8, **_: Any
) -> dict[str, Any]:
    """The checks of a spectral merge, each task vector's scale T·w_t, the weights of the other tensors' mean."""
    if base is None:
        raise ValueError("the spectral methods merge task vectors: they need the base (pretrained) state dict")
    if not isinstance(lambda_, (int, float)) or isinstance(lambda_, bool) or not math.isfinite(lambda_):
        raise ValueError(f"lambda_ must be a finite number, got {lambda_!r}")
    if not isinstance(common_fraction, (int, float)) or not 0.0 <= common_fraction <= 1.0:
        raise ValueError(f"common_fraction must be in [0, 1], got {common_fraction!r}")
    total = float(sum(w))
    scale = [len(w) * x / total for x in w]  # T·w_t: 1 each with equal weights
    return {**taskvec.setup(names, w, base), "scale": scale}


def _apply(
    matrix: Callable[..., torch.Tensor],
    xs: stream.Sources | torch.Tensor,
    b: torch.Tensor,
    *,
    scale: list[float],
    w32: list[float],
    divisor: float,
    lambda_: float = 1.0,
    **kw: Any,
) -> torch.Tensor:
    """θ_base + λ·Δ: ``matrix`` gives Δ of an SVD-merged matrix (``xs``: its sources, read whole one at a
    time) from the scaled task vectors; a chunk of any other tensor is the weighted mean of the task vectors."""
    if not isinstance(xs, stream.Sources):
        return taskvec.mean(xs, b, w32, divisor, lambda_)

    def task(t: int) -> torch.Tensor:
        return xs[t].sub_(b).mul_(scale[t])

    with chunks.compute_threads(b.device, b.numel()):
        delta = matrix(task, len(xs), tuple(b.shape), b.device, **kw)
    return b.add_(delta, alpha=lambda_)


def tsv_m(xs: stream.Sources | torch.Tensor, b: torch.Tensor, w: list[float], **knobs: Any) -> torch.Tensor:
    """TSV-M: per weight matrix, each task vector's top ⌊r/T⌋ singular components, concatenated,
    U and V orthogonalised (Procrustes), Δ = U⊥ Σ V⊥ᵀ; θ = θ_base + λ·Δ (module docstring)."""
    knobs.pop("common_fraction", None)
    return _apply(_tsv, xs, b, **_only(knobs))


def iso_c(xs: stream.Sources | torch.Tensor, b: torch.Tensor, w: list[float], **knobs: Any) -> torch.Tensor:
    """Iso-C: per weight matrix, Σ_t τ_t = U S Vᵀ → Δ = mean(S) · U Vᵀ; θ = θ_base + λ·Δ (module docstring)."""
    return _apply(_iso_c, xs, b, **_only(knobs))


def iso_cts(
    xs: stream.Sources | torch.Tensor, b: torch.Tensor, w: list[float], *, common_fraction: float = 0.8, **knobs: Any
) -> torch.Tensor:
    """Iso-CTS: common subspace (``common_fraction`` of the directions, from Σ_t τ_t) plus task-specific
    directions of each τ_t outside it, orthogonalised, flat spectrum; θ = θ_base + λ·Δ (module docstring)."""
    return _apply(_iso_cts, xs, b, common_fraction=common_fraction, **_only(knobs))


def _only(knobs: dict[str, Any]) -> dict[str, Any]:
    """The arguments ``_apply`` takes of what the loop passes."""
    return {k: knobs[k] for k in ("scale", "w32", "divisor", "lambda_") if k in knobs}
