"""Is training bit-reproducible across thread counts? ``python -m bench.determinism [--out FILE]``

Each case trains in a fresh process (its own temporary ``MU_ROOT``; one toy base and one tokenizer, made
beforehand, shared by all) with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = 1 or 2 (and 2 once more: the run-to-run check at a fixed thread count), then
compares the trained weights bit for bit (sha256 of every tensor's bytes) and by the largest absolute
difference with the 1-thread run:

* ``tokenizer``: ``mu.bases.train_tokenizer`` (the HF ``tokenizers`` unigram trainer) on the same texts:
  are the vocabulary and its ids the same in every process?
* ``finetune``: ``mu.train.fit`` as the package runs it: de-DE of the toy data, 3 epochs, seed 42. A
  model below ``mu.models.TINY_PARAMS`` (the toy's and the mini study's) trains on one torch thread
  whatever ``OMP_NUM_THREADS`` says (``mu.models.cpu_threads``).
* ``finetune-threads``: the same fit with the thread count honoured (``torch.set_num_threads``).
* ``finetune-threads-deterministic``: the same under ``torch.use_deterministic_algorithms(True)``.
* ``pretrain``: ``mu.pretrain.pretrain`` (the shared tokenizer, ``parallel-svd`` embedding
  init, ``mlm+tlm+align``, 30 steps) on the toy data; torch's default threads, as the study runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("tokenizer", "finetune", "finetune-threads", "finetune-threads-deterministic", "pretrain")
RUNS = (("1", 1), ("2", 2), ("2 again", 2))
PRETRAIN_LOCALES = ["de-DE", "nl-NL", "sw-KE"]


def _shared(folder: Path) -> None:
    """What every fine-tuning / pretraining run starts from, made once, so that only the thread count differs
    (``mu.bases.train_tokenizer`` varied from one process to the next before its scores were rounded)."""
    from mu import bases, pretrain

    bases.build_toy_base(folder / "base", seed=42)
    texts = pretrain.train_texts(PRETRAIN_LOCALES, "toy")
    pretrain.tokenizer(folder / "tok", [t for _, utts in texts.values() for t in utts], 400)


def _state(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def worker(case: str, threads: int, out: Path, shared: Path) -> None:
    """Train one case in this process and save its weights (or vocabulary) to ``out`` (``torch.save``)."""
    import torch

    from mu import bases, data, models, pretrain, train

    t0 = time.perf_counter()
    if case == "tokenizer":
        texts = [t for loc in PRETRAIN_LOCALES for t in data.load_split(loc, "train", "toy")["text"]]
        vocab = bases.train_tokenizer(texts, 400).get_vocab()
        ids = torch.tensor([vocab[k] for k in sorted(vocab)])
        torch.save(
            {"state": {"ids": ids}, "torch_threads": torch.get_num_threads(), "seconds": 0.0, "pieces": sorted(vocab)},
            out,
        )
        return
    if case == "pretrain":
        from transformers import AutoModelForMaskedLM

        enc = pretrain.pretrain(
            "models/p",
            locales=PRETRAIN_LOCALES,
            source="toy",
            objective="mlm+tlm+align",
            tokenizer_dir=shared / "tok",
            steps=30,
            vocab_size=400,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            batch_size=16,
            warmup_steps=5,
            seed=42,
            embedding_init="parallel-svd",
            dev_per_locale=8,
        )
        model = AutoModelForMaskedLM.from_pretrained(enc)
    else:
        model, tok = models.load_classifier(shared / "base")
        if case != "finetune":
            models.TINY_PARAMS = 0  # cpu_threads leaves the thread count alone
            torch.set_num_threads(threads)
        if case.endswith("deterministic"):
            torch.use_deterministic_algorithms(True)
        with tempfile.TemporaryDirectory() as tmp:
            train.fit(
                model,
                tok,
                data.load_split("de-DE", "train", "toy"),
                epochs=3,
                batch_size=16,
                lr=2e-3,
                max_seq_length=64,
                seed=42,
                output_dir=tmp,
            )
    torch.save(
        {"state": _state(model), "torch_threads": torch.get_num_threads(), "seconds": time.perf_counter() - t0}, out
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.determinism", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--worker", nargs=4, metavar=("CASE", "THREADS", "OUT", "SHARED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), Path(args.worker[2]), Path(args.worker[3]))
        return 0
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="determinism.") as scratch:
        shared = Path(scratch) / "shared"
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from bench.determinism import _shared; from pathlib import Path; _shared(Path({str(shared)!r}))",
            ],
            env={**os.environ, "MU_ROOT": str(shared)},
            check=True,
        )
        for case in args.cases:
            states = {}
            for label, n in RUNS:
                root = Path(scratch) / f"{case}-{label.replace(' ', '-')}"
                root.mkdir()
                env = {**os.environ, "MU_ROOT": str(root), "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.determinism",
                        "--worker",
                        case,
                        str(n),
                        str(root / "w.pt"),
                        str(shared),
                    ],
                    env=env,
                    check=True,
                )
                saved = torch.load(root / "w.pt")
                states[label] = saved["state"]
                ref = states["1"]
                diff = max(
                    (
                        float((saved["state"][k].double() - ref[k].double()).abs().max())
                        if saved["state"][k].shape == ref[k].shape
                        else float("inf")
                    )
                    for k in ref
                )
                rows.append(
                    {
                        "case": case,
                        "OMP_NUM_THREADS": label,
                        "torch_threads": saved["torch_threads"],
                        "sha256": _digest(saved["state"])[:16],
                        "identical_to_1_thread": _digest(saved["state"]) == _digest(ref),
                        "max_abs_diff_vs_1_thread": diff,
                        "seconds": round(saved["seconds"], 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(
            json.dumps({"rows": rows, "torch": torch.__version__, "cpu": _cpu()}, indent=2) + "\n"
        )
    return 0


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
