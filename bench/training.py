"""``python -m bench.training`` (``make bench-training``): fine-tuning and evaluation throughput in notebook 02's
mini setting, against a floor of plain matmuls at the same shapes, measured in the same run.

The setting: the mini profile's encoder (XLM-R, hidden 128, 4 layers, 4 heads, intermediate 512, vocab 32,000,
60 labels; random weights unless ``--base`` names a saved classifier, since speed does not depend on them) on one
torch thread (``mu.learn.models.cpu_threads``), real MASSIVE 1.1 text (the first 2,000 train, 200 dev and 500 test
utterances of each locale, the mini subsample's sizes) tokenised by the mini profile's tokenizer
(``--tokenizer``; one trained here on the same text when it is absent), batch 32 (training) and 64
(evaluation), at most 64 tokens.

* Floor: for each batch of an epoch, the matmuls of a step as plain ``torch.matmul`` on random float32 data, on
  the same thread: every linear layer at ``[tokens, in] × [in, out]`` with ``tokens`` the batch's real
  (non-pad) tokens, attention's two batched matmuls per layer at the batch's width when the examples are
  sorted by length, the classifier head's two on the batch's first tokens; for training also both backward
  matmuls of each (input and weight gradients). Fastest of ``REPEATS`` runs per batch.
* ``fit``: ``mu.learn.train.fit`` of 3 epochs on each locale, each epoch timed by a callback (the median
  epoch; the rest of the call is its fixed cost); the shapes it really ran are recorded by a forward hook.
* evaluation: ``mu.learn.evaluate``'s N×N row (``_nxn_row``: one model on every locale's split, logits cache
  empty under a scratch ``MU_ROOT``) on the dev and test splits, and the bare forward (``evaluate.forward``).

FLOPs are counted analytically (multiply-adds × 2; biases, softmax, norms and the embedding lookup left out):
per example of ``L`` tokens, forward = ``2·P·L + 4·layers·H·L² + 2·(H² + H·C)`` with ``P`` = the encoder's
matmul parameters (``layers·(4·H² + 2·H·I)`` = 786,432), ``H`` hidden, ``C`` labels; training = 3 × forward
(the backward pass computes two matmuls per forward one). "Real" counts the examples' own tokens, "padded"
the shapes run. Achieved GFLOP/s = real FLOPs / wall time; the ratio to the floor = wall time / floor time
of the same examples. Writes ``reports/bench/training.json`` and ``training.md``; ``--before`` adds a run of
the same module against an earlier checkout (its ``--out`` JSON) to the table and the projection.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

LOCALES = ("en-US", "hi-IN", "sw-KE")
SIZES = {"train": 2000, "dev": 200, "test": 500}  # the mini subsample's utterances per locale
ENCODER = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}
VOCAB, LABELS = 32000, 60
BATCH, EVAL_BATCH, MAX_LEN = 32, 64, 64  # notebook 02's mini parameters; evaluate.nxn's batch
EPOCHS = 3
REPEATS = 3
NOTEBOOK = {"locales": 51, "workers": 2, "epochs": 8}  # notebook 02 in the mini study (tuned epochs <= 12)
TOKENIZER = Path("studies/mini/models/mini/tokenizer")  # `make study`'s (STUDY_ROOT); absent: one trained here


def _shapes() -> tuple[int, int, int, int]:
    return ENCODER["hidden_size"], ENCODER["intermediate_size"], ENCODER["num_hidden_layers"], LABELS


def matmul_params() -> int:
    h, i, layers, _ = _shapes()
    return layers * (4 * h * h + 2 * h * i)


def forward_flops(lengths: np.ndarray, width: int | None = None) -> float:
    """Forward FLOPs of examples of ``lengths`` tokens (padded to ``width`` when given)."""
    h, _, layers, c = _shapes()
    tokens = np.full(len(lengths), width, dtype=np.float64) if width else np.asarray(lengths, dtype=np.float64)
    return float(np.sum(2 * matmul_params() * tokens + 4 * layers * h * tokens**2) + len(lengths) * 2 * (h * h + h * c))


def sorted_widths(lengths: np.ndarray, batch: int) -> list[np.ndarray]:
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [np.asarray(lengths)[order[i : i + batch]] for i in range(0, len(order), batch)]


def _best(fn, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def floor(lengths: np.ndarray, batch: int, train: bool) -> dict[str, float]:
    """Seconds and FLOPs of the plain matmuls of one pass over examples of ``lengths`` (module docstring)."""
    h, i, layers, c = _shapes()
    heads = ENCODER["num_attention_heads"]
    weights = [[torch.randn(h, h) for _ in range(4)] + [torch.randn(h, i), torch.randn(i, h)] for _ in range(layers)]
    head = [torch.randn(h, h), torch.randn(h, c)]
    seconds = flops = 0.0
    for group in sorted_widths(lengths, batch):
        m, b, t = int(group.sum()), len(group), int(group.max())
        xs = {h: torch.randn(m, h), i: torch.randn(m, i)}
        q = torch.randn(b * heads, t, h // heads)
        p = torch.randn(b * heads, t, t)
        cls = torch.randn(b, h)
        ops: list[tuple[torch.Tensor, torch.Tensor]] = []
        for ws in weights:
            ops += [(xs[w.shape[0]], w) for w in ws]
            ops += [(q, q.transpose(1, 2)), (p, q)]
        ops += [(cls, w) for w in head]
        if train:  # d(input) = dy · wᵀ and d(weight) = xᵀ · dy of each
            ops += [(a @ w, w.transpose(-1, -2)) for a, w in ops] + [(a.transpose(-1, -2), a @ w) for a, w in ops]
        seconds += _best(lambda ops=ops: [a @ w for a, w in ops])
        flops += sum(2 * a.shape[-2] * a.shape[-1] * w.shape[-1] * (a.shape[0] if a.dim() == 3 else 1) for a, w in ops)
    return {"seconds": seconds, "flops": flops, "gflops_per_s": flops / seconds / 1e9}


def write_data(massive: Path, locales: tuple[str, ...], out: Path) -> Path:
    """``<out>/<locale>.jsonl``: the first ``SIZES`` utterances of each split of each locale."""
    out.mkdir(parents=True, exist_ok=True)
    for loc in locales:
        kept, seen = [], dict.fromkeys(SIZES, 0)
        with gzip.open(massive / f"{loc}.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                part = json.loads(line)["partition"]
                if part in seen and seen[part] < SIZES[part]:
                    seen[part] += 1
                    kept.append(line if line.endswith("\n") else line + "\n")
        (out / f"{loc}.jsonl").write_text("".join(kept), encoding="utf-8")
    return out


def make_base(folder: Path, tokenizer_dir: Path, data: Path, base: Path | None) -> Path:
    """A saved classifier of the mini shape: ``base`` as is, else random weights with the mini tokenizer."""
    from transformers import AutoTokenizer, XLMRobertaForSequenceClassification

    from mu import bases, models
    from mu import data as mu_data

    if base is not None:
        return base
    if tokenizer_dir.is_dir():
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        texts = [t for loc in LOCALES for t in mu_data.load_split(loc, "train", str(data))["text"]]
        tok = bases.train_tokenizer(texts, 8000)
    config = bases.encoder_config(
        VOCAB,
        **ENCODER,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=LABELS,
        id2label=dict(mu_data.ID2LABEL),
        label2id=dict(mu_data.LABEL2ID),
        problem_type="single_label_classification",
        architectures=["XLMRobertaForSequenceClassification"],
    )
    torch.manual_seed(0)
    return models.save_classifier(XLMRobertaForSequenceClassification(config), tok, folder)


def lengths_of(tokenizer: Any, texts: list[str]) -> np.ndarray:
    return np.asarray([len(e) for e in tokenizer(texts, truncation=True, max_length=MAX_LEN)["input_ids"]])


class _EpochClock(TrainerCallback):
    """Times each epoch (the Trainer and ``mu.learn.loop`` both call it)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_epoch_begin(self, *a, **k):
        self.started = time.perf_counter()

    def on_epoch_end(self, *a, **k):
        self.seconds.append(time.perf_counter() - self.started)


