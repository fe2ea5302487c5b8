"""Chunked, device-aware merging (``mu.merge.chunks``, ``mu.merge.taskvec``, row reads in ``mu.merge.lazy``):
results independent of the chunk size, equal to mergekit's, and the same on every device."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from mu import merge as mm
from mu.merge import catalog, chunks, lazy, registry, taskvec

STREAMED = sorted(catalog.STREAMED - set(catalog.STATISTICS))  # the data-free ones: no statistics to give


def _sds(n: int = 3, seed: int = 0, quantum: float | None = None) -> tuple[dict, dict]:
    """A base and n sources (a 2-D, a 1-D and a 0-d tensor); ``quantum`` rounds the deltas so ties abound."""
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(37, 11, generator=g), "b": torch.randn(29, generator=g), "s": torch.randn((), generator=g)}
    sds = {}
    for i in range(n):
        sd = {}
        for k, v in base.items():
            d = 0.1 * torch.randn(v.shape, generator=g)
            sd[k] = base[k] + (torch.round(d / quantum) * quantum if quantum else d)
        sds[f"s{i}"] = sd
    return base, sds


def test_lazy_reads_only_the_rows_asked_for(tmp_path):
    tensors = {
        "m": torch.randn(13, 5),
        "h": torch.randn(7, 3).to(torch.bfloat16),
        "v": torch.arange(9.0),
        "z": torch.tensor(2.5),
        "e": torch.empty(0, 4),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"))
    sd = lazy.LazyStateDict.from_file(tmp_path / "t.safetensors")
    assert set(sd) == set(tensors) and sd.meta()["h"] == ((7, 3), torch.bfloat16)
    reference = load_file(str(tmp_path / "t.safetensors"))
    for key, value in reference.items():
        assert torch.equal(sd[key], value)
    assert torch.equal(sd.read("m", 4, 9), tensors["m"][4:9])
    assert torch.equal(lazy.rows(sd, "h", 2, 3), tensors["h"][2:3])
    assert torch.equal(lazy.rows(lazy.select(sd, ["v"]), "v", 5, 100), tensors["v"][5:])
    assert lazy.rows(sd, "e", 0, 0).shape == (0, 4)
    assert torch.equal(lazy.rows(tensors, "m", 1, 2), tensors["m"][1:2])  # in-memory state dicts slice alike
    only = lazy.select(sd, ["m"])
    assert (
        "m" in only and "v" not in only and list(only) == ["m"] and lazy.meta(only) == {"m": ((13, 5), torch.float32)}
    )
    with pytest.raises(KeyError):
        lazy.rows(only, "v", 0, 1)
    with pytest.raises(ValueError, match="scalar"):
        sd.read("z", 0, 1)


def test_spans_cover_each_tensor_in_whole_rows():
    assert chunks.spans((10, 4), 8) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert chunks.spans((3, 100), 8) == [(0, 1), (1, 2), (2, 3)]  # at least one row
    assert chunks.spans((), 8) == [None] and chunks.spans((0, 5), 8) == [(0, 0)]
    assert chunks.flat((10, 4), (2, 4)) == slice(8, 16)
    with pytest.raises(ValueError, match="chunk_elements"):
        chunks.check_chunk_elements(0)


@pytest.mark.parametrize("method", STREAMED)
def test_streamed_methods_do_not_depend_on_the_chunk_size(method):
    """Bit for bit for the elementwise methods, with ties at the magnitude thresholds (rounded deltas) and tie
    windows spanning chunks; to float32 rounding where whole-tensor norms are summed chunk by chunk."""
    base, sds = _sds(2 if method in catalog.PAIRWISE else 4, seed=3, quantum=0.05)
    w = {"s0": 0.4, "s1": 0.3, "s2": 0.2, "s3": 0.1}
    w = {k: w[k] for k in sds}
    fn = registry.METHODS[method]
    whole = fn(sds, w, base, device="cpu", chunk_elements=10**9)
    for step in (1, 7, 64):
        part = fn(sds, w, base, device="cpu", chunk_elements=step)
        for key in base:
            if method in ("model_stock", "multislerp", "karcher", "nuslerp", "sce"):
                torch.testing.assert_close(part[key], whole[key], rtol=1e-6, atol=1e-6)
            else:
                assert torch.equal(part[key], whole[key]), (method, step, key)


@pytest.mark.parametrize(
    "method,params,with_base",
    [
        ("model_stock", {}, True),
        ("model_stock", {"filter_wise": True}, True),
        ("multislerp", {}, True),
        ("multislerp", {}, False),
    ],
)
def test_geometric_methods_equal_mergekit(method, params, with_base):
    from mergekit.merge_methods import get, merge_state_dicts

    base, sds = _sds(3, seed=7)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    mine = registry.METHODS[method](sds, w, base if with_base else None, device="cpu", chunk_elements=16, **params)
    mk_params = dict(params) if method == "model_stock" else {"weight": w, "normalize_weights": True}
    models = {**sds, "B": base} if with_base else dict(sds)
    ref = merge_state_dicts(models, get(method), parameters=mk_params, base="B" if with_base else None)
    for key in base:
        torch.testing.assert_close(mine[key], ref[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("colinear", [False, True])
def test_slerp_equals_mergekit(t, colinear):
    """mergekit's slerp with the first source as its ``base`` and ``t`` = the second's weight; ``colinear``: the
    second source is the first scaled (+ a tiny perturbation), |cos| > 0.9995, mergekit's fallback to lerp."""
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(2, seed=11)
    sds = {"s0": base, "s1": {k: 10 * (v - base[k]) for k, v in sds["s1"].items()}}  # nearly orthogonal (2-D, 1-D)
    if colinear:
        sds["s1"] = {k: 2.5 * v + 1e-4 * sds["s1"][k] for k, v in base.items()}
    w = {"s0": 1 - t, "s1": t}
    ref = merge_state_dicts(sds, "slerp", base="s0", parameters={"t": t})
    for step in (1, 7, 64):
        mine = registry.METHODS["slerp"](sds, w, device="cpu", chunk_elements=step)
        for key in base:
            torch.testing.assert_close(mine[key], ref[key], rtol=1e-5, atol=1e-6)
    if colinear and 0 < t < 1:  # the linear fallback, not the spherical formula
        for key in ("w", "b"):
            torch.testing.assert_close(mine[key], (1 - t) * sds["s0"][key] + t * sds["s1"][key], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="exactly 2"):
        registry.METHODS["slerp"]({"a": base, **sds}, {"a": 1.0, **w}, device="cpu")


