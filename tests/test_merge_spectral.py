"""TSV-M, Iso-C, Iso-CTS (``mu.merge.spectral``) and WIDEN (``mu.merge.widen``): known cases, the
published loops transcribed (stacked, in memory, equal weights) as references, weights, shapes and
dtypes, lazy inputs, refusal of bad knobs, and ``nn.Linear`` modules (FusionBench style)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mu import merge as mm
from mu.merge import lazy, spectral, widen

SPECTRAL = ("tsv_m", "iso_c", "iso_cts")
EMB = "roberta.embeddings.word_embeddings.weight"


def _sds(n: int = 3, seed: int = 0, shape: tuple[int, int] = (12, 8)) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    base = {
        "w": torch.randn(*shape, generator=g),
        "b": torch.randn(shape[0], generator=g),
        EMB: torch.randn(10, shape[1], generator=g),
    }
    sds = {f"s{i}": {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()} for i in range(n)}
    return base, sds


def _taus(base: dict, sds: dict, key: str, w: dict | None = None) -> list[torch.Tensor]:
    """τ'_t = T·w_t·τ_t (equal weights: τ_t)."""
    w = w or {k: 1.0 / len(sds) for k in sds}
    return [len(sds) * w[k] * (sd[key] - base[key]) for k, sd in sds.items()]


# --- the authors' loops, transcribed (github.com/AntoSwan/task_singular_vectors, danielm1405/iso-merging) ---


def _ref_tsv(taus: list[torch.Tensor]) -> torch.Tensor:
    sv_reduction = 1 / len(taus)
    for i, vec in enumerate(taus):
        u, s, v = torch.linalg.svd(vec, full_matrices=False)
        if i == 0:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(v)
        k = int(s.shape[0] * sv_reduction)
        sum_u[:, i * k : (i + 1) * k] = u[:, :k]
        sum_s[i * k : (i + 1) * k] = s[:k]
        sum_v[i * k : (i + 1) * k, :] = v[:k, :]
    u_u, _, v_u = torch.linalg.svd(sum_u, full_matrices=False)
    u_v, _, v_v = torch.linalg.svd(sum_v, full_matrices=False)
    return torch.linalg.multi_dot((u_u, v_u, torch.diag(sum_s), u_v, v_v))


def _ref_iso_c(taus: list[torch.Tensor]) -> torch.Tensor:
    u, s, v = torch.linalg.svd(sum(taus), full_matrices=False)
    return torch.linalg.multi_dot((u, torch.diag(torch.ones_like(s) * s.mean()), v))


def _ref_iso_cts(taus: list[torch.Tensor], fraction: float) -> torch.Tensor:
    shape, n = taus[0].shape, len(taus)
    common = int(min(shape) * fraction)
    common = min(shape) - round((min(shape) - common) / n) * n
    u, s, v = torch.linalg.svd(sum(taus), full_matrices=False)
    cu, cs, cv = u[:, :common], s[:common], v[:common, :]
    per = int((min(shape) - common) / n)
    for i, w in enumerate(taus):
        u_ts, s_ts, v_ts = torch.linalg.svd(w - cu @ cu.T @ w, full_matrices=False)
        if i == 0:
            U, S, V = torch.zeros_like(u_ts), torch.zeros_like(s_ts), torch.zeros_like(v_ts)
        U[:, i * per : (i + 1) * per], S[i * per : (i + 1) * per], V[i * per : (i + 1) * per] = (
            u_ts[:, :per],
            s_ts[:per],
            v_ts[:per],
        )
    U[:, n * per : n * per + common], S[n * per : n * per + common], V[n * per : n * per + common] = cu, cs, cv
    uu, _, vu = torch.linalg.svd(U, full_matrices=False)
    uv, _, vv = torch.linalg.svd(V, full_matrices=False)
    return torch.linalg.multi_dot((uu @ vu, torch.diag(torch.ones_like(S) * S.mean()), uv @ vv))


REFERENCE = {"tsv_m": _ref_tsv, "iso_c": _ref_iso_c, "iso_cts": lambda taus: _ref_iso_cts(taus, 0.8)}


