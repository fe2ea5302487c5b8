"""The one chunk loop (``mu.merge.stream``): no kernel reads or iterates chunks itself, each method's
``apply`` is a pure function of its pieces, and a merge streamed from disk equals the one in memory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mu import merge as mm
from mu.merge import catalog, lazy, stream

MERGE = Path(mm.__file__).parent
LOOP_ONLY = re.compile(r"chunks\.(read|spans|flat)\(|lazy\.(rows|select)\(|\bfor span in\b")


def test_only_the_loop_reads_and_iterates_chunks():
    """Reading a slice of a source, the spans of a tensor and the loop over them live in stream.py alone."""
    found = [
        f"{f.name}:{i}: {line.strip()}"
        for f in sorted(MERGE.glob("*.py"))
        if f.name not in ("stream.py", "chunks.py", "lazy.py")
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
        if LOOP_ONLY.search(line)
    ]
    assert not found, found


@pytest.mark.parametrize("method", catalog.NAMES)
def test_every_method_points_to_functions_the_loop_runs(method):
    spec = catalog.get(method)
    k = stream.kernel(spec)
    assert callable(k.apply) and (spec.prepare is None) == (k.prepare is None)
    assert (spec.setup is None) == (k.setup is None)
    assert spec.floor in ("io", "select", "svd") and (not spec.floor_once or spec.floor == "svd")


def test_widen_variants_are_one_kernel():
    a, b = catalog.get("widen"), catalog.get("widen_rowwise")
    assert (a.apply, a.prepare, a.setup) == (b.apply, b.prepare, b.setup)
    assert {a.fixed["variant"], b.fixed["variant"]} == {"columns", "rowwise"}


def _linears(n: int, seed: int = 0) -> tuple[torch.nn.Linear, list[torch.nn.Linear]]:
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.Linear(12, 7)
    with torch.no_grad():
        base.weight.copy_(torch.randn(7, 12, generator=g))
        base.bias.copy_(torch.randn(7, generator=g))
    tuned = []
    for _ in range(n):
        lin = torch.nn.Linear(12, 7)
        with torch.no_grad():
            lin.weight.copy_(base.weight + 0.1 * torch.randn(7, 12, generator=g))
            lin.bias.copy_(base.bias + 0.1 * torch.randn(7, generator=g))
        tuned.append(lin)
    return base, tuned


ELEMENTWISE = {
    "linear": lambda xs, b, w: sum(wi * x for wi, x in zip(w, xs)),
    "task_arithmetic": lambda xs, b, w: b + sum(wi * (x - b) for wi, x in zip(w, xs)),
    "fisher_simple": lambda xs, b, w: (
        sum(wi * (x.square() + 1e-12) * x for wi, x in zip(w, xs))
        / sum(wi * (x.square() + 1e-12) for wi, x in zip(w, xs))
    ),
}


@pytest.mark.parametrize("method", sorted(ELEMENTWISE))
def test_apply_is_a_pure_function_of_an_nn_linear_s_pieces(method):
    """FusionBench style: ``apply`` on the (N, m) block of fine-tuned ``nn.Linear`` weights, called directly,
    is the method's formula, and the loop around it gives the same tensor."""
    base, tuned = _linears(3)
    w = [0.5, 0.3, 0.2]
    spec = catalog.get(method)
    k = stream.kernel(spec)
    knobs = {**spec.defaults(), **spec.fixed}
    if k.setup is not None:
        knobs.update(k.setup(["a", "b", "c"], w, {"weight": base.weight}, **knobs))
    xs = torch.stack([lin.weight.detach().reshape(-1) for lin in tuned])
    b = base.weight.detach().reshape(-1)
    at = stream.At(tuple(base.weight.shape))
    got = k.apply(xs.clone(), b.clone(), w, at=at, **knobs)
    want = ELEMENTWISE[method]([lin.weight.detach().reshape(-1) for lin in tuned], b, w)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    looped = stream.tensor(method, [lin.weight.detach() for lin in tuned], base.weight.detach(), w, chunk_elements=5)
    torch.testing.assert_close(looped.reshape(-1), got, rtol=0, atol=0)


STREAMED_CHECK = ("linear", "ties", "dare_ties", "della", "sce", "karcher", "model_stock", "ram", "tsv_m", "widen")


@pytest.mark.parametrize("method", STREAMED_CHECK)
def test_a_streamed_merge_of_a_small_model_equals_the_in_memory_merge(method, tmp_path):
    """Sources and base written as safetensors and read lazily in small chunks give the same tensors as the
    same merge of the state dicts in memory."""
    g = torch.Generator().manual_seed(7)
    shapes = {
        "roberta.embeddings.word_embeddings.weight": (50, 8),
        "layer.0.dense.weight": (16, 8),
        "layer.0.dense.bias": (16,),
        "layer.0.LayerNorm.weight": (8,),
        "classifier.out_proj.weight": (3, 16),
    }
    base = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    sds = {f"s{i}": {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in base.items()} for i in range(3)}
    w = {"s0": 0.5, "s1": 0.3, "s2": 0.2}
    for name, sd in {**sds, "base": base}.items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
    disk = {name: lazy.LazyStateDict.from_file(tmp_path / f"{name}.safetensors") for name in sds}
    disk_base = lazy.LazyStateDict.from_file(tmp_path / "base.safetensors")
    use_base = catalog.get(method).base != "unused"
    memory = mm.merge(method, sds, w, base if use_base else None, device="cpu")
    streamed = mm.METHODS[method](disk, w, disk_base if use_base else None, device="cpu", chunk_elements=24)
    for key in shapes:
        if method in ("karcher", "model_stock", "sce"):  # whole-tensor sums over other chunkings
            torch.testing.assert_close(streamed[key], memory[key], rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(streamed[key], memory[key]), (method, key)
