"""mergekit 0.1.5's other methods in ``mu.merge`` (breadcrumbs_ties, della, della_linear, sce, karcher, nuslerp,
nearswap, arcee_fusion, ram, ramplus_tl): each equal to mergekit's own implementation on small random state dicts
with small chunk sizes forced, DELLA under the same random draws, and simple ``nn.Linear`` merges by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mu import merge as mm
from mu.merge import masks, registry, selective, taskvec

STEPS = (1, 7, 64)  # chunk sizes in elements: one row, a few rows, whole small tensors


def _sds(n: int = 3, seed: int = 0, sparse: float = 0.0, scalar: bool = False) -> tuple[dict, dict]:
    """A base and n sources (2-D and 1-D tensors; ``scalar``: a 0-d one too); ``sparse``: that fraction of each
    task vector exactly zero (so that RAM's unique and shared entries both occur)."""
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(37, 11, generator=g), "b": torch.randn(29, generator=g)}
    if scalar:
        base["s"] = torch.randn((), generator=g)
    sds = {}
    for i in range(n):
        deltas = {k: 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        if sparse:
            deltas = {k: d * (torch.rand(d.shape, generator=g) >= sparse) for k, d in deltas.items()}
        sds[f"s{i}"] = {k: base[k] + deltas[k] for k in base}
    return base, sds


def _close(mine: dict, ref: dict, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert set(mine) == set(ref)
    for key in ref:
        torch.testing.assert_close(mine[key], ref[key], rtol=rtol, atol=atol)


W3 = {"s0": 0.5, "s1": 0.3, "s2": 0.2}


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ({}, {"density": 0.9, "gamma": 0.01}),
        ({"density": 0.6, "gamma": 0.1}, {"density": 0.6, "gamma": 0.1}),
        (
            {"density": 0.5, "gamma": 0.05, "rescale": True, "lambda_": 0.7},
            {"density": 0.5, "gamma": 0.05, "rescale": True, "lambda": 0.7},
        ),
    ],
)
def test_breadcrumbs_ties_equals_mergekit(ours, theirs):
    """mu's consensus divides by the agreeing sources' weights, as mergekit's ``normalize=True`` (as ``ties``)."""
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(3, seed=5, scalar=True)
    ref = merge_state_dicts(
        {**sds, "B": base}, "breadcrumbs_ties", base="B", parameters={"weight": W3, "normalize": True, **theirs}
    )
    for step in STEPS:
        _close(
            registry.METHODS["breadcrumbs_ties"](sds, W3, base, device="cpu", chunk_elements=step, **ours), ref, rtol=0
        )


@pytest.mark.parametrize("method", ["della", "della_linear"])
@pytest.mark.parametrize("ours", [{}, {"density": 0.3, "epsilon": 0.05, "lambda_": 1.5}, {"rescale": False}])
def test_della_equals_mergekit_under_the_same_draws(method, ours, monkeypatch):
    """mergekit's ``della_magprune`` draws its mask with ``torch.bernoulli(probs)``; here it gets mu's uniform draws
    (one seeded stream per tensor and source, u < p) instead, so both drop the same entries. (No 0-d tensor:
    mergekit's della fails on one.)"""
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(3, seed=8)
    knobs = {**mm.knobs(method), **ours}
    draws = iter(
        [
            torch.from_numpy(masks.source_rng(knobs["seed"], key, name).random(v.numel(), dtype=np.float32))
            for key, v in base.items()
            for name in sds
        ]
    )  # mergekit's order: tensor by tensor, source by source

    def bernoulli(probs, *args, **kwargs):
        return (next(draws).view(probs.shape) < probs).to(probs.dtype)

    mine = {step: registry.METHODS[method](sds, W3, base, device="cpu", chunk_elements=step, **ours) for step in STEPS}
    params = {
        "weight": W3,
        "density": knobs["density"],
        "epsilon": knobs["epsilon"],
        "lambda": knobs["lambda_"],
        "rescale": knobs["rescale"],
        "normalize": True,
    }
    monkeypatch.setattr(torch, "bernoulli", bernoulli)
    ref = merge_state_dicts({**sds, "B": base}, method, base="B", parameters=params)
    assert next(draws, None) is None  # every draw used
    for step in STEPS:
        _close(mine[step], ref, rtol=0)