def measure_fit(base: Path, data: Path, scratch: Path) -> dict[str, Any]:
    """``fit`` of ``EPOCHS`` epochs per locale: the median epoch (timed by a callback) and the rest of the call."""
    from mu import data as mu_data
    from mu import models, train

    out: dict[str, Any] = {}
    for loc in LOCALES:
        ds = mu_data.load_split(loc, "train", str(data))
        model, tok = models.load_classifier(base)
        shapes: list[tuple[int, int]] = []
        hook = model.register_forward_pre_hook(
            lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)) if m.training else None, with_kwargs=True
        )
        clock = _EpochClock()
        t = time.perf_counter()
        train.fit(
            model, tok, ds, epochs=EPOCHS, batch_size=BATCH, lr=1e-3, max_seq_length=MAX_LEN, seed=0,
            output_dir=scratch, callbacks=[clock],
        )  # fmt: skip
        fit_s = time.perf_counter() - t
        hook.remove()
        lengths = lengths_of(tok, list(ds["text"]))
        padded = 3 * sum(forward_flops(np.zeros(b), w) for b, w in shapes) / EPOCHS
        per_epoch = statistics.median(clock.seconds)
        real = 3 * forward_flops(lengths)
        fl = floor(lengths, BATCH, train=True)
        out[loc] = {
            "n": len(ds),
            "tokens": int(lengths.sum()),
            "fit_s": fit_s,
            "epochs_s": clock.seconds,
            "epoch_s": per_epoch,
            "fixed_s": fit_s - sum(clock.seconds),
            "examples_per_s": len(ds) / per_epoch,
            "real_gflops_per_s": real / per_epoch / 1e9,
            "padded_gflops_per_s": padded / per_epoch / 1e9,
            "pad_fraction": 1 - real / padded,
            "floor_s": fl["seconds"],
            "floor_gflops_per_s": fl["gflops_per_s"],
            "ratio": per_epoch / fl["seconds"],
        }
    return out