@pytest.mark.parametrize("method", SPECTRAL)
@pytest.mark.parametrize("weighted", [False, True])
def test_spectral_equal_the_authors_loops(method, weighted):
    """Equal weights: the published method; weights: the same loop on T·w_t·τ_t. Matrices through the SVD,
    biases and embeddings by the (weighted) mean task vector, all scaled by λ."""
    base, sds = _sds(3, seed=1)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2} if weighted else {k: 1 / 3 for k in sds}
    out = mm.merge(method, sds, w, base, lambda_=0.7, device="cpu")
    torch.testing.assert_close(
        out["w"], base["w"] + 0.7 * REFERENCE[method](_taus(base, sds, "w", w)), rtol=1e-5, atol=1e-5
    )
    for key in ("b", EMB):
        mean = sum(w[k] * (sd[key] - base[key]) for k, sd in sds.items())
        torch.testing.assert_close(out[key], base[key] + 0.7 * mean, rtol=1e-5, atol=1e-6)


def test_tsv_one_task_full_rank_is_base_plus_scaled_task_vector():
    base, sds = _sds(1, seed=2)
    out = mm.merge("tsv_m", sds, {"s0": 1.0}, base, lambda_=0.5)
    for key in base:
        torch.testing.assert_close(out[key], base[key] + 0.5 * (sds["s0"][key] - base[key]), rtol=1e-5, atol=1e-5)


def _orthogonal_tasks(n: int, shape=(12, 8), rank: int = 2, seed: int = 0) -> tuple[dict, dict, list]:
    """Task vectors whose left and right singular spaces are mutually orthogonal, each of rank ≤ ⌊r/T⌋."""
    g = torch.Generator().manual_seed(seed)
    qu, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=g))
    qv, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=g))
    taus = [
        qu[:, t * rank : (t + 1) * rank]
        @ torch.diag(torch.rand(rank, generator=g) + 0.5)
        @ qv[:, t * rank : (t + 1) * rank].T
        for t in range(n)
    ]
    base = {"w": torch.randn(*shape, generator=g)}
    return base, {f"s{t}": {"w": base["w"] + tau} for t, tau in enumerate(taus)}, taus


def test_tsv_of_non_interfering_task_vectors_is_their_sum_and_iso_c_flattens_it():
    base, sds, taus = _orthogonal_tasks(3)  # r = 8, k = 2 per task: nothing is truncated, nothing interferes
    w = {k: 1 / 3 for k in sds}
    tsv = mm.merge("tsv_m", sds, w, base)["w"] - base["w"]
    torch.testing.assert_close(tsv, sum(taus), rtol=1e-5, atol=1e-5)
    iso = mm.merge("iso_c", sds, w, base)["w"] - base["w"]
    s_sum = torch.linalg.svdvals(sum(taus))
    s_iso = torch.linalg.svdvals(iso)
    torch.testing.assert_close(s_iso, torch.full_like(s_iso, float(s_sum.mean())), rtol=1e-4, atol=1e-5)


def test_iso_c_spectrum_is_flat_with_the_sums_singular_directions():
    base, sds = _sds(4, seed=3)
    w = {k: 0.25 for k in sds}
    delta = (mm.merge("iso_c", sds, w, base, lambda_=2.0)["w"] - base["w"]) / 2.0
    total = sum(_taus(base, sds, "w"))
    s = torch.linalg.svdvals(delta)
    torch.testing.assert_close(s, torch.full_like(s, float(torch.linalg.svdvals(total).mean())), rtol=1e-4, atol=1e-5)
    u, _, vh = torch.linalg.svd(total, full_matrices=False)
    torch.testing.assert_close(delta, s.mean() * u @ vh, rtol=1e-4, atol=1e-5)


def test_iso_cts_split_and_its_extremes():
    assert spectral.cts_split(60, 5, 0.8) == (50, 2)  # 48 common, 12 left → 10 = 2 × 5, 50 common
    assert spectral.cts_split(8, 3, 0.8) == (5, 1) and spectral.cts_split(8, 5, 0.8) == (8, 0)
    assert spectral.cts_split(8, 2, 0.5) == (4, 2)
    base, sds = _sds(3, seed=4)
    w = {k: 1 / 3 for k in sds}
    all_common = mm.merge("iso_cts", sds, w, base, common_fraction=1.0)
    torch.testing.assert_close(all_common["w"], mm.merge("iso_c", sds, w, base)["w"], rtol=1e-5, atol=1e-5)
    half = mm.merge("iso_cts", sds, w, base, common_fraction=0.5)["w"] - base["w"]
    torch.testing.assert_close(half, _ref_iso_cts(_taus(base, sds, "w"), 0.5), rtol=1e-5, atol=1e-5)


