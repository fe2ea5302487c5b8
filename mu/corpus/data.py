"""MASSIVE intent data: one fixed 60-intent label space, three sources.

``load_split(locale, split, source)`` returns a ``datasets.Dataset`` with
columns ``id`` (str), ``text`` (str), ``label`` (int, index into ``INTENTS``).
``source`` is ``"toy"`` (generated offline by ``make_toy``), ``"hub"``
(``AmazonScience/massive``), ``"massive"`` (the local MASSIVE 1.1 copy, ``massive_dir()``)
or a folder in the MASSIVE release layout (``<dir>/<locale>.jsonl`` or ``.jsonl.gz``, one
JSON object per line with ``partition``, ``intent``, ``utt`` and optionally ``locale`` and ``id``;
the official release archive's ``1.1/data/`` works as is). Besides MASSIVE's ``train``/``dev``/``test``, a
folder written by ``mu.experiment.subsample`` holds the ``unlabeled`` pool (``mu.corpus.pools``); the toy data
and the hub have none, and asking them for it is a ValueError saying so (adapt on ``train`` there).

MASSIVE: FitzGerald et al. 2022, "MASSIVE: A 1M-Example Multilingual Natural Language
Understanding Dataset with 51 Typologically-Diverse Languages", CC BY 4.0.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import random
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from datasets import Dataset

from mu.core import paths
from mu.corpus import pools

# The 60 intents in the order of the HF dataset's ``intent`` ClassLabel (massive.py ``_INTENTS``).
INTENTS: list[str] = [
    "datetime_query",
    "iot_hue_lightchange",
    "transport_ticket",
    "takeaway_query",
    "qa_stock",
    "general_greet",
    "recommendation_events",
    "music_dislikeness",
    "iot_wemo_off",
    "cooking_recipe",
    "qa_currency",
    "transport_traffic",
    "general_quirky",
    "weather_query",
    "audio_volume_up",
    "email_addcontact",
    "takeaway_order",
    "email_querycontact",
    "iot_hue_lightup",
    "recommendation_locations",
    "play_audiobook",
    "lists_createoradd",
    "news_query",
    "alarm_query",
    "iot_wemo_on",
    "general_joke",
    "qa_definition",
    "social_query",
    "music_settings",
    "audio_volume_other",
    "calendar_remove",
    "iot_hue_lightdim",
    "calendar_query",
    "email_sendemail",
    "iot_cleaning",
    "audio_volume_down",
    "play_radio",
    "cooking_query",
    "datetime_convert",
    "qa_maths",
    "iot_hue_lightoff",
    "iot_hue_lighton",
    "transport_query",
    "music_likeness",
    "email_query",
    "play_music",
    "audio_volume_mute",
    "social_post",
    "alarm_set",
    "qa_factoid",
    "calendar_set",
    "play_game",
    "alarm_remove",
    "lists_remove",
    "transport_taxi",
    "recommendation_movies",
    "iot_coffee",
    "music_query",
    "play_podcasts",
    "lists_query",
]
ID2LABEL: dict[int, str] = dict(enumerate(INTENTS))
LABEL2ID: dict[str, int] = {name: i for i, name in ID2LABEL.items()}

SPLITS = ("train", "dev", "test")  # MASSIVE's labeled splits; a subsampled folder may add "unlabeled" (mu.corpus.pools)
HUB_DATASET = "AmazonScience/massive"
REQUIRED_KEYS = ("partition", "intent", "utt")
MASSIVE_ENV = "MU_MASSIVE_DIR"  # overrides massive_dir()
DATA_SUFFIXES = (".jsonl", ".jsonl.gz")


def massive_dir() -> Path:
    """The local MASSIVE 1.1 folder (source ``"massive"``): ``$MU_MASSIVE_DIR`` if set, else
    ``../shared/massive/1.1`` beside the checkout that holds this package (not under ``$MU_ROOT``)."""
    env = os.environ.get(MASSIVE_ENV)
    return Path(env).resolve() if env else paths.CHECKOUT.parent / "shared" / "massive" / "1.1"


def locale_file(folder: str | os.PathLike, locale: str) -> Path:
    """``<folder>/<locale>.jsonl`` or ``<locale>.jsonl.gz`` (the first that exists); ValueError listing
    the folder's locales if neither does."""
    folder = Path(folder)
    for suffix in DATA_SUFFIXES:
        if (path := folder / f"{locale}{suffix}").is_file():
            return path
    have = sorted({p.name.split(".")[0] for s in DATA_SUFFIXES for p in folder.glob(f"*{s}")})
    raise ValueError(
        f"no data file for locale {locale!r}: neither {locale}.jsonl nor {locale}.jsonl.gz "
        f"in {folder}; locales there: {have}"
    )


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