def measure_eval(base: Path, data: Path) -> dict[str, Any]:
    from mu import data as mu_data
    from mu import evaluate, models

    model, tok = models.load_classifier(base)
    out: dict[str, Any] = {}
    for split in ("dev", "test"):
        texts = {loc: list(mu_data.load_split(loc, split, str(data))["text"]) for loc in LOCALES}
        lengths = np.concatenate([lengths_of(tok, t) for t in texts.values()])
        with models.cpu_threads(model):
            fwd = _best(lambda: [evaluate.forward(model, tok, t, batch_size=EVAL_BATCH, max_seq_length=MAX_LEN)
                                 for t in texts.values()])  # fmt: skip
            fl = {k: 0.0 for k in ("seconds", "flops")}
            for t in texts.values():
                one = floor(lengths_of(tok, t), EVAL_BATCH, train=False)
                fl = {k: fl[k] + one[k] for k in fl}
        cells = []
        for _ in range(2):  # fresh logits cache each time: what a cell of notebook 02's matrix costs
            with tempfile.TemporaryDirectory() as root:
                os.environ["MU_ROOT"] = root
                t = time.perf_counter()
                evaluate._nxn_row(
                    base, targets=list(LOCALES), split=split, data=str(data), batch_size=EVAL_BATCH,
                    max_seq_length=MAX_LEN,
                )  # fmt: skip
                cells.append(time.perf_counter() - t)
        load = _best(lambda: evaluate._load(base), 2)
        real = forward_flops(lengths)
        padded = sum(forward_flops(np.zeros(len(g)), int(g.max())) for t in texts.values()
                     for g in sorted_widths(lengths_of(tok, t), EVAL_BATCH))  # fmt: skip
        out[split] = {
            "n": int(len(lengths)),
            "tokens": int(lengths.sum()),
            "forward_s": fwd,
            "row_s": min(cells),
            "load_s": load,
            "cell_s": (min(cells) - load) / len(LOCALES),
            "examples_per_s": len(lengths) / fwd,
            "row_examples_per_s": len(lengths) / min(cells),
            "real_gflops_per_s": real / fwd / 1e9,
            "padded_gflops_per_s": padded / fwd / 1e9,
            "floor_s": fl["seconds"],
            "floor_gflops_per_s": fl["flops"] / fl["seconds"] / 1e9,
            "ratio": fwd / fl["seconds"],
            "row_ratio": min(cells) / fl["seconds"],
        }
    return out