def test_more_sources_than_singular_values():
    base, sds = _sds(5, seed=5, shape=(6, 4))  # r = 4 < T = 5: TSV keeps nothing of any source
    w = {k: 0.2 for k in sds}
    torch.testing.assert_close(mm.merge("tsv_m", sds, w, base)["w"], base["w"])
    out = mm.merge("iso_cts", sds, w, base)["w"]  # all directions common: Iso-C
    torch.testing.assert_close(out, mm.merge("iso_c", sds, w, base)["w"], rtol=1e-5, atol=1e-5)


# --- WIDEN: the authors' code, transcribed ---
# github.com/yule-BUAA/MergeLLM, model_merging_methods/merging_methods.py, MergingMethod.widen_merging and its
# nested helpers, commit 9178ef93846aa1df9a3a2c28886a346184edfa79. The repository states no licence, so its code
# is not copied: each helper below transcribes the one named in its comment operation by operation, on state
# dicts instead of nn.Modules (their module look-ups only assert Linear / Embedding), with the embeddings named
# by mu's rule (``widen.is_embedding``) instead of Llama's ``model.embed_tokens.weight``. The one addition is
# ``scale``: mu's per-source weights as T·w_t on the task vectors of the final sum (1 for equal weights: theirs).


def _authors_widen(base: dict, sds: dict, t: float = 1.0, s: float = 1.0, scale: list | None = None) -> dict:
    def transpose_embeddings(sd):  # transpose_token_embeddings
        return {k: v.transpose(0, 1) if widen.is_embedding(k) else v for k, v in sd.items()}

    def magnitude_direction(sd):  # compute_param_magnitude_direction: 1-D skipped, 2-D by columns
        mags, dirs = {}, {}
        for k, v in sd.items():
            if v.dim() == 1:
                continue
            assert v.dim() == 2
            mags[k] = torch.norm(v, p=2, dim=0)
            dirs[k] = v / mags[k]
        return mags, dirs

    def differences(pre_mag, pre_dir, ft_mag, ft_dir):  # compute_param_magnitude_direction_differences
        return (
            {k: torch.abs(ft_mag[k] - pre_mag[k]) for k in pre_mag},
            {k: 1.0 - torch.cosine_similarity(ft_dir[k], pre_dir[k], dim=0) for k in pre_mag},
        )

    def rank_within_model(diff):  # rank_per_param_magnitude_or_direction_within_model
        order = torch.argsort(diff, dim=1, descending=False, stable=True)
        ranks = (torch.arange(diff.shape[1]) / diff.shape[1]).repeat(diff.shape[0]).reshape(diff.shape)
        return torch.scatter(input=torch.zeros(ranks.shape), dim=1, index=order, src=ranks)

    def importance_scores(sig):  # compute_importance_scores
        out = torch.softmax(sig, dim=0)
        out[sig > torch.mean(sig, dim=1, keepdim=True) * t] = s
        return out

    scale = scale or [1.0] * len(sds)
    pre = transpose_embeddings(base)
    fts = [transpose_embeddings(sd) for sd in sds.values()]
    taus = [{k: ft[k] - pre[k] for k in pre} for ft in fts]  # TaskVector, transposed as the others
    pre_mag, pre_dir = magnitude_direction(pre)
    diffs = [differences(pre_mag, pre_dir, *magnitude_direction(ft)) for ft in fts]
    merged = {}
    for k in pre:  # merge_param_magnitude_direction
        delta = torch.stack([c * tau[k] for c, tau in zip(scale, taus)])
        if k in pre_mag:  # merge_per_param_magnitude_direction
            mag = rank_within_model(torch.stack([d[0][k] for d in diffs]))
            direction = rank_within_model(torch.stack([d[1][k] for d in diffs]))
            weight = 0.5 * (importance_scores(mag) + importance_scores(direction))
            merged[k] = pre[k] + (delta * weight.unsqueeze(dim=1)).sum(dim=0)
        else:  # vectors: the raw changes, not ranked
            raw = torch.abs(torch.stack([ft[k] for ft in fts]) - pre[k])
            merged[k] = pre[k] + (delta * importance_scores(raw)).sum(dim=0)
    return transpose_embeddings(merged)


