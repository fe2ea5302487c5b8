"""Generated utterances of realistic, varied length, written in MASSIVE layout.

Word counts follow a log-normal fitted by eye to MASSIVE en-US (median 6 words,
mean ≈ 7, long tail clipped at 40); words are drawn Zipf-like from 3,000
pseudo-words, so a small tokenizer trained on them splits rare words into
several pieces like a real subword vocabulary does.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from mu import data, paths

LOCALE = "en-US"  # test sets are written as this locale's file
_SYLLABLES = [c + v for c in "bdfghklmnprstvwz" for v in "aeiou"]


def _vocabulary(seed: int, size: int = 3000) -> list[str]:
    rng = random.Random(f"bench-vocabulary-{seed}")
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def texts(n: int, seed: int = 0) -> list[str]:
    """``n`` utterances; the first ``m`` of ``texts(n)`` are ``texts(m)`` (nested test sets)."""
    vocab = _vocabulary(seed)
    zipf = [1.0 / (rank + 1) for rank in range(len(vocab))]
    rng = random.Random(f"bench-utterances-{seed}")
    out = []
    for _ in range(n):
        length = min(40, max(1, round(rng.lognormvariate(math.log(6.0), 0.5))))
        out.append(" ".join(rng.choices(vocab, weights=zipf, k=length)))
    return out


def write_test_set(folder: str | Path, n: int, seed: int = 0) -> Path:
    """``<folder>/en-US.jsonl`` with ``n`` test utterances and random intents; kept if already written."""
    folder = Path(folder)
    path = folder / f"{LOCALE}.jsonl"
    stamp = folder / "bench_args.json"
    args = {"n": n, "seed": seed, "version": 1}
    if path.is_file() and stamp.is_file() and paths.read_json(stamp) == args:
        return folder
    rng = random.Random(f"bench-intents-{seed}")
    lines = [
        json.dumps(
            {
                "id": str(i),
                "locale": LOCALE,
                "partition": "test",
                "intent": data.INTENTS[rng.randrange(len(data.INTENTS))],
                "utt": utt,
            }
        )
        for i, utt in enumerate(texts(n, seed))
    ]
    paths.write_text(path, "\n".join(lines) + "\n")
    paths.write_json(stamp, args)
    return folder
