"""Where the sources of ``python -m mu weights`` / ``merge`` come from, and what language each is.

A source is a model folder, a hub id (``owner/name``), a MASSIVE locale (its model is
``--source-pattern`` with ``{locale}`` filled in) or, for ``weights`` only, a bare language. A model's
language, needed to weigh it by URIEL, is the first of: ``--source-lang REF=LANG``; the ``locale`` mu's
training recorded (``training_args.json``); its model card's ``language`` (one entry); a MASSIVE
locale ending its folder or hub name (``..._massive_k_de-DE``). Hub sources are fetched in two steps:
their metadata (config, tokenizer, card) first, their weights only once every check has passed; a
source's tensors (names, shapes, dtypes) are read from its safetensors header, local or on the hub.

Nothing here imports torch at import time: ``python -m mu`` imports the command line at start-up.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATTERN = "haryoaw/xlm-roberta-base_massive_k_{locale}"
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
LOCALE_SUFFIX = re.compile(r"(?:^|[_\-./])([a-z]{2}-[A-Z]{2})$")
# what a hub model's metadata is made of (config, tokenizer, card): fetched before any weight
META_PATTERNS = ["*.json", "*.md", "*.model", "*.txt"]


@dataclass
class Source:
    label: str  # its name in tables and --weights
    given: str  # as on the command line (or the locale, for --source-pattern)
    ref: str | None  # model: absolute folder or hub id; None for a bare language (weights only)
    language: Any = None  # mu.langs.codes.Language or None
    local: Path | None = None  # folder holding at least its config and tokenizer
    header: dict | None = field(default=None, repr=False)

    @property
    def is_hub(self) -> bool:
        return self.ref is not None and not Path(self.ref).is_absolute()


def say(msg: str) -> None:
    """A progress line on stderr: stdout carries only the tables and the plan, so they can be piped."""
    print(f"mu: {msg}", file=sys.stderr, flush=True)


def is_hub_id(text: str) -> bool:
    return bool(HUB_ID.fullmatch(text)) and ".." not in text


def model_ref(text: str) -> str | None:
    """An existing folder (absolute) or a hub id; None when ``text`` is neither."""
    p = Path(text).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"source {text!r} is a file, not a model folder")
        return str(p.resolve())
    return text if is_hub_id(text) else None


def _lang_overrides(items: Sequence[str]) -> dict[str, Any]:
    from mu.langs import codes

    out = {}
    for item in items:
        ref, sep, lang = item.rpartition("=")
        if not sep or not ref or not lang:
            raise ValueError(f"--source-lang expects REF=LANG, got {item!r}")
        out[ref] = codes.resolve(lang)
        p = Path(ref).expanduser()
        if p.exists():
            out[str(p.resolve())] = out[ref]
    return out


def model_language(folder: Path | None, name: str) -> Any:
    """A model's language (``mu.langs.codes.Language``) from what it records, else from its name; None if unknown."""
    from mu.build import preflight
    from mu.langs import codes
    from mu.langs.locales import LOCALES

    if folder is not None:
        try:  # mu's training record; unreadable ones say nothing (the card and the name may still)
            loc = (json.loads((folder / "training_args.json").read_text(encoding="utf-8")).get("params") or {}).get(
                "locale"
            )
            return codes.resolve(loc)
        except (OSError, ValueError, AttributeError, TypeError):
            pass
        lang = preflight.front_matter(folder).get("language")
        lang = lang[0] if isinstance(lang, list) and len(lang) == 1 else lang
        if isinstance(lang, str):
            try:
                return codes.resolve(lang)
            except ValueError:
                pass
    found = LOCALE_SUFFIX.search(name.rstrip("/"))
    return codes.resolve(found[1]) if found and found[1] in LOCALES else None


