"""``model_stock``, ``multislerp``, ``slerp``, ``karcher`` and ``nuslerp`` computed by ``mu`` chunk by chunk (as
mergekit 0.1.5 defines them).

All need whole-tensor statistics first (norms, dot products of task vectors),
then combine the inputs: a first pass over row chunks gathers the statistics, a
second writes the output. Scratch: N chunks and an N × N matrix, never N
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
from collections.abc import Mapping

import torch

from mu.merge import chunks

StateDict = dict[str, torch.Tensor]
EPS = 1e-8  # mergekit multislerp's and slerp's eps
DOT_THRESHOLD = 0.9995  # mergekit slerp's: above it (|cos Ω|) interpolate linearly


def _sources(
    state_dicts: Mapping[str, StateDict], key: str, span: chunks.Span, dev: torch.device, bufs: list[torch.Tensor]
) -> list[torch.Tensor]:
    return [chunks.read(sd, key, span, dev, out=buf) for sd, buf in zip(state_dicts.values(), bufs)]


def _block(
    state_dicts: Mapping[str, StateDict], key: str, span: chunks.Span, dev: torch.device, block: torch.Tensor, m: int
) -> torch.Tensor:
    """The sources' chunks (``m`` elements each) read straight into the rows of one (N, m) view of ``block``:
    what ``torch.stack`` of the chunks would give, without its copy."""
    x = block[: len(state_dicts) * m].view(len(state_dicts), m)
    for i, sd in enumerate(state_dicts.values()):
        chunks.read(sd, key, span, dev, out=x[i])
    return x


def _setup(state_dicts: Mapping[str, StateDict], key: str, step: int, dev: torch.device, extra: int = 0):
    first = next(iter(state_dicts.values()))
    shape, dtype = chunks.shape_dtype(first, key)
    spans = chunks.spans(shape, step)
    size = chunks.flat(shape, spans[0]).stop
    bufs = [torch.empty(size, device=dev) for _ in range(len(state_dicts) + extra)]
    return shape, dtype, spans, bufs


@torch.no_grad()
def model_stock(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    filter_wise: bool = False,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """Model Stock (needs base and >= 2 sources; the weights are not used)."""
    if base is None:
        raise ValueError("model_stock needs the base (pretrained) state dict")
    if len(state_dicts) < 2:
        raise ValueError(f"model_stock needs at least 2 sources, got {list(state_dicts)}")
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    n = len(state_dicts)
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in base:
            shape, dtype, spans, bufs = _setup(state_dicts, key, step, dev, extra=1)
            rows = shape[0] if filter_wise and len(shape) > 1 else 1
            row_len = math.prod(shape[1:]) if rows > 1 else max(math.prod(shape), 1)
            gram = torch.zeros(rows, n, n, dtype=torch.float64, device=dev)
            block = torch.empty(n * bufs[-1].numel(), device=dev)
            for span in spans:  # pass 1: dot products of the task vectors (per row when filter_wise)
                b = chunks.read(base, key, span, dev, out=bufs[-1])
                d = _block(state_dicts, key, span, dev, block, b.numel()).sub_(b)
                with chunks.compute_threads(dev, n * n * b.numel()):  # N² dot products of m entries
                    if rows > 1:
                        d = d.view(n, -1, row_len).transpose(0, 1)  # [rows of this chunk, n, row_len]
                        gram[span[0] : span[1]] += torch.bmm(d, d.transpose(1, 2)).double()
                    else:
                        gram[0] += (d @ d.T).double()
            norms = gram.diagonal(dim1=1, dim2=2).sqrt()
            i, j = torch.triu_indices(n, n, 1, device=dev)
            cos = (gram[:, i, j] / (norms[:, i] * norms[:, j]).clamp(min=1e-6)).clamp(-1, 1).mean(1)
            den = 1 + (n - 1) * cos
            t = torch.where(
                den.abs() < 1e-6,
                torch.zeros_like(cos),
                n * cos / torch.where(den.abs() < 1e-6, torch.ones_like(den), den),
            ).float()
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # pass 2: t · mean θ_i + (1 - t) θ_base
                where = chunks.flat(shape, span)
                b = chunks.read(base, key, span, dev, out=bufs[-1])
                xs = _sources(state_dicts, key, span, dev, bufs)
                avg = xs[0]
                for x in xs[1:]:
                    avg.add_(x)
                avg.div_(n)
                if rows > 1:
                    tt = t[span[0] : span[1]].repeat_interleave(row_len)
                    dst[where] = avg.mul_(tt).add_(b.mul_(1 - tt))
                else:
                    dst[where] = avg.mul_(float(t[0])).add_(b.mul_(1 - float(t[0])))
            out[key] = res
    return out


@torch.no_grad()
def multislerp(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """Barycentric interpolation on the hypersphere (around ``base`` when given)."""
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    names = list(state_dicts)
    total = float(sum(weights[k] for k in names))
    w = [float(weights[k]) / total for k in names]
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in next(iter(state_dicts.values())):
            shape, dtype, spans, bufs = _setup(state_dicts, key, step, dev, extra=1)

            def inputs(span: chunks.Span) -> tuple[list[torch.Tensor], torch.Tensor | None]:
                xs = _sources(state_dicts, key, span, dev, bufs)
                b = chunks.read(base, key, span, dev, out=bufs[-1]) if base is not None else None
                return ([x.sub_(b) for x in xs] if b is not None else xs), b

            if len(names) == 1:
                out[key] = next(iter(state_dicts.values()))[key].clone()
                continue
            sq = torch.zeros(len(names), dtype=torch.float64, device=dev)
            for span in spans:  # pass 1: |x_i|
                xs, _ = inputs(span)
                sq += torch.stack([x.double().square().sum() for x in xs])
            norms = sq.sqrt().float()
            res32 = torch.empty(math.prod(shape), dtype=torch.float32)
            m_sq = 0.0
            for span in spans:  # pass 2: M = Σ w_i x_i / (|x_i| + eps), and |M|
                where = chunks.flat(shape, span)
                xs, _ = inputs(span)
                acc = xs[0].mul_(w[0] / (float(norms[0]) + EPS))
                for i, x in enumerate(xs[1:], 1):
                    acc.add_(x, alpha=w[i] / (float(norms[i]) + EPS))
                m_sq += float(acc.double().square().sum())
                res32[where] = acc
            m_norm = math.sqrt(m_sq)
            if m_norm < EPS:
                if len(names) != 2:
                    raise ValueError(
                        f"multislerp: the weighted sum of the inputs of {key} is zero (antipodal "
                        "inputs whose weights balance out); use other weights"
                    )
                scale, linear = None, True
            else:
                scale, linear = float(torch.dot(torch.tensor(w), norms.cpu())) / m_norm, False
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # pass 3: rescale (or the two-source linear fallback), add the base back
                where = chunks.flat(shape, span)
                if linear:
                    xs, b = inputs(span)
                    y = xs[0].mul_(w[0]).add_(xs[1], alpha=w[1])
                else:
                    y = res32[where].to(dev).mul_(scale)
                    b = chunks.read(base, key, span, dev, out=bufs[-1]) if base is not None else None
                dst[where] = y.add_(b) if b is not None else y
            out[key] = res
    return out


def _two(
    state_dicts: Mapping[str, StateDict], weights: Mapping[str, float], method: str, instead: str
) -> tuple[str, str, float]:
    """(first, second, t = the second's normalised weight) of a method that merges exactly two sources."""
    if len(state_dicts) != 2:
        raise ValueError(
            f"{method} merges exactly 2 sources, got {len(state_dicts)}: {list(state_dicts)}; use {instead} for more"
        )
    first, second = list(state_dicts)
    return first, second, float(weights[second]) / (float(weights[first]) + float(weights[second]))


@torch.no_grad()
def slerp(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """Spherical interpolation from the first source to the second, ``t`` = the second's (normalised) weight."""
    first, second, t = _two(state_dicts, weights, "slerp", "multislerp")
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in state_dicts[first]:
            shape, dtype, spans, bufs = _setup(state_dicts, key, step, dev)
            rows = shape[0] if shape else 1
            row_len = math.prod(shape[1:]) if shape else 1
            if rows * row_len == 0:
                out[key] = torch.empty(shape, dtype=dtype)
                continue
            part = torch.zeros(3, rows, dtype=torch.float64, device=dev)  # per row: a·a, b·b, a·b
            for span in spans:  # pass 1: the norms and the dot product
                a, b = (x.view(-1, row_len) for x in _sources(state_dicts, key, span, dev, bufs))
                r = slice(*span) if span is not None else slice(0, 1)
                for i, (x, y) in enumerate(((a, a), (b, b), (a, b))):  # float32 within a row, as mergekit
                    part[i, r] = torch.linalg.vecdot(x, y, dim=1)
            aa, bb, ab = (float(v) for v in part.sum(1))
            na, nb = math.sqrt(aa), math.sqrt(bb)
            na, nb = (na if na > EPS else 1.0), (nb if nb > EPS else 1.0)
            dot = min(max(ab / (na * nb), -1.0), 1.0)
            if abs(dot) > DOT_THRESHOLD:
                ca, cb = 1 - t, t
            else:
                omega = math.acos(dot)
                ca, cb = math.sin((1 - t) * omega) / math.sin(omega), math.sin(t * omega) / math.sin(omega)
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # pass 2: ca · a + cb · b
                a, b = _sources(state_dicts, key, span, dev, bufs)
                dst[chunks.flat(shape, span)] = a.mul_(ca).add_(b, alpha=cb)
            out[key] = res
    return out


@torch.no_grad()
def karcher(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    max_iter: int = 10,
    tol: float = 1e-5,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """Weighted Karcher mean on the hypersphere, rescaled by the weighted mean norm (the base is not used)."""
    if not (isinstance(max_iter, int) and max_iter >= 0) or not tol > 0:
        raise ValueError(f"karcher: max_iter must be an int >= 0 and tol > 0, got {max_iter!r}, {tol!r}")
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    total = float(sum(weights[k] for k in state_dicts))
    alphas = torch.tensor([float(weights[k]) / total for k in state_dicts], dtype=torch.float64)
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in next(iter(state_dicts.values())):
            if len(state_dicts) == 1:
                out[key] = next(iter(state_dicts.values()))[key].clone()
                continue
            shape, dtype = chunks.shape_dtype(next(iter(state_dicts.values())), key)
            spans = chunks.spans(shape, step)
            size, n = chunks.flat(shape, spans[0]).stop, len(alphas)
            block = torch.empty(n * size, device=dev)  # the sources' chunks as rows, read in place
            block64 = torch.empty(n * size, dtype=torch.float64, device=dev)
            gram = torch.zeros(n, n, dtype=torch.float64, device=dev)
            for span in spans:  # pass 1: θ_i · θ_j, in float64
                m = chunks.flat(shape, span).stop - chunks.flat(shape, span).start
                x = block64[: n * m].view(n, m).copy_(_block(state_dicts, key, span, dev, block, m))
                with chunks.compute_threads(dev, n * n * m):  # N² dot products of m entries: compute-bound
                    gram += x @ x.T
            del block64
            coef = _karcher_coefficients(gram.cpu(), alphas, max_iter, tol)
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # pass 2: Σ_j c_j θ_j
                m = chunks.flat(shape, span).stop - chunks.flat(shape, span).start
                xs = list(_block(state_dicts, key, span, dev, block, m))
                acc = xs[0].mul_(float(coef[0]))
                for c, x in zip(coef[1:].tolist(), xs[1:]):
                    acc.add_(x, alpha=c)
                dst[chunks.flat(shape, span)] = acc
            out[key] = res
    return out


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


@torch.no_grad()
def nuslerp(
    state_dicts: Mapping[str, StateDict],
    weights: Mapping[str, float],
    base: StateDict | None = None,
    *,
    flatten: bool = True,
    row_wise: bool = False,
    device: str | torch.device | None = None,
    chunk_elements: int | None = None,
) -> StateDict:
    """mergekit's ``nuslerp``: spherical interpolation of two sources (of their task vectors around ``base``
    when given) with t = the second's weight, per tensor (``flatten``), per row, or per column (``row_wise``)."""
    first, second, t = _two(state_dicts, weights, "nuslerp", "multislerp or karcher")
    dev, step = chunks.device(device), chunks.check_chunk_elements(chunk_elements)
    out: StateDict = {}
    with chunks.single_threaded(dev):
        for key in state_dicts[first]:
            shape, dtype, spans, bufs = _setup(state_dicts, key, step, dev, extra=1)
            if math.prod(shape) == 0:
                out[key] = torch.empty(shape, dtype=dtype)
                continue
            # vectors: (groups in a chunk, vector length) views; stats per vector, accumulated over chunks
            mode = "flat" if flatten or len(shape) < 2 else ("col" if row_wise else "row")
            inner = math.prod(shape[1:]) if shape else 1
            count = {"flat": 1, "col": inner, "row": math.prod(shape[:-1])}[mode]

            def inputs(span: chunks.Span) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
                a, b = _sources(state_dicts, key, span, dev, bufs)
                c = chunks.read(base, key, span, dev, out=bufs[-1]) if base is not None else None
                return (a.sub_(c), b.sub_(c), c) if c is not None else (a, b, None)

            def groups(x: torch.Tensor, span: chunks.Span) -> tuple[torch.Tensor, slice]:
                if mode == "flat":
                    return x.view(1, -1), slice(0, 1)
                if mode == "col":
                    return x.view(-1, inner).T, slice(0, inner)
                rows = x.numel() // shape[-1]
                first_row = span[0] * (inner // shape[-1])
                return x.view(rows, shape[-1]), slice(first_row, first_row + rows)

            stats = torch.zeros(3, count, dtype=torch.float64, device=dev)  # per vector: a·a, b·b, a·b
            for span in spans:  # pass 1
                a, b, _ = inputs(span)
                (ga, where), (gb, _) = groups(a, span), groups(b, span)
                ga, gb = ga.double(), gb.double()
                for i, (x, y) in enumerate(((ga, ga), (gb, gb), (ga, gb))):
                    stats[i, where] += torch.linalg.vecdot(x, y, dim=1)
            ca, cb = _nuslerp_coefficients(stats, t)
            res = torch.empty(shape, dtype=dtype)
            dst = res.reshape(-1)
            for span in spans:  # pass 2: ca · a + cb · b per vector (+ the base)
                a, b, c = inputs(span)
                (ga, where), (gb, _) = groups(a, span), groups(b, span)
                ga.mul_(ca[where].unsqueeze(1)).add_(gb.mul_(cb[where].unsqueeze(1)))
                dst[chunks.flat(shape, span)] = a.add_(c) if c is not None else a
            out[key] = res
    return out


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
