"""Merge methods on hand-built state dicts: each checked against an independent hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from mu import merge as mm


def _sds(n: int = 3, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(5, 4, generator=g), "b": torch.randn(5, generator=g)}
    sds = {f"s{i}": {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()} for i in range(n)}
    return base, sds


def test_linear_equal_weights_is_elementwise_mean():
    base, sds = _sds(4)
    out = mm.merge("linear", sds, {k: 1.0 for k in sds})
    for key in base:
        mean = torch.stack([sd[key] for sd in sds.values()]).mean(0)
        torch.testing.assert_close(out[key], mean)


def test_linear_weights_are_normalised():
    base, sds = _sds(2)
    out = mm.merge("linear", sds, {"s0": 3.0, "s1": 1.0})
    torch.testing.assert_close(out["w"], 0.75 * sds["s0"]["w"] + 0.25 * sds["s1"]["w"])


def test_linear_equals_mergekit_linear():
    from mergekit.merge_methods import merge_state_dicts

    _, sds = _sds(3, seed=5)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    ours = mm.merge("linear", sds, w)
    theirs = merge_state_dicts(sds, "linear", parameters={"weight": w, "normalize": True})
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-6)
    half = {k: {t: v.to(torch.bfloat16) for t, v in sd.items()} for k, sd in sds.items()}
    assert mm.merge("linear", half, w)["w"].dtype == torch.bfloat16  # the inputs' dtype is kept


@pytest.mark.parametrize("density", [0.2, 0.5, 0.9])
def test_ties_equals_mergekit_ties(density):
    """mu prunes by a k-th-value threshold instead of mergekit's argsort: same result (no exact ties)."""
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(3, seed=11)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    ours = mm.merge("ties", sds, w, base, density=density)
    theirs = merge_state_dicts(
        {**sds, "B": base}, "ties", base="B", parameters={"weight": w, "density": density, "normalize": True}
    )
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=1e-6)


def _pruned(delta: torch.Tensor, density: float, chunk_elements: int = 1 << 20) -> torch.Tensor:
    """The magnitude-pruned task vector mu keeps (one source, weight 1, no consensus, base 0)."""
    from mu.merge.taskvec import task_vectors

    return task_vectors(
        {"s": {"d": delta}},
        {"s": 1.0},
        {"d": torch.zeros_like(delta)},
        sparsify="magnitude",
        density=density,
        device="cpu",
        chunk_elements=chunk_elements,
    )["d"]


def test_magnitude_prune_keeps_exactly_k_with_ties():
    delta = torch.tensor([0.5, -0.2, 0.2, 0.2, -0.9, 0.0, 0.2, 0.1])
    expected = torch.tensor([0.5, -0.2, 0.2, 0.0, -0.9, 0.0, 0.0, 0.0])  # k = 4: 0.9, 0.5, the first two 0.2s
    for chunk in (1, 3, 8):  # the tie window runs across chunks in index order
        assert torch.equal(_pruned(delta, 0.5, chunk), expected)
    assert torch.equal(_pruned(delta, 1.0), delta)
    assert int((_pruned(delta, 0.01) != 0).sum()) == 1  # at least one entry survives


def test_task_arithmetic_scale_zero_returns_base():
    base, sds = _sds(3)
    out = mm.merge("task_arithmetic", sds, {"s0": 0.2, "s1": 0.3, "s2": 0.5}, base, lambda_=0.0)
    for key in base:
        torch.testing.assert_close(out[key], base[key])


def test_task_arithmetic_is_base_plus_scaled_weighted_task_vectors():
    base, sds = _sds(3)
    w = {"s0": 0.2, "s1": 0.3, "s2": 0.5}
    out = mm.merge("task_arithmetic", sds, w, base, lambda_=3.0)
    expected = base["w"] + 3.0 * sum(w[k] * (sds[k]["w"] - base["w"]) for k in sds)
    torch.testing.assert_close(out["w"], expected)
    # lambda_ = 1 with normalised weights is the linear merge
    torch.testing.assert_close(mm.merge("task_arithmetic", sds, w, base)["w"], mm.merge("linear", sds, w)["w"])


def _ties_case():
    base = {"t": torch.zeros(4)}
    deltas = {"a": [1.0, -2.0, 3.0, -0.5], "b": [2.0, 1.0, -1.0, -0.5], "c": [-1.0, 2.0, -1.0, 0.8]}
    sds = {k: {"t": torch.tensor(v)} for k, v in deltas.items()}
    w = {"a": 0.5, "b": 0.3, "c": 0.2}
    return base, sds, w


