"""``python -m bench.training_accuracy``: fine-tuned accuracy in notebook 02's mini setting, to compare two versions
of ``mu.learn.train.fit`` (run it once per checkout, ``PYTHONPATH`` choosing the ``mu``) on the same seeds.

Fine-tunes the base (``--base``, the mini profile's pretrained encoder) on each of ``LOCALES`` (the first 2,000
train utterances, the mini subsample's size; 5 epochs, lr 1e-3, batch 32, at most 64 tokens) per seed, and
evaluates every model on every locale's dev split (the first 200): native accuracy (the diagonal) and the
transfer mean (the off-diagonal cells). A second seed shows what the seed alone moves. Writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import training

LOCALES = training.LOCALES
RECIPE = {"epochs": 5, "lr": 1e-3, "batch_size": 32, "max_seq_length": 64}


def run(base: Path, massive: Path, seeds: list[int]) -> dict:
    from mu import data as mu_data
    from mu import evaluate, models, train

    out: dict = {"recipe": RECIPE, "base": str(base), "seeds": {}}
    with tempfile.TemporaryDirectory(prefix="bench-accuracy.") as tmp:
        os.environ["MU_ROOT"] = str(Path(tmp) / "root")
        data = training.write_data(massive, LOCALES, Path(tmp) / "data")
        dev = {loc: mu_data.load_split(loc, "dev", str(data)) for loc in LOCALES}
        for seed in seeds:
            matrix, seconds = {}, {}
            for src in LOCALES:
                model, tok = models.load_classifier(base)
                t = time.perf_counter()
                train.fit(
                    model, tok, mu_data.load_split(src, "train", str(data)), seed=seed,
                    output_dir=Path(tmp) / "fit", **RECIPE,
                )  # fmt: skip
                seconds[src] = round(time.perf_counter() - t, 2)
                with models.cpu_threads(model):
                    matrix[src] = {
                        tgt: float(
                            np.mean(
                                evaluate.forward(model, tok, list(ds["text"]), batch_size=64, max_seq_length=64).argmax(
                                    -1
                                )
                                == np.asarray(ds["label"])
                            )
                        )
                        for tgt, ds in dev.items()
                    }
            native = [matrix[s][s] for s in LOCALES]
            transfer = [matrix[s][t] for s in LOCALES for t in LOCALES if s != t]
            out["seeds"][str(seed)] = {
                "matrix": matrix,
                "native": dict(zip(LOCALES, native)),
                "native_mean": float(np.mean(native)),
                "transfer_mean": float(np.mean(transfer)),
                "fit_s": seconds,
            }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.training_accuracy", description=__doc__)
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--massive", type=Path, default=Path("../shared/massive/1.1"))
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = run(args.base.resolve(), args.massive.resolve(), args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for seed, r in result["seeds"].items():
        print(seed, r["native"], f"native {r['native_mean']:.4f} transfer {r['transfer_mean']:.4f}", r["fit_s"])


if __name__ == "__main__":
    main()
