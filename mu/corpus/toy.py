"""The generated toy corpus: eight typologically structured "languages" in the MASSIVE release
layout, made offline by ``make_toy`` (source ``"toy"`` of ``mu.corpus.data.load_split``).

A proto lexicon becomes family forms by a regular sound shift and language forms by one-letter
changes, so same-family languages share most word forms and different families few; word order
and a Bantu keyword prefix differ by family. ``toy_lexicon`` gives a locale's words (the toy STS
pairs of ``mu.corpus.sts`` are built from them).
"""

from __future__ import annotations

import json
import os
import random
import zlib
from collections.abc import Sequence
from pathlib import Path

from mu.core import paths
from mu.corpus.massive import INTENTS

TOY_LOCALES = ["af-ZA", "de-DE", "nl-NL", "en-US", "fr-FR", "es-ES", "it-IT", "sw-KE"]
TOY_FAMILIES = {
    "af-ZA": "germanic",
    "de-DE": "germanic",
    "nl-NL": "germanic",
    "en-US": "germanic",
    "fr-FR": "romance",
    "es-ES": "romance",
    "it-IT": "romance",
    "sw-KE": "bantu",
}
# Toy word order: these mostly put the intent keywords after the fillers ("verb-final"), the others
# mostly before; an utterance follows its language's dominant order with probability TOY_ORDER_BIAS.
TOY_KEYWORDS_LAST = frozenset({"af-ZA", "de-DE", "nl-NL"})
TOY_ORDER_BIAS = 0.8
# Noun-class-like prefix on every keyword, per family.
TOY_KEYWORD_PREFIX = {"germanic": "", "romance": "", "bantu": "ku"}

_CONSONANTS = "ptkbdgmnlrsvfz"
_VOWELS = "aeiou"


def _rng(*parts: object) -> random.Random:
    return random.Random(zlib.crc32("/".join(map(str, parts)).encode()))


def _proto_word(rng: random.Random) -> str:
    word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3)))
    return word + (rng.choice("nrsl") if rng.random() < 0.4 else "")


def _sound_shift(rng: random.Random) -> dict[str, str]:
    """A family's regular sound change: some consonants and vowels map to others."""
    shift = {c: rng.choice(_CONSONANTS.replace(c, "")) for c in rng.sample(_CONSONANTS, 6)}
    shift.update({v: rng.choice(_VOWELS.replace(v, "")) for v in rng.sample(_VOWELS, 2)})
    return shift


def _mutate_one(word: str, rng: random.Random) -> str:
    """Replace one letter by another of the same kind (consonant/vowel)."""
    i = rng.randrange(len(word))
    pool = _VOWELS if word[i] in _VOWELS else _CONSONANTS
    return word[:i] + rng.choice(pool.replace(word[i], "")) + word[i + 1 :]


def _family_form(word: str, shift: dict[str, str], rng: random.Random) -> str:
    """The family's sound shift, applied to ~70% of words (the rest stay cognate with the proto form)."""
    return "".join(shift.get(c, c) for c in word) if rng.random() < 0.7 else word


def _language_form(word: str, rng: random.Random) -> str:
    """A one-letter change on ~25% of a family's words."""
    return _mutate_one(word, rng) if rng.random() < 0.25 else word


def _toy_lexicons(locales: Sequence[str], num_intents: int, seed: int) -> dict[str, dict]:
    """Proto lexicon -> family forms -> language forms; each locale's lexicon depends only on its own family."""
    rng = _rng("proto", seed)
    proto: list[str] = []
    while len(proto) < 4 * num_intents + 24:  # 4 keywords per intent, then 24 fillers, all distinct
        if (w := _proto_word(rng)) not in proto:
            proto.append(w)
    proto_kw = [proto[4 * i : 4 * i + 4] for i in range(num_intents)]
    proto_fill = proto[4 * num_intents :]
    family_forms = {}
    for fam in sorted({TOY_FAMILIES[loc] for loc in locales}):
        frng = _rng("family", fam, seed)
        shift = _sound_shift(frng)
        family_forms[fam] = (
            [[TOY_KEYWORD_PREFIX[fam] + _family_form(w, shift, frng) for w in kws] for kws in proto_kw],
            [_family_form(w, shift, frng) for w in proto_fill],
        )
    out = {}
    for loc in locales:
        lrng = _rng("language", loc, seed)
        kws, fill = family_forms[TOY_FAMILIES[loc]]
        out[loc] = {
            "keywords": [[_language_form(w, lrng) for w in ks] for ks in kws],
            "fillers": [_language_form(w, lrng) for w in fill],
        }
    return out