def project(result: dict[str, Any], tokens_per_locale: float) -> dict[str, float]:
    """Notebook 02's wall time per seed: 51 fits of 8 epochs and the dev and test N×N, over 2 processes."""
    fit = result["fit"]
    per_token = statistics.mean(r["epoch_s"] / r["tokens"] for r in fit.values())
    fixed = statistics.mean(r["fixed_s"] for r in fit.values())
    nb = NOTEBOOK
    train_s = nb["locales"] * (fixed + nb["epochs"] * per_token * tokens_per_locale) / nb["workers"]
    nxn_s = (
        sum(nb["locales"] * (e["load_s"] + nb["locales"] * e["cell_s"]) for e in result["eval"].values())
        / nb["workers"]
    )
    return {"train_s": train_s, "nxn_s": nxn_s, "total_s": train_s + nxn_s}


def projections(result: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """The projection of each run, as the JSON records it for the generated docs table (``mu.publish.docs_bench``),
    which must not import this module: the notebook's shape and, per run, seconds of fine-tuning, N×N and both."""
    runs = [("before", before), ("after", result)] if before else [("this run", result)]
    return {"notebook": NOTEBOOK, "runs": {name: project(r, result["tokens_per_locale"]) for name, r in runs}}


def _floor_range(runs: list[tuple[str, dict[str, Any]]]) -> tuple[float, float]:
    rates = [row["floor_gflops_per_s"] for _, r in runs for part in ("fit", "eval") for row in r[part].values()]
    return min(rates), max(rates)


def markdown(
    result: dict[str, Any],
    before: dict[str, Any] | None,
    accuracy: list[dict[str, Any]] | None = None,
    ablation: list[dict[str, Any]] | None = None,
) -> str:
    runs = [("before", before), ("after", result)] if before else [("this run", result)]
    lines = [
        "# Fine-tuning and evaluation against a matmul floor (notebook 02, mini profile)",
        "",
        f"{result['setting']}. One torch thread, CPU: {result['cpu']}.",
        "",
        "FLOPs per example of L tokens: forward = 2·P·L + 4·layers·H·L² + 2·(H² + H·C), P = "
        f"{matmul_params():,} matmul parameters of the encoder, H = {ENCODER['hidden_size']}, C = {LABELS}; "
        "training = 3 × forward. GFLOP/s counts the real (non-pad) tokens; padded counts the shapes run. "
        "Floor: the same matmuls (forward, and for training both backward ones) as plain torch.matmul on the real "
        "tokens of length-sorted batches, one thread. Ratio = wall time / floor time of the same examples.",
        "",
        *(
            [
                "Before: the same module run against the checkout before this change (`--before`, "
                f"{before.get('code', 'the earlier code')}), measured just before this run on the same machine.",
                "",
            ]
            if before
            else []
        ),
        "The floor's own rate ranges over "
        + "{:.0f}-{:.0f} GFLOP/s between the rows below (the same kind of matmuls; a shared virtual machine), so a "
        "ratio is good to about ±20%.".format(*_floor_range(runs)),
        "",
        "## Fine-tuning (`mu.learn.train.fit`, per epoch of 2,000 utterances, batch 32)",
        "",
        "| run | locale | examples/s | GFLOP/s real | GFLOP/s padded | pad share | floor GFLOP/s | floor s | epoch s "
        "| fixed s per fit | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs:
        for loc, f in r["fit"].items():
            lines.append(
                f"| {name} | {loc} | {f['examples_per_s']:.0f} | {f['real_gflops_per_s']:.1f} | "
                f"{f['padded_gflops_per_s']:.1f} | {f['pad_fraction']:.0%} | {f['floor_gflops_per_s']:.1f} | "
                f"{f['floor_s']:.2f} | {f['epoch_s']:.2f} | {f['fixed_s']:.2f} | {f['ratio']:.2f}× |"
            )
    lines += [
        "",
        f"## Evaluation (logits of {', '.join(LOCALES)}, batch {EVAL_BATCH})",
        "",
        "| run | split | examples/s | GFLOP/s real | GFLOP/s padded | floor GFLOP/s | ratio (forward) "
        "| model load s | N×N cell s | ratio (row) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs:
        for split, e in r["eval"].items():
            lines.append(
                f"| {name} | {split} | {e['examples_per_s']:.0f} | {e['real_gflops_per_s']:.1f} | "
                f"{e['padded_gflops_per_s']:.1f} | {e['floor_gflops_per_s']:.1f} | {e['ratio']:.2f}× | "
                f"{e['load_s']:.3f} | {e['cell_s']:.3f} | {e['row_ratio']:.2f}× |"
            )
    lines += [
        "",
        f"## Notebook 02 per seed, projected ({NOTEBOOK['locales']} locales × {NOTEBOOK['epochs']} epochs, "
        f"{NOTEBOOK['workers']} processes, dev + test N×N)",
        "",
        f"Mean train tokens per locale over the 51 locales: {result['tokens_per_locale']:,.0f}.",
        "",
        "| run | fine-tuning min | N×N min | total min |",
        "|---|---|---|---|",
    ]
    for name, r in runs:
        p = project(r, result["tokens_per_locale"])
        lines.append(f"| {name} | {p['train_s'] / 60:.1f} | {p['nxn_s'] / 60:.1f} | {p['total_s'] / 60:.1f} |")
    lines += [
        "",
        "What keeps fine-tuning above 2× the floor (a cProfile of one en-US epoch after the change, same "
        "machine): the backward pass 35% (its matmuls, plus the embedding's dense 32,000 × 128 gradient and "
        "dropout's and attention's backward), the forward linears 12%, the fused AdamW 11% and the gradient "
        "clipping 6% (both pass over all 4.9M parameters every step, 4.1M of them the embedding, while the floor "
        "counts the 0.8M of the matmuls), dropout 8.5%, attention 7%, module calls and the rest ~15%. "
        "The optimiser, the clipping and dropout are the recipe's maths; only a sparse (lazy) update of the "
        "embedding rows a batch does not touch would remove most of that, and it would not be the same AdamW. "
        "Evaluation is within 2× on the test split; on the 200-utterance dev split a third of the batch "
        "positions are padding (4 length-sorted batches of 64, the first holding the long tail), which the "
        "floor, on real tokens only, does not pay.",
    ]
    if ablation:
        lines += [
            "",
            "## What each change buys (`python -m bench.training_ablation`, en-US, one change undone at a time)",
            "",
            "| undone | fit, 1 epoch s | dev + test N×N rows of 3 targets s |",
            "|---|---|---|",
            *[f"| {r['undone']} | {r['fit_s']:.2f} | {r['rows_s']:.2f} |" for r in ablation],
        ]
    if accuracy:
        lines += [
            "",
            "## Fine-tuned accuracy, before and after (`python -m bench.training_accuracy`, same seeds)",
            "",
            f"{accuracy[0]['recipe']}; dev accuracy (first 200 dev utterances, so one locale's binomial standard error "
            f"is about 0.03); base: {accuracy[0].get('base_note', accuracy[0]['base'])}.",
            "",
            "| run | seed | " + " | ".join(f"native {loc}" for loc in LOCALES) + " | native mean | transfer mean |",
            "|---|---|" + "---|" * (len(LOCALES) + 2),
        ]
        for name, acc in zip(("before", "after"), accuracy):
            for seed, r in acc["seeds"].items():
                cells = " | ".join(f"{r['native'][loc]:.3f}" for loc in LOCALES)
                lines.append(f"| {name} | {seed} | {cells} | {r['native_mean']:.3f} | {r['transfer_mean']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--massive", type=Path, default=Path("../shared/massive/1.1"))
    p.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    p.add_argument("--base", type=Path, help="a saved classifier of the mini shape (default: random weights)")
    p.add_argument("--out", type=Path, default=Path("reports/bench/training.json"))
    p.add_argument("--before", type=Path, help="the JSON of a run against the code before, for the tables")
    p.add_argument("--accuracy", type=Path, nargs=2, help="bench.training_accuracy JSONs, before and after")
    p.add_argument("--ablation", type=Path, help="bench.training_ablation's JSON")
    p.add_argument("--render", action="store_true", help="measure nothing: rewrite the markdown from --out's JSON")
    p.add_argument("--quick", action="store_true", help="one locale, a tenth of the data: tries the harness")
    args = p.parse_args(argv)
    if args.quick:
        global LOCALES, SIZES
        LOCALES, SIZES = ("sw-KE",), {"train": 256, "dev": 64, "test": 128}
    out = args.out.resolve()
    # --render keeps what the saved JSON holds unless a flag names a newer file, so re-rendering loses nothing
    saved = json.loads(out.read_text()) if args.render else {}
    if args.render:
        result, before = saved["result"], saved["before"]
    else:
        result = measure(args)
        before = json.loads(args.before.read_text())["result"] if args.before else None
    accuracy = [json.loads(p.read_text()) for p in args.accuracy] if args.accuracy else saved.get("accuracy")
    ablation = json.loads(args.ablation.read_text()) if args.ablation else saved.get("ablation")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"result": result, "before": before, "accuracy": accuracy, "ablation": ablation}
    record["projection"] = projections(result, before)
    out.write_text(json.dumps(record, indent=1) + "\n")
    md = markdown(result, before, accuracy, ablation)
    out.with_suffix(".md").write_text(md)
    print(md)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-training.") as tmp:
        tmp = Path(tmp)
        os.environ["MU_ROOT"] = str(tmp / "root")
        data = write_data(args.massive.resolve(), LOCALES, tmp / "data")
        base = make_base(tmp / "base", args.tokenizer, data, args.base)
        from transformers import AutoTokenizer

        from mu import data as mu_data

        tok = AutoTokenizer.from_pretrained(base)
        every = write_data(args.massive.resolve(), tuple(_all_locales()), tmp / "all")
        tokens = [
            lengths_of(tok, list(mu_data.load_split(loc, "train", str(every))["text"])).sum() for loc in _all_locales()
        ]
        return {
            "setting": f"{ENCODER} vocab {VOCAB}, {LABELS} labels, MASSIVE {', '.join(LOCALES)} "
            f"({SIZES['train']} train / {SIZES['dev']} dev / {SIZES['test']} test), max {MAX_LEN} tokens",
            "cpu": _cpu(),
            "torch": torch.__version__,
            "tokens_per_locale": float(np.mean(tokens)),
            "fit": measure_fit(base, data, tmp / "fit"),
            "eval": measure_eval(base, data),
        }


def _all_locales() -> list[str]:
    from mu import locales

    return list(locales.LOCALES)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