def candidates(args: argparse.Namespace, *, models_only: bool) -> list[Source]:
    """The candidate sources of ``--sources`` or ``--source-pattern`` (nothing downloaded)."""
    from mu.langs import codes
    from mu.langs.locales import LOCALES

    overrides = _lang_overrides(args.source_lang)
    out: list[Source] = []
    if args.sources:
        for item in dict.fromkeys(args.sources):
            locale = next((loc for loc in LOCALES if loc.lower() == item.lower()), None)
            ref = None if locale and not Path(item).expanduser().exists() else model_ref(item)
            if locale and ref is None:
                out.append(_pattern_source(args.source_pattern, locale, must_exist=True))
                continue
            if ref is None:
                try:
                    lang = codes.resolve(item)
                except ValueError as e:
                    raise ValueError(
                        f"source {item!r} is neither a model folder, a hub id (owner/name), a MASSIVE "
                        f"locale nor a language: {e}"
                    ) from None
                if models_only:
                    raise ValueError(
                        f"source {item!r} is a language ({lang.describe()}), not a model: give a model "
                        "folder, a hub id, or a MASSIVE locale (its model comes from --source-pattern)"
                    )
                out.append(Source(label=lang.label, given=item, ref=None, language=lang))
                continue
            local = Path(ref) if Path(ref).is_absolute() else None
            lang = overrides.get(item) or overrides.get(ref) or model_language(local, ref)
            out.append(Source(label=item, given=item, ref=ref, language=lang, local=local))
    else:
        for loc in LOCALES:
            src = _pattern_source(args.source_pattern, loc, must_exist=False)
            if src is not None:
                out.append(src)
        if not out:
            raise ValueError(
                f"no source model: --source-pattern {args.source_pattern!r} names no existing folder "
                "for any MASSIVE locale"
            )
        skipped = len(LOCALES) - len(out)
        if skipped:
            say(f"{skipped} MASSIVE locale(s) have no folder at {args.source_pattern}: not candidates")
    relabel(out)
    return out


def _pattern_source(pattern: str, locale: str, must_exist: bool) -> Source | None:
    from mu.langs import codes

    if "{locale}" not in pattern:
        raise ValueError(f"--source-pattern {pattern!r} has no {{locale}}")
    text = pattern.format(locale=locale)
    p = Path(text).expanduser()
    if p.is_dir():
        return Source(
            label=locale, given=locale, ref=str(p.resolve()), language=codes.resolve(locale), local=p.resolve()
        )
    if is_hub_id(text) and not text.startswith((".", "/", "~")):
        return Source(label=locale, given=locale, ref=text, language=codes.resolve(locale))
    if must_exist:
        raise ValueError(f"no model for {locale}: {text} (--source-pattern) is neither a folder nor a hub id")
    return None


def relabel(sources: list[Source]) -> None:
    """Name a model by its language (locale or code) where that is unique among the sources, so tables
    and --weights read ``de-DE`` rather than a path; otherwise as given."""
    counts: dict[str, int] = {}
    for s in sources:
        if s.language is not None:
            counts[s.language.label] = counts.get(s.language.label, 0) + 1
    for s in sources:
        if s.language is not None and counts[s.language.label] == 1:
            s.label = s.language.label
    labels = [s.label for s in sources]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"sources given twice: {dup}")


def languages_from_cards(sources: list[Source]) -> None:
    """Hub models named without a locale: their card may say their language (fetched with the other
    small files); then relabel, as a language found may name a source."""
    for s in sources:
        if s.language is None and s.is_hub:
            fetch_meta(s)
            s.language = model_language(s.local, s.ref)
    relabel(sources)


def fetch_meta(src: Source) -> None:
    """A hub source's config, tokenizer and card (not its weights), into the hub cache."""
    if src.local is not None or src.ref is None:
        return
    from huggingface_hub import snapshot_download

    say(f"fetching the metadata of {src.ref}")
    try:
        src.local = Path(snapshot_download(src.ref, allow_patterns=META_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated: huggingface_hub raises many types
        raise ValueError(
            f"source {src.given!r}: not a local folder, and the hub id {src.ref} could not be "
            f"fetched: {type(e).__name__}: {e}"
        ) from e


def fetch_weights(src: Source) -> None:
    from mu.merge.run import local_dir

    if src.is_hub:
        say(f"downloading {src.ref}")
        src.local = local_dir(src.ref)


def header_of(src: Source) -> dict:
    """Tensor names, shapes and dtypes: from the local file, else (a hub model not downloaded yet, as in a dry
    run) from the hub's safetensors header."""
    from mu.build import preflight

    local = any((src.local / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json"))
    return preflight.header(src.local) if local or not src.is_hub else preflight.remote_header(src.ref)
