"""``model_stock``, ``multislerp``, ``slerp``, ``karcher`` and ``nuslerp`` computed by ``mu`` chunk by chunk (as
mergekit 0.1.5 defines them).

All need whole-tensor statistics first (norms, dot products of task vectors),
then combine the inputs: ``prepare`` gathers the statistics in a pass over the row chunks that
``mu.merge.stream`` reads, ``apply`` merges each chunk. Scratch: N chunks and an N × N matrix, never N
copies of a tensor (mergekit stacks them: N = 10 xlm-roberta-base sources
needed more than (N + 2) × the model).

* ``model_stock`` (filter_wise=False): cos θ = mean over source pairs of the
  cosine between task vectors δ_i = θ_i − θ_base; t = N cos θ / (1 + (N − 1) cos θ)
  (t = 0 where the denominator vanishes); θ = t · mean_i θ_i + (1 − t) θ_base.
  With ``filter_wise`` the same per output row (rows are never split by a chunk).
* ``multislerp``: x_i = θ_i − θ_base (θ_i without a base), u_i = x_i / (|x_i| + ε),
  M = Σ w_i u_i (weights normalised); θ = θ_base + (Σ w_i |x_i|) · M / |M|.
  mergekit also adds a tangent-space term Σ w_i (u_i − (u_i·M̂) M̂) = M − |M| M̂,
  which is identically zero; it differs from zero only by float rounding. With
  |M| < ε: the weighted mean of two sources, an error for more (as mergekit).
* ``slerp``: exactly two sources a (the first in the weights' order, mergekit's
  ``base``) and b, t = b's weight (weights normalised); the whole tensor is one
  vector (mergekit's output axis holds one tensor). |a|, |b| (each replaced by 1
  when ≤ ε), cos Ω = clamp((a / |a|)·(b / |b|), −1, 1); θ = sin((1 − t) Ω) / sin Ω · a
  + sin(t Ω) / sin Ω · b, or (1 − t) a + t b when |cos Ω| > 0.9995 (near-colinear or
  antipodal). mergekit gets the norms and the dot in float32 over 1M-element
  chunks (two passes); here one pass takes per-row dot products (float32; a row is
  never split by a chunk) and adds the rows in float64 in one fixed order, so the
  result does not depend on the chunk size (bit for bit). (Per-row float64 products
  cost ~12 ms per 1M-element chunk on this CPU, float32 ``vecdot`` 0.5 ms.)
* ``karcher``: the weighted Karcher (Fréchet) mean of the unit vectors u_i = θ_i / |θ_i| on the
  sphere (mergekit's fixed-point iteration: start at the normalised weighted mean, step along
  Σ α_i θ_i / sin θ_i (u_i − cos θ_i · m), at most ``max_iter`` steps, stop below ``tol``), scaled
  by Σ α_i |θ_i|; α = the weights (mergekit's ``karcher`` uses equal weights). Every iterate lies
  in the span of the u_i, so the iteration runs on N coefficients with the Gram matrix of the
  sources (one pass, float64, on the free cores: ``chunks.compute_threads``) and a second pass writes the
  combination: scratch N chunks (and their float64 copy in the first pass) and N × N.
* ``nuslerp``: exactly two sources (task vectors around ``base`` when given), t = the second's
  weight: slerp of the whole tensor (``flatten``, mergekit's default), of each row (along the
  last dim), or of each column (``row_wise``); norms clamped at 1e-7, linear where
  1 − cos² ≤ 1e-16. A first pass sums |a|², |b|², a·b per vector (float64: 24 bytes per vector),
  the second writes the result.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mu.merge import chunks, stream

StateDict = dict[str, torch.Tensor]
EPS = 1e-8  # mergekit multislerp's and slerp's eps
DOT_THRESHOLD = 0.9995  # mergekit slerp's: above it (|cos Ω|) interpolate linearly


def model_stock_setup(names: list[str], w: list[float], base: Any, **_: Any) -> dict[str, Any]:
    if base is None:
        raise ValueError("model_stock needs the base (pretrained) state dict")
    if len(names) < 2:
        raise ValueError(f"model_stock needs at least 2 sources, got {names}")
    return {}


def model_stock_prepare(t: stream.Tensor, w: list[float], *, filter_wise: bool = False, **_: Any) -> dict[str, Any]:
    """Model Stock's ratio t per tensor (per row when ``filter_wise``) from the task vectors' dot products."""
    shape, n, dev = t.shape, t.n, t.device
    rows = shape[0] if filter_wise and len(shape) > 1 else 1
    row_len = math.prod(shape[1:]) if rows > 1 else max(math.prod(shape), 1)
    gram = torch.zeros(rows, n, n, dtype=torch.float64, device=dev)
    for at, d, b in t.chunks():  # dot products of the task vectors (per row when filter_wise)
        d.sub_(b)
        with chunks.compute_threads(dev, n * n * b.numel()):  # N² dot products of m entries
            if rows > 1:
                d = d.view(n, -1, row_len).transpose(0, 1)  # [rows of this chunk, n, row_len]
                gram[at.rows] += torch.bmm(d, d.transpose(1, 2)).double()
            else:
                gram[0] += (d @ d.T).double()
    norms = gram.diagonal(dim1=1, dim2=2).sqrt()
    i, j = torch.triu_indices(n, n, 1, device=dev)
    cos = (gram[:, i, j] / (norms[:, i] * norms[:, j]).clamp(min=1e-6)).clamp(-1, 1).mean(1)
    den = 1 + (n - 1) * cos
    ratio = torch.where(
        den.abs() < 1e-6, torch.zeros_like(cos), n * cos / torch.where(den.abs() < 1e-6, torch.ones_like(den), den)
    ).float()
    return {"ratio": ratio, "row_len": row_len if rows > 1 else None}


def model_stock(
    xs: torch.Tensor,
    b: torch.Tensor,
    w: list[float],
    *,
    at: stream.At,
    ratio: torch.Tensor,
    row_len: int | None,
    **_: Any,
) -> torch.Tensor:
    """Model Stock (needs base and >= 2 sources; the weights are not used): t · mean θ_i + (1 − t) θ_base."""
    avg = xs[0]
    for x in xs[1:]:
        avg.add_(x)
    avg.div_(len(xs))
    if row_len is not None:
        tt = ratio[at.rows].repeat_interleave(row_len)
        return avg.mul_(tt).add_(b.mul_(1 - tt))
    return avg.mul_(float(ratio[0])).add_(b.mul_(1 - float(ratio[0])))


def multislerp_prepare(t: stream.Tensor, w: list[float], **_: Any) -> dict[str, Any]:
    """|x_i| and |M| of one tensor (two passes), and how ``multislerp`` combines its chunks."""
    if t.n == 1:
        return {"scale": None, "norms": None, "linear": False}
    total = float(sum(w))
    wn = [x / total for x in w]
    sq = torch.zeros(t.n, dtype=torch.float64, device=t.device)
    for _, xs, b in t.chunks():  # pass 1: |x_i|
        if b is not None:
            xs.sub_(b)
        sq += torch.stack([x.double().square().sum() for x in xs])
    norms = sq.sqrt().float()
    m_sq = 0.0
    for _, xs, b in t.chunks():  # pass 2: |M|, M = Σ w_i x_i / (|x_i| + eps)
        m_sq += float(_barycentre(xs.sub_(b) if b is not None else xs, wn, norms).double().square().sum())
    m_norm = math.sqrt(m_sq)
    if m_norm < EPS:
        if t.n != 2:
            raise ValueError(
                f"multislerp: the weighted sum of the inputs of {t.key} is zero (antipodal "
                "inputs whose weights balance out); use other weights"
            )
        return {"scale": None, "norms": norms, "linear": True}
    return {"scale": float(torch.dot(torch.tensor(wn), norms.cpu())) / m_norm, "norms": norms, "linear": False}


def _barycentre(xs: torch.Tensor, wn: list[float], norms: torch.Tensor) -> torch.Tensor:
    acc = xs[0].mul_(wn[0] / (float(norms[0]) + EPS))
    for i, x in enumerate(xs[1:], 1):
        acc.add_(x, alpha=wn[i] / (float(norms[i]) + EPS))
    return acc


def multislerp(
    xs: torch.Tensor,
    b: torch.Tensor | None,
    w: list[float],
    *,
    scale: float | None,
    norms: torch.Tensor | None,
    linear: bool,
    **_: Any,
) -> torch.Tensor:
    """Barycentric interpolation on the hypersphere (around ``base`` when given): θ_base + s · M (module docstring)."""
    if norms is None:  # one source: itself
        return xs[0]
    total = float(sum(w))
    wn = [x / total for x in w]
    if b is not None:
        xs.sub_(b)
    y = xs[0].mul_(wn[0]).add_(xs[1], alpha=wn[1]) if linear else _barycentre(xs, wn, norms).mul_(scale)
    return y.add_(b) if b is not None else y


def pair_setup(names: list[str], w: list[float], base: Any, *, method: str = "", **_: Any) -> dict[str, Any]:
    """t = the second's normalised weight, of a method that merges exactly two sources."""
    if len(names) != 2:
        instead = "multislerp" if method == "slerp" else "multislerp or karcher"
        raise ValueError(f"{method} merges exactly 2 sources, got {len(names)}: {names}; use {instead} for more")
    return {"frac": float(w[1]) / (float(w[0]) + float(w[1]))}