def _widen_sds(
    n: int, seed: int, dtype: torch.dtype, shape: tuple[int, int] = (12, 8), unseen: bool = False
) -> tuple[dict, dict]:
    """The tensor kinds of the authors' code: a Linear weight [out, in] and bias, a LayerNorm weight, and token
    embeddings [vocab, hidden] whose padding token is zero (its direction is the authors' 0/0). ``unseen``: each
    source leaves some tokens exactly as they were (the tokens its language's data never contains)."""
    g = torch.Generator().manual_seed(seed)
    out_dim, in_dim = shape
    base = {
        "dense.weight": torch.randn(out_dim, in_dim, generator=g),
        "dense.bias": torch.randn(out_dim, generator=g),
        "LayerNorm.weight": 1 + 0.1 * torch.randn(in_dim, generator=g),
        EMB: torch.randn(10, in_dim, generator=g),
    }
    base[EMB][1] = 0
    sds = {}
    for i in range(n):
        sd = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        moved = torch.rand(10, generator=g) < 0.6 if unseen else torch.ones(10, dtype=torch.bool)
        moved[1] = False
        sd[EMB] = torch.where(moved.unsqueeze(1), sd[EMB], base[EMB])
        sds[f"s{i}"] = sd
    return (
        {k: v.to(dtype) for k, v in base.items()},
        {name: {k: v.to(dtype) for k, v in sd.items()} for name, sd in sds.items()},
    )


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("shape", [(12, 8), (9, 7)])
@pytest.mark.parametrize("knobs", [{}, {"threshold": 0.8, "calibration": 0.5}])
def test_widen_equals_the_authors_code(dtype, atol, n, shape, knobs):
    base, sds = _widen_sds(n, seed=10 + n, dtype=dtype, shape=shape)
    out = mm.merge("widen", sds, {k: 1 / n for k in sds}, base, device="cpu", **knobs)
    ref = _authors_widen(base, sds, t=knobs.get("threshold", 1.0), s=knobs.get("calibration", 1.0))
    for key in base:
        assert out[key].dtype == dtype
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=atol)


def test_widen_scales_the_task_vectors_by_the_weights():
    base, sds = _widen_sds(3, seed=14, dtype=torch.float64)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    out = mm.merge("widen", sds, w, base, device="cpu")
    ref = _authors_widen(base, sds, scale=[3 * w[k] for k in sds])
    for key in base:
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-6)


def test_widen_unseen_tokens_are_ranked_by_rounding_noise():
    """A token a source leaves unchanged has a direction difference of rounding size (1 − cos of a vector with
    itself), and where such tokens fall among each other in that source's ranking is set by the rounding, in
    the authors' code as in mu's. It reaches the softmax over the sources only for tokens that some sources
    changed and others did not: every tensor and every token changed by all sources or by none is the authors'."""
    base, sds = _widen_sds(3, seed=17, dtype=torch.float64, unseen=True)
    out = mm.merge("widen", sds, {k: 1 / 3 for k in sds}, base, device="cpu")
    ref = _authors_widen(base, sds)
    moved = torch.stack([(sd[EMB] != base[EMB]).any(1) for sd in sds.values()])
    agree = moved.all(0) | ~moved.any(0)
    assert agree.any() and not agree.all()
    for key in base:
        rows = agree if key == EMB else slice(None)
        torch.testing.assert_close(out[key][rows], ref[key][rows], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[EMB][~moved.any(0)], base[EMB][~moved.any(0)], rtol=0, atol=0)


def test_widen_scores_columns_tokens_and_raw_vector_changes():
    """Where it departs from widen_rowwise: a Linear's scores are per column, a token embedding's per row, and
    a 1-D tensor's calibration compares each change with its own tensor's mean change."""
    base, sds = _widen_sds(2, seed=15, dtype=torch.float32)
    out = mm.merge("widen", sds, {"s0": 0.5, "s1": 0.5}, base, device="cpu")
    taus = [sd["dense.weight"] - base["dense.weight"] for sd in sds.values()]
    # per column: the merged change of a column is a combination of the sources' changes with one score each
    for j in range(base["dense.weight"].shape[1]):
        a = torch.stack([tau[:, j] for tau in taus], 1)
        coef = torch.linalg.lstsq(a, out["dense.weight"][:, j] - base["dense.weight"][:, j]).solution
        torch.testing.assert_close(a @ coef, out["dense.weight"][:, j] - base["dense.weight"][:, j], atol=1e-5, rtol=0)
    # 1-D with s = 1: an element whose change exceeds its source's mean change takes all of that source's change
    diff = torch.stack([(sd["dense.bias"] - base["dense.bias"]).abs() for sd in sds.values()])
    big = diff > diff.mean(1, keepdim=True)
    both = big.all(0)
    tau_sum = sum(sd["dense.bias"] - base["dense.bias"] for sd in sds.values())
    torch.testing.assert_close(out["dense.bias"][both], (base["dense.bias"] + tau_sum)[both], rtol=0, atol=1e-6)
    assert not torch.allclose(
        out["dense.weight"], mm.merge("widen_rowwise", sds, {"s0": 0.5, "s1": 0.5}, base, device="cpu")["dense.weight"]
    )


