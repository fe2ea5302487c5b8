"""``python -m bench.synthetic``: merge kernels against their own floor on a mid-size synthetic model, in seconds.

A quick check of a kernel change without ``make bench`` (278M-parameter checkpoints, ~1 h): a base
and up to 10 sources of a few 768 × 3072 / 3072 × 768 matrices, their biases and a 30000 × 768
embedding (float32, ~33M parameters, 130 MB per file), written once under
``cache/bench/synthetic/``; source i = base + 0.01 · fresh noise (every entry moves). Per method and
N, in this process: ``mu.merge.merge`` on lazily read inputs (the fastest of ``--repeats``) (as ``merge_models`` reads them) plus
writing the result with safetensors, against the method's own floor (``bench.floors``): reading
the same input files (fastest of 2 passes), writing one model, and the method's unavoidable compute
measured per distinct shape. Prints a Markdown table; ``--out`` writes the figures as JSON and
``--before`` (such a JSON file) adds the earlier run's figures beside them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bench import floors
from mu import paths

LAYERS = 2
HIDDEN, INTERMEDIATE, VOCAB = 768, 3072, 30000
DELTA = 0.01
METHODS = (
    "linear",
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "sce",
    "ram",
    "ramplus_tl",
    "karcher",
    "model_stock",
    "multislerp",
    "tsv_m",
    "iso_c",
    "iso_cts",
    "slerp",
    "nuslerp",
    "nearswap",
    "arcee_fusion",
)
PAIRWISE = {"slerp", "nuslerp", "nearswap", "arcee_fusion"}


def shapes(layers: int = LAYERS) -> dict[str, tuple[int, ...]]:
    """The synthetic model's tensors: an embedding, then per layer two matrices and their biases."""
    out: dict[str, tuple[int, ...]] = {
        "roberta.embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
        "roberta.embeddings.LayerNorm.weight": (HIDDEN,),
    }
    for i in range(layers):
        p = f"roberta.encoder.layer.{i}."
        out |= {
            p + "intermediate.dense.weight": (INTERMEDIATE, HIDDEN),
            p + "intermediate.dense.bias": (INTERMEDIATE,),
            p + "output.dense.weight": (HIDDEN, INTERMEDIATE),
            p + "output.dense.bias": (HIDDEN,),
        }
    return out


def build(n: int, layers: int = LAYERS) -> tuple[Path, dict[str, Path]]:
    """(base file, {source name: file}), generated once into ``cache/bench/synthetic/``."""
    folder = paths.cache_dir("bench", "synthetic", f"l{layers}")
    folder.mkdir(parents=True, exist_ok=True)
    base_file = folder / "base.safetensors"
    g = torch.Generator().manual_seed(0)
    base = None
    if not base_file.is_file():
        base = {k: 0.05 * torch.randn(s, generator=g) for k, s in shapes(layers).items()}
        save_file(base, str(base_file))
    files = {}
    for i in range(n):
        f = folder / f"s{i}.safetensors"
        if not f.is_file():
            base = base if base is not None else load_file(str(base_file))
            gi = torch.Generator().manual_seed(1000 + i)
            save_file({k: v + DELTA * torch.randn(v.shape, generator=gi) for k, v in base.items()}, str(f))
        files[f"s{i}"] = f
    return base_file, files


def read_s(file: Path, passes: int = 2) -> float:
    """Fastest of ``passes`` reads of ``file`` into this process's memory (safetensors, then a copy)."""
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        state = {k: v.clone() for k, v in load_file(str(file)).items()}
        best = min(best, time.perf_counter() - started)
        del state
    return best