def slerp_prepare(t: stream.Tensor, w: list[float], *, frac: float, **_: Any) -> dict[str, Any]:
    """The norms and the dot product of the two sources (per row in float32, summed in float64), and
    slerp's coefficients (ca, cb)."""
    shape = t.shape
    rows = shape[0] if shape else 1
    row_len = math.prod(shape[1:]) if shape else 1
    part = torch.zeros(3, rows, dtype=torch.float64, device=t.device)  # per row: a·a, b·b, a·b
    for at, xs, _ in t.chunks(base=False):
        a, b = (x.view(-1, row_len) for x in xs)
        for i, (x, y) in enumerate(((a, a), (b, b), (a, b))):  # float32 within a row, as mergekit
            part[i, at.rows] = torch.linalg.vecdot(x, y, dim=1)
    aa, bb, ab = (float(v) for v in part.sum(1))
    na, nb = math.sqrt(aa), math.sqrt(bb)
    na, nb = (na if na > EPS else 1.0), (nb if nb > EPS else 1.0)
    dot = min(max(ab / (na * nb), -1.0), 1.0)
    if abs(dot) > DOT_THRESHOLD:
        return {"ca": 1 - frac, "cb": frac}
    omega = math.acos(dot)
    return {"ca": math.sin((1 - frac) * omega) / math.sin(omega), "cb": math.sin(frac * omega) / math.sin(omega)}