def _check_split(split: str, source: object = None) -> None:
    if split not in pools.PARTITIONS:
        raise ValueError(f"unknown split {split!r}; valid: {list(pools.PARTITIONS)} (the hub's 'validation' is 'dev')")
    if split == pools.UNLABELED and source in ("toy", "hub"):
        raise ValueError(pools.no_pool(f"data source {source!r}"))


def load_split(locale: str, split: str, source: str | os.PathLike = "toy") -> Dataset:
    """One locale's split as a Dataset with columns ``id``, ``text``, ``label``.

    Memoised per process (a local file by its path, size and modification time), so
    loops such as the N×N matrix read and validate each split once.
    """
    _check_split(split, source)
    if source == "hub":
        return _load_hub(locale, split)
    if source == "toy":
        if locale not in TOY_LOCALES:
            raise ValueError(f"unknown toy locale {locale!r}; valid: {TOY_LOCALES}")
        folder = make_toy()
    elif source == "massive":
        folder = massive_dir()
        if not folder.is_dir():
            raise ValueError(
                f"data source 'massive': {folder} does not exist; put MASSIVE 1.1 "
                f"(<locale>.jsonl[.gz]) there or set ${MASSIVE_ENV} to its folder"
            )
    else:
        folder = paths.resolve(source)
        if not folder.is_dir():
            raise ValueError(f"data source {str(source)!r} is neither 'toy', 'hub', 'massive' nor an existing folder")
    stat = locale_file(folder, locale).stat()
    return _load_local(str(folder), locale, split, (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=512)
def _load_local(folder: str, locale: str, split: str, version: tuple[int, int] | None) -> Dataset:
    rows = read_locale_file(folder, locale)[split]
    if not rows and split == pools.UNLABELED:
        raise ValueError(pools.no_pool(str(locale_file(folder, locale))))
    return _to_dataset(rows, f"{locale_file(folder, locale)} [{split}]")


def load_texts(locales: Sequence[str], split: str, source: str | os.PathLike = "toy") -> list[str]:
    """All utterances of ``split`` over ``locales`` (e.g. to train a toy tokenizer)."""
    return [t for loc in locales for t in load_split(loc, split, source)["text"]]


def unlabeled(
    locale: str, split: str, source: str | os.PathLike = "toy", *, num_examples: int | None = None, seed: int = 42
) -> list[str]:
    """The utterances of one locale's split *without their labels*: the only view of a target's
    data that label-free adaptation (``mu.merge.adamerging``, ``mu.combine.distill``) receives.

    ``num_examples`` texts drawn with ``seed`` (all of them, in file order, when ``None`` or
    larger than the split). Reads the ``text`` column only. ``split="unlabeled"``: the unlabeled pool,
    no id of which is labeled in any locale (``mu.corpus.pools``).
    """
    ds = load_split(locale, split, source)
    texts = list(ds["text"])
    if num_examples is None or num_examples >= len(texts):
        return texts
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1 or None, got {num_examples}")
    return [texts[i] for i in sorted(random.Random(seed).sample(range(len(texts)), num_examples))]


def held_out(texts: Sequence[str], fraction: float, seed: int = 42) -> tuple[list[str], list[str]]:
    """(fit, held-out) of unlabeled ``texts``: ``round(fraction * n)`` texts drawn with ``seed`` are held
    out (at least one when ``fraction`` > 0, never all), both parts in their original order. The label-free
    stopping and selection rules of the adapted family score the held-out part; training sees the rest."""
    texts = [str(t) for t in texts]
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    n = 0 if fraction == 0 else min(len(texts) - 1, max(1, round(fraction * len(texts))))
    if n < (fraction > 0):
        raise ValueError(f"cannot hold out a fraction {fraction} of {len(texts)} text(s) and keep one to train on")
    held = set(random.Random(seed).sample(range(len(texts)), n))
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


def fingerprint(ds: Dataset) -> str:
    """sha256 over the (id, text, label) rows of a split: identifies its content in caches."""
    h = hashlib.sha256()
    for i, t, y in zip(ds["id"], ds["text"], ds["label"], strict=True):
        h.update(f"{i}\t{t}\t{y}\n".encode())
    return h.hexdigest()


def _to_dataset(rows: list[dict], where: str) -> Dataset:
    if not rows:
        raise ValueError(f"{where}: no examples")
    return Dataset.from_dict(
        {"id": [r["id"] for r in rows], "text": [r["text"] for r in rows], "label": [r["label"] for r in rows]}
    )


def raw_lines(path: str | os.PathLike) -> Iterator[bytes]:
    """The lines (bytes) of a file, gunzipped when its name ends in ``.gz`` (as in the MASSIVE release
    copies); a ``.gz`` that is not gzip, truncated or damaged is a ValueError naming the file."""
    if not str(path).endswith(".gz"):
        with open(path, "rb") as f:
            yield from f
        return
    lineno = 0
    try:
        with gzip.open(path, "rb") as f:
            yield from f
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        if lineno == 0 and isinstance(e, gzip.BadGzipFile):
            raise ValueError(f"{path}: not a gzip file ({e}); a .gz data file must be gzip-compressed JSONL") from None
        raise ValueError(
            f"{path}: truncated or damaged gzip data after line {lineno} ({type(e).__name__}: {e})"
        ) from None


def jsonl_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each non-empty line of a JSONL file (``.jsonl.gz``: gunzipped); a
    line that is not valid UTF-8 or not a JSON object, or a damaged ``.gz``, is a ValueError naming the file
    (and line)."""
    for lineno, raw in enumerate(raw_lines(path), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}:{lineno}: invalid UTF-8 (byte {raw[e.start : e.start + 1]!r} at column {e.start + 1})"
            ) from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: bad JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_locale_file(folder: str | os.PathLike, locale: str) -> dict[str, list[dict]]:
    """Parse and validate ``<folder>/<locale>.jsonl`` (or ``.jsonl.gz``); rows grouped by split.

    Every line must be valid UTF-8 and a JSON object with a known ``partition`` and
    ``intent`` and a non-empty ``utt`` (all strings), and a unique non-null ``id`` when it
    has one; any bad line is a ValueError naming the file and line.
    """
    path = locale_file(folder, locale)
    out: dict[str, list[dict]] = {s: [] for s in pools.PARTITIONS}
    seen: dict[str, int] = {}  # id -> line of its first occurrence
    for lineno, obj in jsonl_objects(path):
        where = f"{path}:{lineno}"
        missing = [k for k in REQUIRED_KEYS if k not in obj]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}; every line needs {list(REQUIRED_KEYS)}")
        for key in (*REQUIRED_KEYS, "locale"):
            if key in obj and not isinstance(obj[key], str):
                raise ValueError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__} {obj[key]!r}")
        if "id" in obj:
            uid = obj["id"]
            if uid is None or isinstance(uid, bool) or not isinstance(uid, (str, int)) or not str(uid).strip():
                raise ValueError(f"{where}: 'id' must be a non-empty string (or an integer), got {uid!r}")
            if str(uid) in seen:
                raise ValueError(f"{where}: duplicate id {uid!r} (first on line {seen[str(uid)]})")
            seen[str(uid)] = lineno
        if obj["partition"] not in pools.PARTITIONS:
            raise ValueError(f"{where}: unknown partition {obj['partition']!r}; valid: {list(pools.PARTITIONS)}")
        if obj["intent"] not in LABEL2ID:
            raise ValueError(f"{where}: unknown intent {obj['intent']!r}; valid (MASSIVE): {INTENTS}")
        if not obj["utt"].strip():
            raise ValueError(f"{where}: 'utt' must be a non-empty string, got {obj['utt']!r}")
        if obj.get("locale", locale) != locale:
            raise ValueError(f"{where}: line has locale {obj['locale']!r} but the file is for {locale!r}")
        out[obj["partition"]].append(
            {"id": str(obj.get("id", lineno)), "text": obj["utt"], "label": LABEL2ID[obj["intent"]]}
        )
    return out


# --------------------------------------------------------------------------- hub


@functools.lru_cache(maxsize=256)
def _load_hub(locale: str, split: str) -> Dataset:
    """``AmazonScience/massive`` from the hub (its parquet conversion: the repo's loader is a script,
    which ``datasets>=4`` no longer runs). Needs network."""
    import datasets

    from mu.langs import locales as _locales

    _locales.check_locale(locale)
    hub_split = {"train": "train", "dev": "validation", "test": "test"}[split]
    ds = datasets.load_dataset(
        HUB_DATASET,
        revision="refs/convert/parquet",
        data_files={hub_split: f"{locale}/{hub_split}/*.parquet"},
        split=hub_split,
    )
    feature = ds.features["intent"]
    if getattr(feature, "names", None) != INTENTS:
        raise ValueError(
            f"{HUB_DATASET} {locale}/{hub_split}: intent labels {getattr(feature, 'names', feature)} "
            f"differ from mu.corpus.data.INTENTS"
        )
    return _to_dataset(
        [{"id": str(i), "text": t, "label": y} for i, t, y in zip(ds["id"], ds["utt"], ds["intent"], strict=True)],
        f"{HUB_DATASET} {locale}/{hub_split}",
    )


# --------------------------------------------------------------------------- toy data

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
