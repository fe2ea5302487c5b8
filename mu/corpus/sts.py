"""Sentence-similarity (STS) pairs for evaluating an encoder's representations (``mu.learn.evaluate.sts``).

``load_pairs(source, locale)`` returns a DataFrame with columns ``sentence1``,
``sentence2``, ``score`` from:

* ``"hub"``: English STS-B (``sentence-transformers/stsb``, scores 0-1) for ``en-*``, its
  machine translations (``PhilipMay/stsb_multi_mt``, scores 0-5) for the languages of
  ``HUB_LANGUAGES``; needs the hub (real loading code, not runnable offline);
* ``"toy"``: generated in a toy locale's language (``make_toy_sts``), graded by construction;
* a path: a local ``.tsv`` (header ``sentence1<TAB>sentence2<TAB>score``) or ``.jsonl``
  (one object per line with those keys), every score within ``score_range``.

A bad file (missing column, a score that is not a number or outside ``score_range``, an
empty sentence, no pairs) is a ValueError naming the file and line.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mu.core import paths
from mu.corpus import massive, toy

COLUMNS = ("sentence1", "sentence2", "score")
HUB_EN = "sentence-transformers/stsb"
HUB_MULTI = "PhilipMay/stsb_multi_mt"
HUB_LANGUAGES = ("de", "en", "es", "fr", "it", "nl", "pl", "pt", "ru", "zh")
# Toy levels: (score, what sentence2 is). Meaning (the intent) weighs more than shared words: level 3
# shares no word with sentence1 but means the same; level 2 shares the fillers but not the intent.
TOY_LEVELS = (
    (5.0, "the same words in another order"),
    (4.0, "the same intent in synonyms (its other keywords), the same fillers"),
    (3.0, "the same intent in synonyms, other fillers (no word shared)"),
    (2.0, "another intent's keywords, the same fillers"),
    (0.0, "another intent, other fillers (no word shared)"),
)


def load_pairs(
    source: str | os.PathLike, locale: str = "en-US", split: str = "test", *, score_range: Sequence[float] = (0.0, 5.0)
) -> pd.DataFrame:
    """STS pairs (``sentence1``, ``sentence2``, ``score``) from ``"hub"``, ``"toy"`` or a file.

    ``score_range`` declares a local file's scale (scores outside it are an error); ``"hub"`` and
    ``"toy"`` come with their own scales, so another range given with them is an error, not ignored.
    """
    if source in ("hub", "toy") and tuple(float(x) for x in score_range) != (0.0, 5.0):
        raise ValueError(
            f"score_range {list(score_range)} applies to local STS files only; {source!r} has its "
            "own scale (Spearman is rank-based): leave it at [0.0, 5.0]"
        )
    if source == "hub":
        return _load_hub(locale, split)
    if source == "toy":
        return read_file(make_toy_sts(locale), score_range=(0.0, 5.0))
    return read_file(source, score_range=score_range)


def read_file(path: str | os.PathLike, *, score_range: Sequence[float] = (0.0, 5.0)) -> pd.DataFrame:
    """A local ``.tsv`` or ``.jsonl`` STS file, validated line by line."""
    file = paths.resolve(path)
    lo, hi = (float(x) for x in score_range)
    if not lo < hi:
        raise ValueError(f"score_range must be (low, high) with low < high, got {score_range!r}")
    if not file.is_file():
        raise ValueError(f"STS file {file} does not exist (source: 'hub', 'toy' or a .tsv / .jsonl file)")
    if file.suffix not in (".tsv", ".jsonl"):
        raise ValueError(f"STS file {file}: unknown format {file.suffix!r}; valid: .tsv (with a header) or .jsonl")
    rows = []
    for where, obj in _records(file):
        missing = [c for c in COLUMNS if c not in obj]
        if missing:
            raise ValueError(f"{where}: missing column(s) {missing}; every pair needs {list(COLUMNS)}")
        for c in COLUMNS[:2]:
            if not isinstance(obj[c], str) or not obj[c].strip():
                raise ValueError(f"{where}: {c!r} must be a non-empty string, got {obj[c]!r}")
        try:
            score = float(obj["score"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: score {obj['score']!r} is not a number") from None
        if not (math.isfinite(score) and lo <= score <= hi):
            raise ValueError(f"{where}: score {score} is outside the declared range [{lo}, {hi}] (score_range)")
        rows.append({"sentence1": obj["sentence1"], "sentence2": obj["sentence2"], "score": score})
    if not rows:
        raise ValueError(f"{file}: no STS pairs")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _records(file: Path):
    """(``file:line``, dict) per non-empty line after the header (TSV) or per line (JSONL)."""
    if file.suffix == ".jsonl":
        for lineno, obj in massive.jsonl_objects(file):
            yield f"{file}:{lineno}", obj
        return
    with open(file, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            return
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{file}:1: header {header} lacks column(s) {missing}; needs {list(COLUMNS)}")
        for lineno, cells in enumerate(reader, 2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise ValueError(f"{file}:{lineno}: {len(cells)} fields, the header has {len(header)}")
            yield f"{file}:{lineno}", dict(zip(header, cells))


def _load_hub(locale: str, split: str) -> pd.DataFrame:
    """STS-B from the hub for ``locale``'s language. Needs network."""
    import datasets

    language = locale.split("-")[0]
    if language not in HUB_LANGUAGES:
        raise ValueError(
            f"no hub STS set for {locale!r}: {HUB_MULTI} has {list(HUB_LANGUAGES)}; pass a local "
            "file, or another locale (e.g. en-US)"
        )
    if split not in ("train", "dev", "test"):
        raise ValueError(f"unknown split {split!r}; valid: ['train', 'dev', 'test']")
    if language == "en":
        ds = datasets.load_dataset(HUB_EN, split={"dev": "validation"}.get(split, split))
        return pd.DataFrame({"sentence1": ds["sentence1"], "sentence2": ds["sentence2"], "score": ds["score"]})
    ds = datasets.load_dataset(HUB_MULTI, language, split=split)
    return pd.DataFrame({"sentence1": ds["sentence1"], "sentence2": ds["sentence2"], "score": ds["similarity_score"]})