def test_slerp_wide_rows_do_not_depend_on_the_chunk_size():
    """Rows of 1000 elements: the per-row dot products are the same whether a chunk holds 1, 7 or all 40 rows."""
    g = torch.Generator().manual_seed(2)
    sds = {k: {"w": torch.randn(40, 1000, generator=g)} for k in ("a", "b")}
    merged = [
        registry.METHODS["slerp"](sds, {"a": 0.3, "b": 0.7}, device="cpu", chunk_elements=step)["w"]
        for step in (1000, 7000, 10**9)
    ]
    assert all(torch.equal(m, merged[0]) for m in merged[1:])


@pytest.mark.parametrize(
    "name,ours,theirs",
    [
        ("task_arithmetic", {"lambda_": 0.7}, {"lambda": 0.7}),
        ("ties", {"density": 0.3, "rescale": True}, {"density": 0.3, "rescale": True}),
        ("breadcrumbs", {"density": 0.6, "gamma": 0.1}, {"density": 0.6, "gamma": 0.1}),
        (
            "breadcrumbs",
            {"density": 0.6, "gamma": 0.1, "rescale": True},
            {"density": 0.6, "gamma": 0.1, "rescale": True},
        ),
    ],
)
def test_task_vectors_equal_mergekit(name, ours, theirs):
    from mergekit.merge_methods import merge_state_dicts

    base, sds = _sds(3, seed=5)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    mine = registry.METHODS[name](sds, w, base, device="cpu", chunk_elements=16, **ours)
    mk_name = {"breadcrumbs": "breadcrumbs"}.get(name, name)
    ref = merge_state_dicts(
        {**sds, "B": base}, mk_name, base="B", parameters={"weight": w, "normalize": True, **theirs}
    )
    for key in base:
        torch.testing.assert_close(mine[key], ref[key], rtol=0, atol=1e-6)