def slerp(xs: torch.Tensor, b: torch.Tensor | None, w: list[float], *, ca: float, cb: float, **_: Any) -> torch.Tensor:
    """Spherical interpolation from the first source to the second, ``t`` = the second's (normalised) weight."""
    return xs[0].mul_(ca).add_(xs[1], alpha=cb)


def karcher_setup(
    names: list[str], w: list[float], base: Any, *, max_iter: int = 10, tol: float = 1e-5, **_: Any
) -> dict[str, Any]:
    if not (isinstance(max_iter, int) and max_iter >= 0) or not tol > 0:
        raise ValueError(f"karcher: max_iter must be an int >= 0 and tol > 0, got {max_iter!r}, {tol!r}")
    total = float(sum(w))
    return {"alphas": torch.tensor([x / total for x in w], dtype=torch.float64)}


def karcher_prepare(
    t: stream.Tensor, w: list[float], *, alphas: torch.Tensor, max_iter: int = 10, tol: float = 1e-5, **_: Any
) -> dict[str, Any]:
    """The Gram matrix of the sources (float64, on the free cores), and the Karcher mean's coefficients."""
    if t.n == 1:
        return {"coef": None}
    n = t.n
    block64 = torch.empty(n * t.size, dtype=torch.float64, device=t.device)
    gram = torch.zeros(n, n, dtype=torch.float64, device=t.device)
    for _, xs, _ in t.chunks(base=False):  # θ_i · θ_j, in float64
        m = xs.shape[1]
        x = block64[: n * m].view(n, m).copy_(xs)
        with chunks.compute_threads(t.device, n * n * m):  # N² dot products of m entries: compute-bound
            gram += x @ x.T
    return {"coef": _karcher_coefficients(gram.cpu(), alphas, max_iter, tol)}


def karcher(xs: torch.Tensor, b: torch.Tensor | None, w: list[float], *, coef: torch.Tensor | None, **_: Any):
    """Weighted Karcher mean on the hypersphere, rescaled by the weighted mean norm: Σ_j c_j θ_j (the base is
    not used)."""
    if coef is None:  # one source: itself
        return xs[0]
    acc = xs[0].mul_(float(coef[0]))
    for c, x in zip(coef[1:].tolist(), xs[1:]):
        acc.add_(x, alpha=c)
    return acc