def make_toy_sts(locale: str, per_level: int = 40, seed: int = 0) -> Path:
    """Generate ``cache/data/toy_sts/<locale>.jsonl``: ``per_level`` pairs for each of ``TOY_LEVELS``
    in the toy language of ``locale`` (``mu.corpus.toy.toy_lexicon``: 12 intents x 4 keywords, 24
    fillers). sentence1 is 2 keywords of an intent and 3 fillers, in the language's word order.
    Deterministic; written atomically; kept when it exists with the same arguments."""
    lex = toy.toy_lexicon(locale)
    out = paths.cache_dir("data", "toy_sts", f"{locale}.jsonl")
    stamp = {"locale": locale, "per_level": per_level, "seed": seed, "version": 1}
    if out.is_file() and json.loads(out.read_text(encoding="utf-8").splitlines()[0]).get("toy") == stamp:
        return out
    rng = random.Random(f"toy-sts/{locale}/{seed}")
    kws, fill = lex["keywords"], lex["fillers"]
    last = locale in toy.TOY_KEYWORDS_LAST

    def sentence(keys: list[str], fillers: list[str]) -> str:
        return " ".join(fillers + keys if last else keys + fillers)

    lines = []
    for score, what in TOY_LEVELS:
        for _ in range(per_level):
            intent, other = rng.sample(range(len(kws)), 2)
            k = rng.sample(range(4), 4)
            f = rng.sample(range(len(fill)), 6)
            keys, synonyms = [kws[intent][i] for i in k[:2]], [kws[intent][i] for i in k[2:]]
            fillers, other_fillers = [fill[i] for i in f[:3]], [fill[i] for i in f[3:]]
            s1 = sentence(keys, fillers)
            if score == 5.0:
                words = s1.split()
                while " ".join(words) == s1:
                    rng.shuffle(words)
                s2 = " ".join(words)
            else:
                new_keys = synonyms if score >= 3.0 else [kws[other][i] for i in rng.sample(range(4), 2)]
                s2 = sentence(new_keys, fillers if score in (4.0, 2.0) else other_fillers)
            lines.append({"sentence1": s1, "sentence2": s2, "score": score, "level": what})
    lines[0] = {**lines[0], "toy": stamp}
    with paths.atomic_path(out, suffix=".jsonl") as tmp:
        tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return out