def toy_lexicon(locale: str, num_intents: int = 12, seed: int = 0) -> dict[str, list]:
    """A toy locale's words as ``make_toy`` (same defaults) uses them: ``keywords`` (4 per intent)
    and ``fillers`` (24)."""
    if locale not in TOY_FAMILIES:
        raise ValueError(f"unknown toy locale {locale!r}; valid: {TOY_LOCALES}")
    return _toy_lexicons([locale], num_intents, seed)[locale]


# Tokens shared unchanged by every toy language (numbers, names): they carry no intent information.
_TOY_SHARED = ["3", "7", "12", "20", "anna", "omar", "lima", "tokyo", "maria", "kenji"]


def make_toy(
    out_dir: str | os.PathLike | None = None,
    locales: Sequence[str] = TOY_LOCALES,
    num_intents: int = 12,
    train_per_intent: int = 24,
    dev_per_intent: int = 4,
    test_per_intent: int = 8,
    seed: int = 0,
) -> Path:
    """Generate the toy MASSIVE-layout dataset (``<out_dir>/<locale>.jsonl``) and return its folder.

    Typologically structured "languages": a proto lexicon (4 keywords per intent,
    24 fillers) is turned into family forms by a regular sound shift applied to
    ~70% of words (Germanic af/de/nl/en, Romance fr/es/it, Bantu sw; Bantu also
    prefixes keywords with ``ku``), then into language forms by a one-letter
    change on ~25% of words. Same-family languages thus share most word forms,
    different families few (only unshifted cognates and the shared numbers and
    names). Word order differs: af/de/nl put the keywords after the fillers, the
    others before (each in 80% of utterances, ``TOY_ORDER_BIAS``). Utterances are
    parallel across locales (same ``id``, intent, keyword/filler choice), like
    MASSIVE: 1-2 intent keywords, 2-5 fillers, sometimes a shared token, and in
    10% a distractor keyword of another intent.
    Intents are the first ``num_intents`` of ``INTENTS`` (label space stays 60).

    Deterministic in ``seed``; written atomically, and only regenerated when the
    folder is missing or was made with other arguments (``toy_args.json``).
    """
    unknown = [loc for loc in locales if loc not in TOY_FAMILIES]
    if unknown:
        raise ValueError(f"unknown toy locale(s) {unknown}; valid: {TOY_LOCALES}")
    if not 2 <= num_intents <= len(INTENTS):
        raise ValueError(f"num_intents must be in [2, {len(INTENTS)}], got {num_intents}")
    out = paths.resolve(out_dir) if out_dir is not None else paths.cache_dir("data", "toy")
    args = {
        "locales": list(locales),
        "num_intents": num_intents,
        "train_per_intent": train_per_intent,
        "dev_per_intent": dev_per_intent,
        "test_per_intent": test_per_intent,
        "seed": seed,
        "version": 2,
    }
    stamp = out / "toy_args.json"
    if stamp.is_file() and paths.read_json(stamp) == args:
        return out

    lexicons = _toy_lexicons(locales, num_intents, seed)
    rng = _rng("utterances", seed)
    plans = []  # language-independent utterance plans, realised per locale below
    for split, per_intent in (("train", train_per_intent), ("dev", dev_per_intent), ("test", test_per_intent)):
        for intent in range(num_intents):
            for _ in range(per_intent):
                kw = rng.sample(range(4), rng.choice((1, 1, 2)))
                fill = rng.sample(range(24), rng.randint(2, 5))
                shared = rng.choice(_TOY_SHARED) if rng.random() < 0.3 else None
                distractor = None
                if rng.random() < 0.1:
                    distractor = (rng.choice([i for i in range(num_intents) if i != intent]), rng.randrange(4))
                plans.append((split, intent, kw, fill, shared, distractor, rng.random(), rng.random()))
    order = list(range(len(plans)))
    rng.shuffle(order)

    with paths.atomic_path(out) as tmp:
        tmp.mkdir()
        for loc in locales:
            lex = lexicons[loc]
            lines = []
            for uid in order:
                split, intent, kw, fill, shared, distractor, pos, order_draw = plans[uid]
                body = [lex["fillers"][i] for i in fill]
                if shared:
                    body.insert(int(pos * len(body)), shared)
                if distractor:
                    body.insert(int(pos * 7) % (len(body) + 1), lex["keywords"][distractor[0]][distractor[1]])
                keys = [lex["keywords"][intent][i] for i in kw]
                last = (loc in TOY_KEYWORDS_LAST) == (order_draw < TOY_ORDER_BIAS)
                words = body + keys if last else keys + body
                name = INTENTS[intent]
                lines.append(
                    json.dumps(
                        {
                            "id": str(uid),
                            "locale": loc,
                            "partition": split,
                            "scenario": name.split("_")[0],
                            "intent": name,
                            "utt": " ".join(words),
                        },
                        ensure_ascii=False,
                    )
                )
            (tmp / f"{loc}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "toy_args.json").write_text(json.dumps(args, indent=2) + "\n", encoding="utf-8")
    return out