def test_magprune_keep_probabilities_rise_with_the_magnitude_rank():
    """DELLA's drops on their own (one source, base 0, no rescale): within rows of 10, the entry of rank r keeps
    with probability density − ε + 2ε r / 9; over 20000 rows each rate is within 0.015 of it."""
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(20000, 10, generator=g)
    density, eps = 0.5, 0.2
    kept = (
        taskvec.task_vectors(
            {"a": {"d": delta}},
            {"a": 1.0},
            {"d": torch.zeros_like(delta)},
            sparsify="magprune",
            density=density,
            epsilon=eps,
            device="cpu",
            chunk_elements=999,
        )["d"]
        != 0
    )
    ranks = delta.abs().argsort(dim=1).argsort(dim=1)
    for r in range(10):
        rate = float(kept[ranks == r].float().mean())
        assert abs(rate - (density - eps + 2 * eps * r / 9)) < 0.015, (r, rate)
    assert abs(float(kept.float().mean()) - density) < 0.005


@pytest.mark.parametrize("shape", [(40, 9, 1), (3, 5, 4), (1, 70000, 1), (6, 1, 2)])
def test_magprune_row_ranks_on_the_cpu_equal_a_stable_argsort(shape):
    """DELLA's CPU ranking (packed keys, numpy's sort) against the stable argsort the GPU runs: ties (zeros and
    repeated magnitudes) ranked by index, trailing dims ranked separately, rows wider than int16 ranks."""
    g = torch.Generator().manual_seed(2)
    m = (torch.randn(shape, generator=g) * 4).round().abs() / 4  # many equal magnitudes, zeros among them
    ranks = masks.row_ranks(m)
    assert torch.equal(ranks.long(), masks.row_ranks_sorted(m))


@pytest.mark.parametrize("density", [1.0, 0.5, 0.1])
def test_sce_equals_mergekit(density):
    """mu's ``density`` is mergekit's ``select_topk``; SCE's weights come from the task vectors (given ones unused)."""
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(3, seed=13, scalar=True)
    ref = merge_state_dicts({**sds, "B": base}, "sce", base="B", parameters={"select_topk": density})
    for step in STEPS:
        _close(registry.METHODS["sce"](sds, W3, base, device="cpu", chunk_elements=step, density=density), ref)
    assert "sce" in mm.IGNORES_WEIGHTS