def test_widen_one_source_returns_it_identical_sources_add_up_where_calibrated():
    base, sds = _widen_sds(1, seed=16, dtype=torch.float32)
    one = mm.merge("widen", sds, {"s0": 1.0}, base, device="cpu")
    for key in base:
        torch.testing.assert_close(one[key], sds["s0"][key], rtol=0, atol=1e-6)
    # the calibrated score s is absolute: each copy adds s·τ there (the authors' code), softmax shares elsewhere
    twice = mm.merge("widen", {"a": sds["s0"], "b": sds["s0"]}, {"a": 0.5, "b": 0.5}, base, device="cpu")
    ref = _authors_widen(base, {"a": sds["s0"], "b": sds["s0"]})
    tau = sds["s0"]["dense.bias"] - base["dense.bias"]
    big = tau.abs() > tau.abs().mean()
    torch.testing.assert_close(
        twice["dense.bias"], base["dense.bias"] + torch.where(big, 2 * tau, tau), rtol=0, atol=1e-6
    )
    for key in base:
        torch.testing.assert_close(twice[key], ref[key], rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["widen", "widen_rowwise"])
def test_widen_does_not_depend_on_the_chunk_size(method):
    base, sds = _widen_sds(3, seed=8, dtype=torch.float32)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    fn = mm.METHODS[method]
    whole = fn(sds, w, base, device="cpu", chunk_elements=10**9)
    for step in (1, 5, 17):
        part = fn(sds, w, base, device="cpu", chunk_elements=step)
        for key in base:
            torch.testing.assert_close(part[key], whole[key], rtol=0, atol=1e-6)


# --- widen_rowwise: mu's earlier reading of WIDEN ---


def _ref_widen_rowwise(base: dict, sds: dict, w: dict, t: float = 1.0, s: float = 1.0) -> dict:
    """widen_rowwise transcribed directly on stacked tensors: rows disentangled into norm and direction."""

    def rank(diff):
        sig = torch.zeros_like(diff)
        for i in range(diff.shape[0]):
            order = sorted(range(diff.shape[1]), key=lambda j: (float(diff[i, j]), j))
            for r, j in enumerate(order):
                sig[i, j] = r / diff.shape[1]
        return sig

    def score(sig):
        out = torch.softmax(sig, dim=0)
        out[sig > sig.mean(0, keepdim=True) * t] = s
        return out

    n = len(sds)
    res = {}
    for key, b in base.items():
        th = torch.stack([sd[key] for sd in sds.values()])
        tau = torch.stack([n * w[k] * (sd[key] - b) for k, sd in sds.items()])
        if b.dim() == 2:
            mag = (th.norm(dim=2) - b.norm(dim=1)).abs()
            direction = 1 - torch.nn.functional.cosine_similarity(th, b.expand_as(th), dim=2)
            sc = 0.5 * (score(rank(mag)) + score(rank(direction)))
            res[key] = b + (sc.unsqueeze(2) * tau).sum(0)
        else:
            res[key] = b + (score(rank((th - b).abs())) * tau).sum(0)
    return res


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("knobs", [{}, {"threshold": 0.8, "calibration": 0.5}])
def test_widen_rowwise_equals_its_transcription(weighted, knobs):
    base, sds = _sds(3, seed=6)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2} if weighted else {k: 1 / 3 for k in sds}
    out = mm.merge("widen_rowwise", sds, w, base, **knobs)
    ref = _ref_widen_rowwise(base, sds, w, t=knobs.get("threshold", 1.0), s=knobs.get("calibration", 1.0))
    for key in base:
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6)


def test_widen_rowwise_one_or_identical_sources_return_that_source():
    base, sds = _sds(1, seed=7)
    out = mm.merge("widen_rowwise", sds, {"s0": 1.0}, base)
    twice = mm.merge("widen_rowwise", {"a": sds["s0"], "b": sds["s0"]}, {"a": 0.5, "b": 0.5}, base)
    for key in base:
        torch.testing.assert_close(out[key], sds["s0"][key], rtol=0, atol=1e-6)
        torch.testing.assert_close(twice[key], sds["s0"][key], rtol=0, atol=1e-6)


# --- every new method: dtypes, lazy inputs, knobs, modules ---

