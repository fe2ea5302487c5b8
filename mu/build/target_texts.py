"""The target's texts that ``python -m mu merge`` reads, and the accuracy of ``--evaluate``.

``--evaluate``: labeled utterances (a MASSIVE locale's dev split, or a JSONL file with ``utt``/``text``
and ``intent``/``label`` per line), read and checked against the sources' labels before any merge;
after it, the accuracy of the merge and of each source on them. ``--adapt-texts``: the target's
unlabeled utterances an adaptive method fits on. ``--data``: where MASSIVE comes from.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mu.build.sources import Source, say


@dataclass
class EvalData:
    description: str
    texts: list
    gold: list  # label names


def data_source(args: argparse.Namespace) -> str:
    """``--data``, where ``auto`` is the local MASSIVE copy when there is one, else the hub."""
    if args.data != "auto":
        return args.data
    from mu.corpus import massive

    return "massive" if massive.massive_dir().is_dir() else "hub"


def eval_data(args: argparse.Namespace, labels: Sequence[str]) -> EvalData:
    """The labeled texts of ``--evaluate``, checked against the sources' labels before any merge."""
    from mu.corpus import data, massive

    spec = args.evaluate
    path = Path(spec).expanduser()
    if path.is_file():
        texts, gold = [], []
        for lineno, obj in massive.jsonl_objects(path):
            text = obj.get("utt", obj.get("text"))
            label = obj.get("intent", obj.get("label"))
            if not isinstance(text, str) or label is None:
                raise ValueError(f"{path}:{lineno}: needs a text ('utt' or 'text') and a label ('intent' or 'label')")
            if isinstance(label, int) and not isinstance(label, bool):
                if not 0 <= label < len(labels):
                    raise ValueError(f"{path}:{lineno}: label id {label} outside 0..{len(labels) - 1}")
                label = labels[label]
            texts.append(text)
            gold.append(str(label))
        desc = str(path)
    else:
        from mu.langs import codes

        lang = codes.resolve(spec)
        if lang.locale is None:
            raise ValueError(
                f"--evaluate {spec!r}: neither a file nor a MASSIVE locale (MASSIVE has dev data for "
                "its 51 locales only; give a JSONL file for another language)"
            )
        source = data_source(args)
        ds = data.load_split(lang.locale, "dev", source)
        texts, gold = list(ds["text"]), [data.INTENTS[i] for i in ds["label"]]
        desc = f"MASSIVE {lang.locale} dev ({source})"
    if not texts:
        raise ValueError(f"--evaluate {spec}: no labeled utterances")
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise ValueError(f"--evaluate {spec}: labels the models do not have: {unknown[:10]}")
    return EvalData(desc, texts, gold)


def adapt_texts(args: argparse.Namespace) -> list[str] | None:
    """``--adapt-texts``: the lines of a .txt, the texts of a .jsonl, or a MASSIVE locale's train texts."""
    if not args.adapt_texts:
        return None
    from mu.corpus import data, massive
    from mu.langs import codes

    path = Path(args.adapt_texts).expanduser()
    if path.is_file():
        if path.suffix == ".txt":
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [str(obj.get("utt", obj.get("text"))) for _, obj in massive.jsonl_objects(path)]
    lang = codes.resolve(args.adapt_texts)
    if lang.locale is None:
        raise ValueError(f"--adapt-texts {args.adapt_texts!r}: neither a file nor a MASSIVE locale")
    return data.unlabeled(lang.locale, "train", data_source(args))


def _accuracy(folder: Path, ev: EvalData, device: str | None) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mu.learn import evaluate as mu_evaluate

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    logits = mu_evaluate.forward(model, tokenizer, ev.texts, batch_size=32, max_seq_length=128)
    names = model.config.id2label
    pred = [names[int(i)] for i in logits.argmax(axis=-1)]
    return sum(p == g for p, g in zip(pred, ev.gold)) / len(ev.gold)


def evaluate(ev: EvalData, sources: list[Source], merged: Path, device: str | None) -> dict[str, Any]:
    """The merge's accuracy beside each source's (``evaluation.json``); among sources tied for the best,
    the first in merge order."""
    say(f"evaluating the merge and its {len(sources)} source(s) on {ev.description}")
    result = {
        "data": ev.description,
        "n": len(ev.texts),
        "merged": _accuracy(merged, ev, device),
        "sources": {s.label: _accuracy(s.local, ev, device) for s in sources},
    }
    result["best_source"] = max(result["sources"], key=lambda k: (result["sources"][k], k == sources[0].label))
    return result