def test_dare_keeps_a_density_fraction_rescaled_to_the_l1_norm_independent_of_source_order():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(200, 100, generator=g)
    zero = {"d": torch.zeros_like(delta)}
    kept = taskvec.task_vectors(
        {"a": {"d": delta}},
        {"a": 1.0},
        zero,
        sparsify="random",
        density=0.3,
        rescale=True,
        device="cpu",
        chunk_elements=333,
    )["d"]
    assert abs(float((kept != 0).float().mean()) - 0.3) < 0.01
    torch.testing.assert_close(kept.abs().sum(), delta.abs().sum(), rtol=1e-4, atol=0)
    assert torch.equal(kept != 0, (kept / delta) != 0) and torch.allclose(
        kept[kept != 0] / delta[kept != 0], kept[kept != 0][:1] / delta[kept != 0][:1]
    )
    base, sds = _sds(3, seed=9)
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    forward = mm.merge("dare_ties", sds, w, base, device="cpu")
    backward = mm.merge("dare_ties", dict(reversed(sds.items())), dict(reversed(w.items())), base, device="cpu")
    for key in base:
        torch.testing.assert_close(forward[key], backward[key], rtol=0, atol=1e-6)


def test_device_is_checked_where_it_enters():
    assert chunks.device("cpu") == torch.device("cpu")
    assert chunks.device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "no-such-device", "meta"):
        with pytest.raises(ValueError, match="device"):
            chunks.device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            chunks.device("cuda")
    base, sds = _sds(2)
    with pytest.raises(ValueError, match="device"):
        mm.merge("linear", sds, {"s0": 0.5, "s1": 0.5}, device="tpu")
    assert "device" not in registry.knobs("ties") and "chunk_elements" not in registry.knobs("linear")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("method", sorted(set(registry.METHODS) - set(catalog.STATISTICS)))
def test_gpu_merge_equals_cpu(method):
    base, sds = _sds(2 if method in catalog.PAIRWISE else 3, seed=4)
    w = {k: 1.0 / len(sds) for k in sds}
    cpu = mm.merge(method, sds, w, base if method in catalog.USES_BASE else None, device="cpu")
    gpu = mm.merge(method, sds, w, base if method in catalog.USES_BASE else None, device="cuda")
    for key in cpu:
        assert gpu[key].device.type == "cpu"
        torch.testing.assert_close(gpu[key], cpu[key], rtol=1e-5, atol=1e-6)


def test_compute_bound_steps_run_on_the_free_cores_and_small_ones_on_one_thread(monkeypatch):
    """``chunks.compute_threads``: ``mu.threads.count()`` threads for large work (inside ``single_threaded`` too),
    one thread below ``COMPUTE_MIN_WORK``; the previous count comes back after either."""
    from mu import threads

    cpu = torch.device("cpu")
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "count", lambda *args, **kwargs: 3)
    with chunks.compute_threads(cpu, chunks.COMPUTE_MIN_WORK) as n:
        assert n == 3 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with chunks.single_threaded(cpu):
        with chunks.compute_threads(cpu, chunks.COMPUTE_MIN_WORK - 1) as n:
            assert n == 1 == torch.get_num_threads()
        with chunks.compute_threads(cpu, 1 << 30):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