def merge_s(method: str, files: Mapping[str, Path], base_file: Path, scratch: Path) -> float:
    """Seconds of one ``mu.merge.merge`` (lazy inputs, CPU) plus writing its result."""
    from mu.merge import lazy, registry

    sds = {k: lazy.LazyStateDict.from_file(f) for k, f in files.items()}
    raw = {k: 1.0 / (i + 1) for i, k in enumerate(files)}
    w = {k: v / sum(raw.values()) for k, v in raw.items()}
    base = lazy.LazyStateDict.from_file(base_file)
    started = time.perf_counter()
    out = registry.merge(method, sds, w, base, device="cpu")
    save_file(out, str(scratch / "out.safetensors"))
    return time.perf_counter() - started


def run(methods: list[str], ns: list[int], layers: int = LAYERS, repeats: int = 1) -> dict[str, Any]:
    from mu.merge import catalog

    base_file, files = build(max(ns), layers)
    shp = shapes(layers)
    reads = {k: read_s(f) for k, f in {"<base>": base_file, **files}.items()}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        save_file(load_file(str(base_file)), str(Path(tmp) / "w.safetensors"))
        write = time.perf_counter() - started
        compute = floors.measure(shp)
        rows = []
        for method in methods:
            for n in [2] if method in PAIRWISE else ns:
                chosen = dict(list(files.items())[:n])
                io = sum(reads[k] for k in chosen) + (reads["<base>"] if method in catalog.USES_BASE else 0) + write
                t = min(merge_s(method, chosen, base_file, Path(tmp)) for _ in range(repeats))
                floor = floors.of(method, n, io, shp, compute)
                rows.append(
                    {
                        "method": method,
                        "n": n,
                        "s": t,
                        "io_floor_s": io,
                        **floor,
                        "over_own_floor": t / floor["own_floor_s"],
                        "over_io_floor": t / io,
                    }
                )
                print(
                    f"{method} N={n}: {t:.2f} s, floor {floor['own_floor_s']:.2f} s ({floor['floor_kind']})", flush=True
                )
    return {
        "threads": torch.get_num_threads(),
        "layers": layers,
        "params": sum(torch.Size(s).numel() for s in shp.values()),
        "floors": floors.seconds_table(compute),
        "rows": rows,
    }


def markdown(result: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> str:
    old = {(r["method"], r["n"]): r for r in (before or {}).get("rows", [])}
    head = "| method | N | floor kind | own floor s | s | s / own floor | s / I/O floor |"
    sep = "|---|---|---|---|---|---|---|"
    if old:
        head = (
            "| method | N | floor kind | own floor s | before s | before / floor | after s | after / floor | speedup |"
        )
        sep = "|---|---|---|---|---|---|---|---|---|"
    lines = [head, sep]
    for r in result["rows"]:
        b = old.get((r["method"], r["n"]))
        if old:
            bs = f"{b['s']:.2f} | {b['s'] / r['own_floor_s']:.2f}" if b else "— | —"
            sp = f"{b['s'] / r['s']:.1f}×" if b else "—"
            lines.append(
                f"| {r['method']} | {r['n']} | {r['floor_kind']} | {r['own_floor_s']:.2f} | {bs} | "
                f"{r['s']:.2f} | {r['over_own_floor']:.2f} | {sp} |"
            )
        else:
            lines.append(
                f"| {r['method']} | {r['n']} | {r['floor_kind']} | {r['own_floor_s']:.2f} | {r['s']:.2f} | "
                f"{r['over_own_floor']:.2f} | {r['over_io_floor']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.synthetic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--ns", type=int, nargs="+", default=[2, 5, 10])
    p.add_argument("--layers", type=int, default=LAYERS)
    p.add_argument("--repeats", type=int, default=1, help="merges per method and N (the fastest counts)")
    p.add_argument("--out", help="write the figures here (JSON)")
    p.add_argument("--before", help="an earlier --out file: its times beside these")
    a = p.parse_args(argv)
    result = run(a.methods, a.ns, a.layers, a.repeats)
    if a.out:
        paths.write_json(a.out, result)
    before = json.loads(Path(a.before).read_text()) if a.before else None
    print(markdown(result, before))


if __name__ == "__main__":
    main()