def test_ties_sign_election_by_hand():
    base, sds, w = _ties_case()
    out = mm.merge("ties", sds, w, base, density=1.0)["t"]
    # Elected sign per element = sign of the weighted sum of deltas:
    #  e0: .5*1 + .3*2 - .2*1 = 0.9 > 0  -> a, b agree      -> (.5*1 + .3*2) / (.5 + .3)
    #  e1: -.5*2 + .3*1 + .2*2 = -0.3 < 0 -> only a agrees  -> -2
    #  e2: .5*3 - .3*1 - .2*1 = 1.0 > 0  -> only a agrees   -> 3
    #  e3: -.5*.5 - .3*.5 + .2*.8 = -0.24 < 0 -> a, b agree -> (-.5*.5 - .3*.5) / (.5 + .3)
    expected = torch.tensor([(0.5 * 1 + 0.3 * 2) / 0.8, -2.0, 3.0, (-0.5 * 0.5 - 0.3 * 0.5) / 0.8])
    torch.testing.assert_close(out, expected)


def test_ties_trims_to_density_before_election():
    base = {"t": torch.zeros(4)}
    deltas = {"a": [1.0, -2.0, 3.0, -0.5], "b": [2.0, 1.2, -1.0, -0.5], "c": [-1.0, 2.0, -0.9, 0.8]}
    sds = {k: {"t": torch.tensor(v)} for k, v in deltas.items()}
    w = {"a": 0.5, "b": 0.3, "c": 0.2}
    out = mm.merge("ties", sds, w, base, density=0.5)["t"]
    # density 0.5 keeps the 2 largest |delta| of each source (no ties in magnitude here):
    #  a -> [0, -2, 3, 0]   b -> [2, 1.2, 0, 0]   c -> [-1, 2, 0, 0]
    #  e0: .3*2 - .2*1 = 0.4 > 0          -> only b agrees -> 2
    #  e1: -.5*2 + .3*1.2 + .2*2 = -0.24  -> only a agrees -> -2
    #  e2: .5*3 > 0                       -> only a        -> 3
    #  e3: everything trimmed             -> 0 (the base)
    torch.testing.assert_close(out, torch.tensor([2.0, -2.0, 3.0, 0.0]))


def test_dare_is_seeded_and_reproducible():
    base, sds = _sds(3)
    w = {k: 1.0 for k in sds}
    a = mm.merge("dare_ties", sds, w, base, seed=1)
    b = mm.merge("dare_ties", sds, w, base, seed=1)
    c = mm.merge("dare_ties", sds, w, base, seed=2)
    torch.testing.assert_close(a["w"], b["w"])
    assert not torch.equal(a["w"], c["w"])
    # density 1 drops nothing: dare_linear is then task arithmetic
    torch.testing.assert_close(
        mm.merge("dare_linear", sds, w, base, density=1.0)["w"], mm.merge("task_arithmetic", sds, w, base)["w"]
    )


def test_breadcrumbs_density_one_is_task_arithmetic():
    base, sds = _sds(3)
    w = {k: 1.0 for k in sds}
    torch.testing.assert_close(
        mm.merge("breadcrumbs", sds, w, base, density=1.0)["w"], mm.merge("task_arithmetic", sds, w, base)["w"]
    )


def test_slerp_two_sources_endpoints_and_orthogonal_midpoint():
    sds = {"x": {"t": torch.tensor([1.0, 0.0])}, "y": {"t": torch.tensor([0.0, 1.0])}}
    torch.testing.assert_close(mm.merge("slerp", sds, {"x": 1.0, "y": 0.0})["t"], sds["x"]["t"])
    torch.testing.assert_close(mm.merge("slerp", sds, {"x": 0.0, "y": 1.0})["t"], sds["y"]["t"])
    half = 1 / math.sqrt(2)  # on the unit circle halfway between x and y, not the chord midpoint
    torch.testing.assert_close(mm.merge("slerp", sds, {"x": 1.0, "y": 1.0})["t"], torch.tensor([half, half]))
    _, three = _sds(3)
    with pytest.raises(ValueError, match="exactly 2"):
        mm.merge("slerp", three, {k: 1.0 for k in three})


def test_multislerp_and_model_stock_identical_sources_give_that_source():
    base, sds = _sds(1)
    same = {"p": sds["s0"], "q": sds["s0"]}
    for method in ("multislerp", "model_stock"):
        out = mm.merge(method, same, {"p": 0.5, "q": 0.5}, base)
        torch.testing.assert_close(out["w"], sds["s0"]["w"], rtol=1e-4, atol=1e-5)


