"""``python -m bench.training_ablation``: what each change to fine-tuning and evaluation buys, one at a time.

On the setting of ``bench.training`` (one locale, random weights, one thread), times one epoch of
``mu.learn.train.fit`` and one N×N row of ``mu.learn.evaluate`` with each change undone in turn: length
bucketing (``MEGABATCH = 1``: batches as random as the Trainer's), the clip that skips multiplying by 1
(``torch.nn.utils.clip_grad_norm_``), the batched column reads (``datasets`` columns iterated row by row),
the tokenizer's backend (the Python wrapper). Prints a table; best of ``REPEATS`` runs each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from bench import training

LOCALE = "en-US"
REPEATS = 2


@contextlib.contextmanager
def undone(change: str):
    from mu import batching, loop
    from mu import data as mu_data

    saved = []

    def patch(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    if change == "bucketing":
        patch(batching, "MEGABATCH", 1)
        patch(batching.bucketed_batches, "__defaults__", (1,))
    elif change == "clip":
        patch(loop, "clip_grad_norm", lambda ps, m=1.0: torch.nn.utils.clip_grad_norm_(ps, m))
    elif change == "columns":
        patch(mu_data, "columns", lambda ds: {c: list(ds[c]) for c in ds.column_names})
    elif change == "tokenizer":
        patch(batching, "token_ids", lambda tok, texts, n: tok(list(texts), truncation=True, max_length=n)["input_ids"])
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.training_ablation", description=__doc__)
    p.add_argument("--massive", type=Path, default=Path("../shared/massive/1.1"))
    p.add_argument("--tokenizer", type=Path, default=training.TOKENIZER)
    p.add_argument("--out", type=Path, default=Path("reports/bench/training-ablation.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from mu import data as mu_data
    from mu import evaluate, models, train

    with tempfile.TemporaryDirectory(prefix="bench-ablation.") as tmp:
        tmp = Path(tmp)
        os.environ["MU_ROOT"] = str(tmp / "root")
        data = training.write_data(args.massive.resolve(), training.LOCALES, tmp / "data")
        base = training.make_base(tmp / "base", args.tokenizer, data, None)
        ds = mu_data.load_split(LOCALE, "train", str(data))
        rows = []
        for change in ("warm-up", "none", "bucketing", "clip", "columns", "tokenizer"):
            with undone(change):
                fits, cells = [], []
                for _ in range(REPEATS):
                    model, tok = models.load_classifier(base)
                    t = time.perf_counter()
                    train.fit(model, tok, ds, epochs=1, batch_size=32, lr=1e-3, max_seq_length=64, seed=0,
                              output_dir=tmp)  # fmt: skip
                    fits.append(time.perf_counter() - t)
                    with tempfile.TemporaryDirectory() as root:
                        os.environ["MU_ROOT"] = root
                        t = time.perf_counter()
                        for split in ("dev", "test"):
                            evaluate._nxn_row(base, targets=list(training.LOCALES), split=split, data=str(data),
                                              batch_size=64, max_seq_length=64)  # fmt: skip
                        cells.append(time.perf_counter() - t)
            if change != "warm-up":  # the first run in a process pays for reading the data and warming up
                rows.append({"undone": change, "fit_s": min(fits), "rows_s": min(cells)})
            print(
                f"undone: {change:10s} fit 1 epoch {min(fits):6.2f} s   dev+test rows of 3 targets {min(cells):6.2f} s"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