NEW = (*SPECTRAL, "widen", "widen_rowwise")


@pytest.mark.parametrize("method", NEW)
def test_shapes_dtypes_and_lazy_inputs(method, tmp_path):
    base, sds = _sds(3, seed=9)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    eager = mm.merge(method, sds, w, base)
    files = {}
    for name, sd in {**sds, "base": base}.items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
        files[name] = lazy.LazyStateDict.from_file(tmp_path / f"{name}.safetensors")
    lazy_out = mm.merge(method, {k: files[k] for k in sds}, w, files["base"])
    for key in base:
        assert eager[key].shape == base[key].shape and eager[key].dtype == torch.float32
        torch.testing.assert_close(lazy_out[key], eager[key], rtol=0, atol=1e-6)
    half = {k: {t: v.to(torch.bfloat16) for t, v in sd.items()} for k, sd in sds.items()}
    out16 = mm.merge(method, half, w, {k: v.to(torch.bfloat16) for k, v in base.items()})
    assert {v.dtype for v in out16.values()} == {torch.bfloat16}


@pytest.mark.parametrize(
    "method,knobs,match",
    [
        ("tsv_m", {"lambda_": float("nan")}, "lambda_"),
        ("iso_c", {"lambda_": "1"}, "lambda_"),
        ("iso_cts", {"common_fraction": 1.5}, "common_fraction"),
        ("widen", {"threshold": -1.0}, "threshold"),
        ("widen", {"calibration": float("inf")}, "calibration"),
        ("widen_rowwise", {"threshold": -1.0}, "threshold"),
        ("tsv_m", {"density": 0.5}, "does not take"),
    ],
)
def test_bad_knobs_are_refused(method, knobs, match):
    base, sds = _sds(2)
    with pytest.raises(ValueError, match=match):
        mm.merge(method, sds, {"s0": 0.5, "s1": 0.5}, base, **knobs)


@pytest.mark.parametrize("method", NEW)
def test_base_is_required(method):
    _, sds = _sds(2)
    with pytest.raises(ValueError, match="base"):
        mm.merge(method, sds, {"s0": 0.5, "s1": 0.5})
    assert method in mm.NEEDS_BASE and mm.label(method) == method


@pytest.mark.parametrize("method", NEW)
def test_merging_nn_linear_modules(method):
    """FusionBench style: fine-tuned copies of an ``nn.Linear``; the merge loads back into the module and
    one task (full rank) gives that task's module back for TSV-M and both WIDENs."""
    torch.manual_seed(0)
    pre = torch.nn.Linear(8, 6)
    tasks = []
    for _ in range(3):
        m = torch.nn.Linear(8, 6)
        m.load_state_dict({k: v + 0.05 * torch.randn_like(v) for k, v in pre.state_dict().items()})
        tasks.append(m)
    sds = {f"t{i}": m.state_dict() for i, m in enumerate(tasks)}
    merged = torch.nn.Linear(8, 6)
    merged.load_state_dict(mm.merge(method, sds, {k: 1 / 3 for k in sds}, pre.state_dict()))
    x = torch.randn(4, 8)
    assert merged(x).shape == (4, 6) and torch.isfinite(merged(x)).all()
    if method in ("tsv_m", "widen", "widen_rowwise"):
        one = torch.nn.Linear(8, 6)
        one.load_state_dict(mm.merge(method, {"t0": sds["t0"]}, {"t0": 1.0}, pre.state_dict()))
        torch.testing.assert_close(one(x), tasks[0](x), rtol=1e-5, atol=1e-5)


def test_an_svd_float32_lapack_does_not_converge_on_is_done_in_float64(monkeypatch):
    """LAPACK's float32 gesdd can fail on rank-deficient matrices with repeated singular values (Iso-CTS's
    residuals on xlm-roberta-base-sized checkpoints, ``make bench``): the SVD is then done in float64."""
    base, sds = _sds(3, seed=4)
    expected = mm.merge("iso_cts", sds, {k: 1 / 3 for k in sds}, base, device="cpu")
    svd, calls = torch.linalg.svd, []

    def flaky(a, full_matrices=True):
        calls.append(a.dtype)
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge (error code: 1).")
        return svd(a, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    out = mm.merge("iso_cts", sds, {k: 1 / 3 for k in sds}, base, device="cpu")
    assert torch.float64 in calls and all(v.dtype == expected[k].dtype for k, v in out.items())
    for key in out:
        torch.testing.assert_close(out[key], expected[key], rtol=1e-5, atol=1e-5)