@pytest.mark.parametrize("spread", [0.1, 3.0])  # nearly colinear sources (fine-tunes of one base), unrelated ones
def test_karcher_equals_mergekit(spread):
    from mergekit.merge_methods import merge_state_dicts
    from mergekit.merge_methods.karcher import karcher_merge_tensors

    base, sds = _sds(3, seed=21, scalar=True)
    sds = {k: {n: base[n] + spread / 0.1 * (v - base[n]) for n, v in sd.items()} for k, sd in sds.items()}
    equal = {k: 1 / 3 for k in sds}
    ref = merge_state_dicts(sds, "karcher")  # mergekit's karcher weighs the inputs equally
    for step in STEPS:
        _close(registry.METHODS["karcher"](sds, equal, device="cpu", chunk_elements=step), ref)
    mine = registry.METHODS["karcher"](sds, W3, device="cpu", chunk_elements=16, max_iter=3)
    for key in base:  # the weights are the Karcher mean's α (mergekit's function takes them)
        theirs = karcher_merge_tensors([sds[k][key] for k in sds], [W3[k] for k in sds], max_iter=3)
        torch.testing.assert_close(mine[key], theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flatten,row_wise", [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize("with_base", [True, False])
def test_nuslerp_equals_mergekit(flatten, row_wise, with_base):
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(2, seed=17)
    w = {"s0": 0.35, "s1": 0.65}
    params = {"weight": w, "nuslerp_flatten": flatten, "nuslerp_row_wise": row_wise}
    models = {**sds, "B": base} if with_base else sds
    ref = merge_state_dicts(models, "nuslerp", base="B" if with_base else None, parameters=params)
    for step in STEPS:
        _close(
            registry.METHODS["nuslerp"](
                sds,
                w,
                base if with_base else None,
                device="cpu",
                chunk_elements=step,
                flatten=flatten,
                row_wise=row_wise,
            ),
            ref,
        )


@pytest.mark.parametrize("t", [1e-4, 0.05, 10.0])
def test_nearswap_equals_mergekit(t):
    """The source with the larger weight is mergekit's ``base``."""
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(2, seed=4, scalar=True)
    for weights, primary in (({"s0": 0.6, "s1": 0.4}, "s0"), ({"s0": 0.2, "s1": 0.8}, "s1")):
        ref = merge_state_dicts(sds, "nearswap", base=primary, parameters={"t": t})
        for step in STEPS:
            _close(registry.METHODS["nearswap"](sds, weights, device="cpu", chunk_elements=step, t=t), ref, rtol=0)


def test_arcee_fusion_equals_mergekit():
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(2, seed=6)
    sds["s1"]["w"][3:9] += 0.5  # a few rows changed much more: important
    for weights, primary in (({"s0": 0.6, "s1": 0.4}, "s0"), ({"s0": 0.2, "s1": 0.8}, "s1")):
        ref = merge_state_dicts(sds, "arcee_fusion", base=primary)
        for step in STEPS:
            mine = registry.METHODS["arcee_fusion"](sds, weights, device="cpu", chunk_elements=step)
            _close(mine, ref, rtol=0, atol=0)
        assert not torch.equal(ref["w"], sds[primary]["w"])


def test_arcee_fusion_samples_large_tensors_as_mergekit():
    """Over 1M entries mergekit takes the quantiles of 1M entries drawn with replacement from torch's generator;
    mu draws them from a generator seeded per tensor: with the global generator seeded alike, the same entries."""
    from mergekit.merge_methods import merge_state_dicts

    g = torch.Generator().manual_seed(2)
    a = torch.randn(1100, 1000, generator=g)
    sds = {"a": {"big": a}, "b": {"big": a + 0.05 * torch.randn(a.shape, generator=g) ** 3}}
    mine = registry.METHODS["arcee_fusion"](sds, {"a": 0.5, "b": 0.5}, device="cpu", chunk_elements=150_000, seed=3)
    torch.manual_seed(selective._generator(3, "big").initial_seed())
    ref = merge_state_dicts(sds, "arcee_fusion", base="a")
    assert torch.equal(mine["big"], ref["big"])
    assert 0.01 < float((mine["big"] != a).float().mean()) < 0.5  # some entries fused, not all


@pytest.mark.parametrize(
    "method,ours,theirs",
    [
        ("ram", {}, {}),
        ("ram", {"epsilon": 0.05}, {"epsilon": 0.05}),
        ("ramplus_tl", {}, {}),
        ("ramplus_tl", {"r": 0.5, "alpha": 1.0, "epsilon": 0.02}, {"r": 0.5, "alpha": 1.0, "epsilon": 0.02}),
    ],
)
def test_ram_equals_mergekit(method, ours, theirs):
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(3, seed=9, sparse=0.6, scalar=True)
    ref = merge_state_dicts({**sds, "B": base}, method, base="B", parameters=theirs)
    for step in STEPS:
        _close(registry.METHODS[method](sds, W3, base, device="cpu", chunk_elements=step, **ours), ref)


# FusionBench-style: merge two fine-tuned nn.Linear layers' state dicts, check the merged layer's output.
X = torch.tensor([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 1.0, -1.0]])


def _linear(weight: list, bias: list) -> torch.nn.Linear:
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def _merged_output(method: str, layers: dict, weights: dict, base: torch.nn.Linear | None, **knobs) -> torch.Tensor:
    merged = torch.nn.Linear(4, 3)
    merged.load_state_dict(
        mm.merge(
            method,
            {k: v.state_dict() for k, v in layers.items()},
            weights,
            base.state_dict() if base is not None else None,
            device="cpu",
            **knobs,
        )
    )
    with torch.no_grad():
        return merged(X)


BASE0 = _linear([[0.0] * 4] * 3, [0.0] * 3)
A = _linear([[1.0, 2.0, 2.0, 0.0], [0.0] * 4, [0.0] * 4], [3.0, 0.0, 0.0])  # task vectors on disjoint entries,
B = _linear([[0.0] * 4, [2.0, 1.0, 0.0, 2.0], [0.0] * 4], [0.0, 3.0, 0.0])  # orthogonal, of equal norms (3)


