"""The MASSIVE release on disk: its 60-intent label space, its file layout and the reading and
validation of its files.

A folder in the MASSIVE release layout holds ``<locale>.jsonl`` or ``<locale>.jsonl.gz``, one JSON
object per line with ``partition``, ``intent``, ``utt`` and optionally ``locale`` and ``id`` (the
official release archive's ``1.1/data/`` works as is); ``massive_dir()`` is the local MASSIVE 1.1
copy. ``mu.corpus.data`` turns a validated file into a split's Dataset; the generated toy corpus
(``mu.corpus.toy``) is written in the same layout.

MASSIVE: FitzGerald et al. 2022, "MASSIVE: A 1M-Example Multilingual Natural Language
Understanding Dataset with 51 Typologically-Diverse Languages", CC BY 4.0.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

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