def test_fisher_simple_by_hand():
    sds = {"x": {"t": torch.tensor([1.0, 0.0])}, "y": {"t": torch.tensor([3.0, 0.0])}}
    out = mm.merge("fisher_simple", sds, {"x": 1.0, "y": 1.0})["t"]
    # importance = theta^2: (1*1 + 9*3) / (1 + 9); all-zero importance -> weighted mean (0)
    torch.testing.assert_close(out, torch.tensor([(1 * 1 + 9 * 3) / 10, 0.0]))


def test_fisher_merges_piece_by_piece_give_the_whole_tensors_numbers(monkeypatch):
    from mu.merge import chunks

    g = torch.Generator().manual_seed(5)
    sds = {
        k: {"e": torch.randn(37, 11, generator=g), "b": torch.randn(5, generator=g), "s": torch.randn((), generator=g)}
        for k in ("x", "y", "z")
    }
    fishers = {k: {n: torch.rand(v.shape, generator=g) for n, v in sd.items()} for k, sd in sds.items()}
    w = {"x": 0.2, "y": 0.5, "z": 0.3}
    whole = {
        m: mm.merge(m, sds, w, **kw) for m, kw in (("fisher_simple", {}), ("fisher_dataset", {"fishers": fishers}))
    }
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 7)  # pieces that cut rows, and a last short piece
    for method, kw in (("fisher_simple", {}), ("fisher_dataset", {"fishers": fishers})):
        pieces = mm.merge(method, sds, w, **kw)
        for key in sds["x"]:
            assert pieces[key].shape == sds["x"][key].shape and torch.equal(pieces[key], whole[method][key]), (
                method,
                key,
            )


def test_fisher_dataset_equal_fisher_is_linear():
    base, sds = _sds(3)
    w = {"s0": 0.2, "s1": 0.3, "s2": 0.5}
    for fill in (0.7, 0.0):  # equal non-zero Fishers, and the all-zero case
        fishers = {k: {n: torch.full_like(v, fill) for n, v in base.items()} for k in sds}
        out = mm.merge("fisher_dataset", sds, w, fishers=fishers)
        lin = mm.merge("linear", sds, w)
        for key in base:
            torch.testing.assert_close(out[key], lin[key])


def test_fisher_dataset_weights_by_fisher():
    sds = {"x": {"t": torch.tensor([1.0])}, "y": {"t": torch.tensor([3.0])}}
    fishers = {"x": {"t": torch.tensor([3.0])}, "y": {"t": torch.tensor([1.0])}}
    out = mm.merge("fisher_dataset", sds, {"x": 0.5, "y": 0.5}, fishers=fishers)["t"]
    torch.testing.assert_close(out, torch.tensor([(3 * 1 + 1 * 3) / 4.0]))
    with pytest.raises(ValueError, match="needs fishers"):
        mm.merge("fisher_dataset", sds, {"x": 0.5, "y": 0.5})
    with pytest.raises(ValueError, match="missing for sources"):
        mm.merge("fisher_dataset", sds, {"x": 0.5, "y": 0.5}, fishers={"x": fishers["x"]})


def test_regmean_single_linear_is_joint_least_squares():
    g = torch.Generator().manual_seed(3)
    w_true = {k: torch.randn(3, 4, generator=g, dtype=torch.float64) for k in ("x", "y")}
    xs = {
        "x": torch.randn(50, 4, generator=g, dtype=torch.float64),
        "y": torch.randn(30, 4, generator=g, dtype=torch.float64)
        * torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64),
    }
    weights = {"x": 0.6, "y": 0.4}
    sds = {k: {"lin.weight": w_true[k], "lin.bias": torch.randn(3, generator=g, dtype=torch.float64)} for k in xs}
    grams = {k: {"lin.weight": xs[k].T @ xs[k] / len(xs[k])} for k in xs}
    out = mm.merge("regmean", sds, weights, grams=grams, alpha=1.0)
    # Closed form, independently: least squares on the stacked, weighted inputs X_i with targets X_i W_i^T.
    scale = {k: math.sqrt(weights[k] / len(xs[k])) for k in xs}
    a = torch.cat([scale[k] * xs[k] for k in xs])
    b = torch.cat([scale[k] * xs[k] @ w_true[k].T for k in xs])
    expected = torch.linalg.lstsq(a, b).solution.T
    torch.testing.assert_close(out["lin.weight"], expected)
    torch.testing.assert_close(out["lin.bias"], 0.6 * sds["x"]["lin.bias"] + 0.4 * sds["y"]["lin.bias"])
    # alpha = 0: per input feature j, the mean of column j weighted by w_i * G_i[j, j]
    diag = mm.merge("regmean", sds, weights, grams=grams, alpha=0.0)["lin.weight"]
    d = {k: torch.diagonal(grams[k]["lin.weight"]) * weights[k] for k in xs}
    torch.testing.assert_close(diag, (d["x"] * w_true["x"] + d["y"] * w_true["y"]) / (d["x"] + d["y"]))