@pytest.mark.parametrize(
    "method,knobs",
    [("ram", {}), ("ramplus_tl", {}), ("sce", {}), ("breadcrumbs_ties", {}), ("della", {"density": 1.0})],
)
def test_linear_disjoint_task_vectors_merge_to_their_union(method, knobs):
    """Task vectors that change different entries do not interfere: RAM keeps each unique change (RAM+ scales it
    by 1 + r · 0: no shared entries), the sign-consensus methods divide each entry by the weight of the one source
    that changed it (breadcrumbs at density 0.9 drops only zeros here)."""
    with torch.no_grad():
        union = A(X) + B(X)
    torch.testing.assert_close(_merged_output(method, {"a": A, "b": B}, {"a": 0.7, "b": 0.3}, BASE0, **knobs), union)


def test_linear_ram_averages_shared_changes_and_ramplus_scales_unique_ones():
    shared = _linear([[3.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 2.0], [0.0] * 4], [0.0, 3.0, 0.0])  # B + entry (0, 0)
    # entry (0, 0): changed by both (1 and 3) -> their mean 2; every other change is unique -> kept whole
    expected_w = torch.tensor([[2.0, 2.0, 2.0, 0.0], [2.0, 1.0, 0.0, 2.0], [0.0] * 4])
    with torch.no_grad():
        expected = X @ expected_w.T + torch.tensor([3.0, 3.0, 0.0])
    torch.testing.assert_close(_merged_output("ram", {"a": A, "b": shared}, {"a": 0.5, "b": 0.5}, BASE0), expected)
    # RAM+: per tensor ρ = shared / unique entries of each source (weight: a 1/2, b 1/3; bias: none shared),
    # λ = 1 + r · min(ρ, alpha) on the unique entries
    r, alpha = 0.4, 0.4
    lam_a, lam_b = 1 + r * min(1 / 2, alpha), 1 + r * min(1 / 3, alpha)
    scaled_w = torch.tensor([[2.0, 2.0 * lam_a, 2.0 * lam_a, 0.0], [2.0 * lam_b, lam_b, 0.0, 2.0 * lam_b], [0.0] * 4])
    with torch.no_grad():
        expected = X @ scaled_w.T + torch.tensor([3.0, 3.0, 0.0])
    out = _merged_output("ramplus_tl", {"a": A, "b": shared}, {"a": 0.5, "b": 0.5}, BASE0, r=r, alpha=alpha)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("method", ["karcher", "nuslerp"])
def test_linear_orthogonal_equal_norm_sources_meet_halfway_on_the_sphere(method):
    """Orthogonal weights of equal norm 3 (each tensor): the equal-weight Karcher mean and the t = 0.5 slerp are
    both 3 · (u_a + u_b) / |u_a + u_b| = (a + b) / √2, not the chord midpoint (a + b) / 2."""
    with torch.no_grad():
        expected = (A(X) + B(X)) / math.sqrt(2)
    torch.testing.assert_close(_merged_output(method, {"a": A, "b": B}, {"a": 0.5, "b": 0.5}, None), expected)


def test_linear_nearswap_and_arcee_fusion_by_hand():
    with torch.no_grad():
        a_out, b_out = A(X), B(X)
    # nearswap: t above every |a - b| swaps every entry to b; t = 0 keeps a (the larger weight is mergekit's base)
    torch.testing.assert_close(_merged_output("nearswap", {"a": A, "b": B}, {"a": 0.6, "b": 0.4}, None, t=10.0), b_out)
    torch.testing.assert_close(_merged_output("nearswap", {"a": A, "b": B}, {"a": 0.6, "b": 0.4}, None, t=0.0), a_out)
    torch.testing.assert_close(_merged_output("nearswap", {"a": A, "b": B}, {"a": 0.4, "b": 0.6}, None, t=0.0), b_out)
    # arcee_fusion from BASE0 (weight 0.6) to C, which changes row 0 by (1, 2, 3, 4) and the bias by (0.5, 0, 0):
    # importance = |change| · KL of row 0's softmaxes; of the weight's 12 importances 8 are 0, so q1 = median = 0,
    # q3 = the smallest non-zero (the change 1) -> threshold 1.5 × it: the changes 2, 3, 4 are kept, 1 is not;
    # the bias's importances (x, 0, 0) give threshold 0: all kept.
    c = _linear([[1.0, 2.0, 3.0, 4.0], [0.0] * 4, [0.0] * 4], [0.5, 0.0, 0.0])
    expected = X @ torch.tensor([[0.0, 2.0, 3.0, 4.0], [0.0] * 4, [0.0] * 4]).T + torch.tensor([0.5, 0.0, 0.0])
    torch.testing.assert_close(
        _merged_output("arcee_fusion", {"base0": BASE0, "c": c}, {"base0": 0.6, "c": 0.4}, None), expected
    )


