"""The measured side: ``python -m bench.worker TASK ARGS.json RESULT.json`` runs one task in a fresh process.

Each task times its own operation (``op_s`` and friends, ``time.perf_counter``)
and writes the figures to RESULT.json; the parent (``bench.proc``) adds the
process's wall time and peak RSS. Imports happen inside the tasks so each
process loads only what it measures.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def merge(args: Mapping[str, Any]) -> dict[str, Any]:
    """``mu.merge.merge_models`` once (the output folder must not exist yet: no skip)."""
    from mu import merge as mu_merge
    from mu import models  # noqa: F401  (imported before the timer: op_s is the merge alone)

    if Path(args["out_dir"]).exists():
        raise ValueError(f"merge output {args['out_dir']} exists; the benchmark needs a fresh folder")
    started = time.perf_counter()
    out = mu_merge.merge_models(
        args["method"],
        args["sources"],
        args["weights"],
        args["out_dir"],
        base_model=args.get("base_model"),
        device=args.get("device"),
    )
    return {
        "op_s": time.perf_counter() - started,
        "device": json.loads((Path(out) / "merge_details.json").read_text())["device"],
    }


def floor(args: Mapping[str, Any]) -> dict[str, Any]:
    """Read each weights file into memory with safetensors (``load_file`` maps the file, ``clone``
    copies the bytes into this process): a first pass, then ``warm_passes`` more with the page
    cache warm, each followed by a pass that only reads every byte through the mapping
    (``touch_s``, no copy); per file the fastest warm pass counts (a 2-core machine shared with
    others is noisy). Then sha256 the model folders as ``mu`` does for provenance, and write one
    model's tensors once (``write_s``)."""
    from safetensors.torch import load_file, save_file

    from mu import report

    files: dict[str, str] = dict(args["files"])
    out: dict[str, Any] = {"bytes": {k: os.path.getsize(f) for k, f in files.items()}}
    passes = [("first_read_s", False)] + [("warm_read_s", False), ("touch_s", True)] * args["warm_passes"]
    for label, touch in passes:
        out.setdefault(label, {})
        for name, file in files.items():
            started = time.perf_counter()
            state = load_file(file)  # memory-mapped: nothing is read until a tensor is used
            if touch:
                for v in state.values():
                    v.sum()  # every byte read once through the mapping, no copy
            else:
                state = {k: v.clone() for k, v in state.items()}  # the bytes, in this process's memory
            elapsed = time.perf_counter() - started
            out[label][name] = min(elapsed, out[label].get(name, elapsed))
            del state
    out["hash_s"] = {}
    for name, folder in args.get("hash_folders", {}).items():
        started = time.perf_counter()
        report.sha256(folder)
        out["hash_s"][name] = time.perf_counter() - started
    state = load_file(next(iter(files.values())))
    with tempfile.TemporaryDirectory(dir=args["scratch"]) as tmp:
        started = time.perf_counter()
        save_file(state, str(Path(tmp) / "model.safetensors"))
        out["write_s"] = time.perf_counter() - started
    return out


def compute_floor(args: Mapping[str, Any]) -> dict[str, Any]:
    """The compute part of each method's own floor (``bench.floors``): one selection and one SVD per
    distinct shape of the model folder ``args["model"]``, timed on random data of that shape."""
    from bench import floors

    shapes = floors.model_shapes(args["model"])
    started = time.perf_counter()
    measured = floors.measure(
        shapes, repeats=args.get("repeats", floors.REPEATS), budget_s=args.get("budget_s", floors.BUDGET_S)
    )
    return {"op_s": time.perf_counter() - started, "shapes": {k: list(v) for k, v in shapes.items()}, **measured}


def evaluate(args: Mapping[str, Any]) -> dict[str, Any]:
    """``mu.evaluate.logits`` on each test set (empty cache, smallest first), then the naive loop on the largest.

    The model's sha256 (``mu.evaluate.model_fingerprint``, memoised per process) is
    timed once on its own (``fingerprint_s``) before the timed calls.
    """
    import numpy as np

    from mu import evaluate as mu_evaluate

    warm_up(args["model"])
    started = time.perf_counter()
    mu_evaluate.model_fingerprint(args["model"])
    out: dict[str, Any] = {"fingerprint_s": time.perf_counter() - started, "mu_s": {}}
    sets = sorted((int(n), folder) for n, folder in args["data"].items())
    for n, folder in sets:
        started = time.perf_counter()
        mu_logits, _ = mu_evaluate.logits(
            args["model"],
            args["locale"],
            "test",
            data=folder,
            batch_size=args["batch_size"],
            max_seq_length=args["max_seq_length"],
        )
        out["mu_s"][n] = time.perf_counter() - started
        if len(mu_logits) != n:
            raise ValueError(f"test set {folder} has {len(mu_logits)} utterances, expected {n}")
    n, folder = sets[-1]
    naive_logits, timing = naive_loop(
        args["model"], args["locale"], folder, batch_size=args["naive_batch_size"], max_length=args["max_seq_length"]
    )
    out.update(timing, n=n)
    out["argmax_agreement"] = float(np.mean(naive_logits.argmax(1) == mu_logits.argmax(1)))
    out["max_abs_logit_diff"] = float(np.abs(naive_logits - mu_logits).max())
    out["tokens"] = token_stats(args["model"], args["locale"], folder, args["max_seq_length"])
    return out