def _karcher_coefficients(gram: torch.Tensor, alphas: torch.Tensor, max_iter: int, tol: float) -> torch.Tensor:
    """c with Σ_j c_j θ_j = mergekit's ``karcher_merge_tensors(θ, α)``: its iteration on the coefficients β of
    the mean m = Σ_j β_j u_j in the basis of the unit vectors u_j (Gram matrix U of the u_j)."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    valid = torch.nonzero(norms > tol).squeeze(1)
    coef = torch.zeros_like(alphas)
    if valid.numel() == 0:
        return coef
    nv = norms[valid]
    units = gram[valid][:, valid] / torch.outer(nv, nv)
    a = alphas[valid] / alphas[valid].sum()

    def norm(v: torch.Tensor) -> float:
        return math.sqrt(max(float(v @ units @ v), 0.0))

    beta = a.clone()
    mean_norm = norm(beta)
    beta = torch.eye(len(valid), dtype=beta.dtype)[0] if mean_norm < tol else beta / mean_norm
    for _ in range(max_iter):
        dots = (units @ beta).clamp(-1.0, 1.0)
        theta = torch.arccos(dots)
        c = torch.where(theta < tol, torch.zeros_like(theta), a * theta / torch.sin(theta))
        tangent = c - float(c @ dots) * beta  # Σ c_i (u_i − (m·u_i) m)
        t_norm = norm(tangent)
        if t_norm < tol:
            break
        beta = math.cos(t_norm) * beta + math.sin(t_norm) * tangent / t_norm
        unit_norm = norm(beta)
        if unit_norm > tol:
            beta = beta / unit_norm
    scale = float(alphas @ norms)
    coef[valid] = scale * beta / nv
    return coef


def nuslerp_prepare(
    t: stream.Tensor, w: list[float], *, frac: float, flatten: bool = True, row_wise: bool = False, **_: Any
) -> dict[str, Any]:
    """Per vector (the tensor, its rows or its columns) a·a, b·b, a·b summed over the chunks (float64), and
    nuslerp's coefficients."""
    shape = t.shape
    # vectors: (groups in a chunk, vector length) views; stats per vector, accumulated over chunks
    mode = "flat" if flatten or len(shape) < 2 else ("col" if row_wise else "row")
    inner = math.prod(shape[1:]) if shape else 1
    count = {"flat": 1, "col": inner, "row": math.prod(shape[:-1])}[mode]
    stats = torch.zeros(3, count, dtype=torch.float64, device=t.device)  # per vector: a·a, b·b, a·b
    for at, xs, c in t.chunks():
        if c is not None:
            xs.sub_(c)
        (ga, where), (gb, _) = _groups(xs[0], at, mode, inner), _groups(xs[1], at, mode, inner)
        ga, gb = ga.double(), gb.double()
        for i, (x, y) in enumerate(((ga, ga), (gb, gb), (ga, gb))):
            stats[i, where] += torch.linalg.vecdot(x, y, dim=1)
    ca, cb = _nuslerp_coefficients(stats, frac)
    return {"ca": ca, "cb": cb, "mode": mode, "inner": inner}


def _groups(x: torch.Tensor, at: stream.At, mode: str, inner: int) -> tuple[torch.Tensor, slice]:
    if mode == "flat":
        return x.view(1, -1), slice(0, 1)
    if mode == "col":
        return x.view(-1, inner).T, slice(0, inner)
    rows = x.numel() // at.shape[-1]
    first_row = at.span[0] * (inner // at.shape[-1])
    return x.view(rows, at.shape[-1]), slice(first_row, first_row + rows)


def nuslerp(
    xs: torch.Tensor,
    c: torch.Tensor | None,
    w: list[float],
    *,
    at: stream.At,
    ca: torch.Tensor,
    cb: torch.Tensor,
    mode: str,
    inner: int,
    **_: Any,
) -> torch.Tensor:
    """mergekit's ``nuslerp``: ca · a + cb · b per vector (of the task vectors around the base ``c`` when
    given, added back), t = the second's weight (``flatten``: the tensor; else rows, or columns: ``row_wise``)."""
    if c is not None:
        xs.sub_(c)
    a = xs[0]
    (ga, where), (gb, _) = _groups(a, at, mode, inner), _groups(xs[1], at, mode, inner)
    ga.mul_(ca[where].unsqueeze(1)).add_(gb.mul_(cb[where].unsqueeze(1)))
    return a.add_(c) if c is not None else a


def _nuslerp_coefficients(stats: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per vector, (ca, cb) with ca · a + cb · b = mergekit's ``nuslerp(t, a, b)`` (float32 coefficients)."""
    na, nb = (stats[i].clamp_min(0).sqrt().clamp_min(1e-7) for i in (0, 1))
    cos = (stats[2] / (na * nb)).clamp(-1, 1)
    colinear = (1 - cos.square()) <= EPS**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    sin = torch.where(colinear, torch.ones_like(theta), torch.sin(theta))
    ca = torch.where(colinear, torch.full_like(cos, 1 - t), torch.sin((1 - t) * theta) / sin)
    cb = torch.where(colinear, torch.full_like(cos, t), torch.sin(t * theta) / sin)
    return ca.float(), cb.float()