def test_new_methods_registered_with_strict_knobs_and_labels():
    new = {
        "breadcrumbs_ties",
        "della",
        "della_linear",
        "sce",
        "karcher",
        "nuslerp",
        "nearswap",
        "arcee_fusion",
        "ram",
        "ramplus_tl",
    }
    assert new <= set(mm.METHODS) and new <= mm.STREAMED
    assert mm.knobs("della") == {"density": 0.5, "epsilon": 0.15, "lambda_": 1.0, "rescale": True, "seed": 42}
    assert set(mm.knobs("sce")) == {"density", "lambda_"} and set(mm.knobs("ramplus_tl")) == {"r", "alpha", "epsilon"}
    assert mm.label("della", density=0.5) == "della" and mm.label("della", density=0.3) == "della-density0.3"
    assert mm.label("nuslerp", flatten=False) == "nuslerp-flattenFalse"
    assert mm.knobs_for("sce", density=0.2, lambda_=None, gamma=None, alpha=None) == {"density": 0.2}
    base, sds = _sds(3)
    with pytest.raises(ValueError, match=r"'sce' does not take \['epsilon'\]"):
        mm.merge("sce", sds, W3, base, epsilon=0.1)
    with pytest.raises(ValueError, match="needs the base"):
        mm.merge("ram", sds, W3)
    with pytest.raises(ValueError, match="epsilon"):
        mm.merge("della", sds, W3, base, density=0.1, epsilon=0.2)
    for method in ("nuslerp", "nearswap", "arcee_fusion"):
        assert method in mm.PAIRWISE
        with pytest.raises(ValueError, match="exactly 2"):
            mm.merge(method, sds, W3, base)
    with pytest.raises(ValueError, match=r"t=-1.0 is not valid; valid: a number >= 0"):
        mm.merge("nearswap", {k: sds[k] for k in ("s0", "s1")}, {"s0": 0.5, "s1": 0.5}, t=-1.0)


@pytest.mark.parametrize(
    "method,whole_reads",
    [
        ("della", 2),
        ("breadcrumbs_ties", 2),
        ("sce", 1),
        ("karcher", 0),
        ("nuslerp", 0),
        ("nearswap", 0),
        ("arcee_fusion", 0),
        ("ram", 0),
        ("ramplus_tl", 0),
    ],
)
def test_lazy_inputs_are_read_in_chunks(method, whole_reads, tmp_path, monkeypatch):
    """From safetensors files, with 100-element chunks: the result equals the in-memory merge, and the tensors
    read whole are at most the base and one source (the task-vector methods' first pass; sce: the base only;
    the others read every input into reused chunk buffers)."""
    import weakref

    from safetensors.torch import save_file

    from mu.merge import chunks, lazy

    base, sds = _sds(2 if method in mm.PAIRWISE else 3, seed=12)
    live = {"now": 0, "max": 0}

    class Counting(lazy.LazyStateDict):
        def read(self, key, start=None, stop=None, *, out=None):
            t = super().read(key, start, stop, out=out)
            if out is None:  # a fresh tensor (reads into a reused buffer allocate nothing)
                live["now"] += t.numel()
                live["max"] = max(live["max"], live["now"])
                weakref.finalize(t, lambda n=t.numel(): live.__setitem__("now", live["now"] - n))
            return t

    files = {}
    for name, sd in {**sds, "base": base}.items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
        files[name] = Counting.from_file(tmp_path / f"{name}.safetensors")
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 100)
    w = {k: W3[k] for k in sds}
    merged = mm.merge(method, {k: files[k] for k in sds}, w, files["base"], device="cpu")
    assert live["max"] <= whole_reads * max(v.numel() for v in base.values()), live
    expected = mm.merge(method, sds, w, base, device="cpu")
    for key in base:
        assert torch.equal(merged[key], expected[key]), key