def warm_up(model_dir: str) -> None:
    """Untimed: import the model and tokenizer code, read the weights once, run one forward,
    so neither loop timed after it pays imports, a cold page cache or first-call kernel setup."""
    import torch

    from mu import models

    model, tokenizer = models.load_classifier(model_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.inference_mode():
        model.to(device)(**tokenizer(["warm up"], return_tensors="pt").to(device))


def naive_loop(
    model_dir: str, locale: str, data_dir: str, *, batch_size: int, max_length: int
) -> tuple[Any, dict[str, float]]:
    """The textbook loop: pad every utterance to ``max_length``, batches in file order, no sorting
    (on the device ``mu.evaluate`` uses: a GPU if there is one)."""
    import numpy as np
    import torch

    from mu import data, models

    timing: dict[str, float] = {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as mu.evaluate chooses
    started = time.perf_counter()
    model, tokenizer = models.load_classifier(model_dir)
    model.to(device)
    timing["naive_load_s"] = time.perf_counter() - started
    texts = list(data.load_split(locale, "test", data_dir)["text"])
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    timing["naive_tokenize_s"] = time.perf_counter() - started - timing["naive_load_s"]
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            chunks.append(
                model(
                    input_ids=enc["input_ids"][i : i + batch_size].to(device),
                    attention_mask=enc["attention_mask"][i : i + batch_size].to(device),
                )
                .logits.float()
                .cpu()
                .numpy()
            )
    timing["naive_s"] = time.perf_counter() - started
    timing["naive_forward_s"] = timing["naive_s"] - timing["naive_load_s"] - timing["naive_tokenize_s"]
    return np.concatenate(chunks), timing


def token_stats(model_dir: str, locale: str, data_dir: str, max_length: int) -> dict[str, float]:
    """Token counts of the test utterances (with <s> </s>): mean, 95th percentile, max."""
    import numpy as np
    from transformers import AutoTokenizer

    from mu import data

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = list(data.load_split(locale, "test", data_dir)["text"])
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]])
    return {
        "mean": float(lengths.mean()),
        "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "padded_to": max_length,
    }


def ensemble(args: Mapping[str, Any]) -> dict[str, Any]:
    """K sources on the target: forwards recomputed (``compute=True`` on an empty cache) or cached only."""
    from mu import ensemble as mu_ensemble
    from mu import ensemble_eval as mu_ensemble_eval
    from mu import evaluate, models  # noqa: F401  (imported before the timer)

    if args["compute"]:
        warm_up(str(models.source_path(next(iter(args["weights"])), args["models_dir"])))
    common = {"models_dir": args["models_dir"], "data": args["data"], "max_seq_length": args["max_seq_length"]}
    started = time.perf_counter()
    if args["compute"]:
        logits, _ = mu_ensemble.source_logits(
            args["target"], list(args["weights"]), compute=True, batch_size=args["batch_size"], **common
        )
        pred = mu_ensemble.combine(args["method"], logits, args["weights"])
        return {"op_s": time.perf_counter() - started, "n": len(pred)}
    metrics = mu_ensemble_eval.evaluate_ensemble(args["method"], args["target"], args["weights"], **common)
    op = time.perf_counter() - started
    logits, _ = mu_ensemble.source_logits(args["target"], list(args["weights"]), **common)
    started = time.perf_counter()
    mu_ensemble.combine(args["method"], logits, args["weights"])
    return {"op_s": op, "combine_s": time.perf_counter() - started, "n": int(metrics["n"])}


TASKS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "merge": merge,
    "floor": floor,
    "compute_floor": compute_floor,
    "evaluate": evaluate,
    "ensemble": ensemble,
}


def main(argv: list[str]) -> None:
    from mu import paths

    if len(argv) != 3 or argv[0] not in TASKS:
        raise SystemExit(f"usage: python -m bench.worker TASK ARGS.json RESULT.json; tasks: {list(TASKS)}")
    task, args_file, result_file = argv
    paths.write_json(result_file, TASKS[task](paths.read_json(args_file)))


if __name__ == "__main__":
    main(sys.argv[1:])