def test_regmean_singular_gram_is_a_clear_error():
    sds = {k: {"lin.weight": torch.randn(2, 3)} for k in ("x", "y")}
    zero = {k: {"lin.weight": torch.zeros(3, 3)} for k in sds}
    with pytest.raises(ValueError, match="singular"):
        mm.merge("regmean", sds, {"x": 1.0, "y": 1.0}, grams=zero)


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"s0": -0.1, "s1": 1.0}, "non-negative"),
        ({"s0": float("nan"), "s1": 1.0}, "finite"),
        ({"s0": float("inf"), "s1": 1.0}, "finite"),
        ({"s0": 0.0, "s1": 0.0}, "sum to zero"),
        ({"s0": 1.0}, "missing weights"),
        ({"s0": 1.0, "s1": 1.0, "zz": 1.0}, "without a source"),
    ],
)
def test_bad_weights(weights, match):
    _, sds = _sds(2)
    with pytest.raises(ValueError, match=match):
        mm.merge("linear", sds, weights)


def test_bad_method_base_shapes_keys_knobs():
    base, sds = _sds(2)
    w = {k: 1.0 for k in sds}
    with pytest.raises(ValueError, match="valid: .*'linear'.*'ties'"):
        mm.merge("average_of_everything", sds, w)
    with pytest.raises(ValueError, match="needs the base"):
        mm.merge("ties", sds, w)
    bad = {**sds, "s1": {**sds["s1"], "w": torch.zeros(5, 3)}}
    with pytest.raises(ValueError, match=r"tensor w differs in shape.*s0.*s1"):
        mm.merge("linear", bad, w)
    extra = {**sds, "s1": {**sds["s1"], "extra": torch.zeros(1)}}
    with pytest.raises(ValueError, match="different tensors.*extra"):
        mm.merge("linear", extra, w)
    with pytest.raises(ValueError, match=r"does not take \['gamma'\]"):
        mm.merge("ties", sds, w, base, gamma=0.1)
    ints = {k: {**sd, "ids": torch.arange(3)} for k, sd in sds.items()}
    with pytest.raises(ValueError, match="only floating"):
        mm.merge("linear", ints, w)


def test_head_and_embeddings_kept_from_one_source():
    g = torch.Generator().manual_seed(0)
    names = ["classifier.out_proj.weight", "roberta.embeddings.word_embeddings.weight", "roberta.encoder.x"]
    sds = {k: {n: torch.randn(3, 2, generator=g) for n in names} for k in ("a", "b")}
    w = {"a": 0.5, "b": 0.5}
    merged = mm.merge("linear", sds, w)
    kept = mm.merge("linear", sds, w, head="b", embeddings="a")
    assert torch.equal(kept["classifier.out_proj.weight"], sds["b"]["classifier.out_proj.weight"])
    assert torch.equal(
        kept["roberta.embeddings.word_embeddings.weight"], sds["a"]["roberta.embeddings.word_embeddings.weight"]
    )
    torch.testing.assert_close(kept["roberta.encoder.x"], merged["roberta.encoder.x"])
    torch.testing.assert_close(
        merged["classifier.out_proj.weight"],
        (sds["a"]["classifier.out_proj.weight"] + sds["b"]["classifier.out_proj.weight"]) / 2,
    )
    with pytest.raises(ValueError, match="head='zz'.*sources"):
        mm.merge("linear", sds, w, head="zz")


def test_knobs_for_keeps_what_the_method_takes_and_refuses_the_rest():
    unset = {"density": None, "lambda_": None, "alpha": None, "gamma": None}
    assert mm.knobs_for("linear", **unset) == {}  # None = the method's default
    assert mm.knobs_for("ties", **{**unset, "density": 0.3, "lambda_": 2.0}) == {"density": 0.3, "lambda_": 2.0}
    assert mm.knobs_for("regmean", **{**unset, "alpha": 0.5}) == {"alpha": 0.5}
    with pytest.raises(ValueError, match=r"'linear' does not take \['density'\]"):
        mm.knobs_for("linear", **{**unset, "density": 0.3})  # would silently do nothing
    assert set(mm.knobs("breadcrumbs")) == {"density", "gamma", "lambda_", "rescale"}


def test_label_names_non_default_knobs():
    assert mm.label("ties") == "ties"
    assert mm.label("ties", density=mm.knobs("ties")["density"]) == "ties"
    assert mm.label("ties", density=0.3, lambda_=2.0) == "ties-density0.3-lambda2.0"
    with pytest.raises(ValueError, match="does not take"):
        mm.label("linear", alpha=0.5)
