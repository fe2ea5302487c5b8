"""Languages beyond MASSIVE's 51: resolve what a user types to a URIEL (lang2vec) code, and weigh
source languages for any target that URIEL knows.

``resolve(text)`` accepts, in this order:

* a MASSIVE locale (``sw-KE``; case-insensitive): its URIEL code from ``mu.langs.locales``;
* a code lang2vec knows (``lang2vec.lang2vec.LANGUAGES``: ISO 639-3, ``yor``, ``eus``, ``quy``);
* an ISO 639-1 code lang2vec maps (``yo`` → ``yor``, its ``LETTER_CODES``), also as the language
  subtag of a tag (``yo-NG``);
* an English language name (``Yoruba``) where Babel (installed with Jupyter) knows it.

Anything else is a ValueError naming the nearest valid codes (difflib over lang2vec's codes, the
MASSIVE locales and the language names). lang2vec has no language names of its own; the names
shown come from Babel where it is importable, and are left out otherwise.

``uriel_weights(target, candidates, ...)`` is ``mu.langs.similarity.weights`` for a target that need
not be a MASSIVE locale: the same cosine of lang2vec vectors, top-K filter and Sinkhorn
normalisation (``mu.langs.similarity``'s functions), over the candidates plus the target. For a MASSIVE
target and MASSIVE candidates it gives ``mu.langs.similarity.weights``'s result.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from mu.langs import similarity, uriel
from mu.langs.locales import LOCALES, URIEL_CODES

_LOCALE_BY_LOWER = {loc.lower(): loc for loc in LOCALES}


@dataclass(frozen=True)
class Language:
    """A resolved language: ``code`` is what lang2vec is asked for; ``label`` names it in tables
    (the MASSIVE locale when it is one, else the code); ``locale`` is None outside MASSIVE."""

    code: str
    label: str
    locale: str | None = None
    name: str | None = None

    @property
    def iso639_1(self) -> str | None:
        """The two-letter code (``yo``) where one exists: what model cards' ``language`` prefers."""
        if self.locale:
            return self.locale.split("-")[0]
        return _two_letter().get(self.code)

    def describe(self) -> str:
        parts = [self.label]
        if self.locale:
            parts.append(f"URIEL {self.code}")
        if self.name:
            parts.append(self.name)
        return f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]


@lru_cache(maxsize=1)
def uriel_codes() -> frozenset[str]:
    """Every code lang2vec gives vectors for (its ``LANGUAGES``: URIEL's plus the learned set)."""
    return frozenset(str(c) for c in uriel._l2v().LANGUAGES)


@lru_cache(maxsize=1)
def _letter_codes() -> dict[str, str]:
    return {str(k): str(v) for k, v in uriel._l2v().LETTER_CODES.items()}


@lru_cache(maxsize=1)
def _two_letter() -> dict[str, str]:
    return {v: k for k, v in sorted(_letter_codes().items()) if len(k) == 2}  # not 639-2/B (ger, baq)


@lru_cache(maxsize=1)
def names() -> dict[str, str]:
    """{code: English name} for the codes Babel names (two- and three-letter); empty without Babel."""
    try:
        from babel import Locale
    except ImportError:  # names are a convenience: codes work without them
        return {}
    return {str(k): str(v) for k, v in Locale("en").languages.items() if re.fullmatch(r"[a-z]{2,3}", str(k))}


def name_of(code: str) -> str | None:
    """English name of a lang2vec code, via its two-letter code when Babel names only that."""
    table = names()
    return table.get(code) or table.get(_two_letter().get(code, ""))


def _language(code: str, locale: str | None = None) -> Language:
    name = name_of(code) or (names().get(locale.split("-")[0]) if locale else None)  # swh: via sw-KE's sw
    return Language(code=code, label=locale or code, locale=locale, name=name)


def resolve(text: str) -> Language:
    """The language ``text`` names (see the module docstring); ValueError naming the nearest codes."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty language code {text!r}")
    raw = text.strip()
    key = raw.lower().replace("_", "-")
    if key in _LOCALE_BY_LOWER:
        locale = _LOCALE_BY_LOWER[key]
        return _language(URIEL_CODES[locale], locale)
    codes = uriel_codes()
    if key in codes:
        return _language(key)
    sub = key.split("-")[0]
    for candidate in (key, sub):
        mapped = _letter_codes().get(candidate)
        if mapped in codes:
            return _language(mapped)
        if candidate != key and candidate in codes:
            return _language(candidate)
    by_name = {v.lower(): k for k, v in names().items()}
    if key in by_name:
        code = by_name[key]
        code = _letter_codes().get(code, code)
        if code in codes:
            return _language(code)
    raise ValueError(_unknown_message(raw))


def _unknown_message(raw: str) -> str:
    key = raw.lower()
    codes = sorted(uriel_codes())
    near = difflib.get_close_matches(key, codes, n=6, cutoff=0.6)
    near += [c for c in difflib.get_close_matches(raw, LOCALES, n=3, cutoff=0.6) if c not in near]
    table = names()
    by_lower = {v.lower(): k for k, v in table.items()}
    for name in difflib.get_close_matches(key, list(by_lower), n=4, cutoff=0.7):
        code = _letter_codes().get(by_lower[name], by_lower[name])
        if code in uriel_codes() and code not in near:
            near.append(code)
    where = ""
    if key in _letter_codes() or key in by_lower:  # a real language lang2vec lacks (e.g. a macrolanguage)
        what = by_lower.get(key, key)
        what = _letter_codes().get(what, what)
        where = f" ({raw!r} is {what!r}, which lang2vec has no vector for: a macrolanguage or an unlisted code)"
        # a macrolanguage's members often share its first letters (que: quy, quz, ...)
        near = [c for c in codes if c.startswith(what[:2]) and c not in near][:16] + near
    near = near[:16]
    shown = ", ".join(f"{c} ({name_of(c)})" if name_of(c) else c for c in near) or "none close"
    return (
        f"unknown language {raw!r}{where}; nearest valid codes: {shown}. Give a MASSIVE locale "
        f"(e.g. sw-KE), an ISO 639-3 code lang2vec knows (lang2vec.lang2vec.LANGUAGES, "
        f"{len(uriel_codes())} codes) or an ISO 639-1 code"
    )


def excluded(target: Language, candidates: Mapping[str, Language]) -> list[str]:
    """Candidates that are the target's own language, left out so the classifier never trains on it.
    A MASSIVE target excludes its own locale only (as ``mu.langs.similarity`` does: zh-TW stays a source of
    zh-CN, URIEL does not separate them); a code target excludes every candidate with that code."""
    if target.locale:
        return [k for k, lang in candidates.items() if lang.locale == target.locale or k == target.locale]
    return [k for k, lang in candidates.items() if lang.code == target.code]


def uriel_table(
    target: Language,
    candidates: Mapping[str, Language],
    *,
    top_k: int = 20,
    num_languages: int = 5,
    sinkhorn_iters: int = 20,
    feature_set: str = similarity.DEFAULT_FEATURE_SET,
) -> pd.DataFrame:
    """One row per candidate (``{label: Language}``, the target's own language excluded by the caller):
    ``code``, ``similarity`` (cosine of the lang2vec vectors), ``distance`` (1 − similarity),
    ``in_top_k``, ``sinkhorn`` (the target's row after top-K and Sinkhorn) and ``weight`` (the
    ``num_languages`` largest Sinkhorn weights, renormalised; 0 for the others), best first."""
    similarity.check_feature_set(feature_set)
    top_k = similarity._check_positive("top_k", top_k)
    num_languages = similarity._check_positive("num_languages", num_languages)
    if not candidates:
        raise ValueError(f"no source language is left for target {target.label} (its own language is excluded)")
    if target.label in candidates:
        raise ValueError(f"the target {target.label} is among its own candidates")
    labels = [*candidates, target.label]
    langs = {**candidates, target.label: target}
    vec = _vectors(sorted({lang.code for lang in langs.values()}), feature_set)
    empty = [f"{k} ({langs[k].code})" for k in labels if vec.loc[langs[k].code].isna().all()]
    if empty:
        raise ValueError(
            f"no URIEL {feature_set!r} features for {', '.join(empty)}; choose a feature set that "
            f"covers them, e.g. {similarity.DEFAULT_FEATURE_SET!r}"
        )
    rows = vec.loc[[langs[k].code for k in labels]].copy()
    rows.index = labels
    sim = uriel.cosine(rows)
    norm = similarity.sinkhorn(similarity.top_k_filter(sim, top_k), sinkhorn_iters)
    frame = pd.DataFrame(
        {
            "code": [langs[k].code for k in labels],
            "similarity": sim.loc[target.label],
            "sinkhorn": norm.loc[target.label],
        },
        index=labels,
    ).drop(target.label)
    frame["distance"] = 1.0 - frame["similarity"]
    frame["in_top_k"] = frame["sinkhorn"] > 0
    frame = frame.sort_values(["sinkhorn", "similarity"], ascending=False, kind="mergesort")
    chosen = frame.loc[frame["in_top_k"], "sinkhorn"].iloc[:num_languages]
    weights = similarity.check_weights(chosen.to_dict())
    frame["weight"] = [weights.get(k, 0.0) for k in frame.index]
    frame.index.name = "source"
    return frame[["code", "similarity", "distance", "in_top_k", "sinkhorn", "weight"]]


def uriel_weights(target: Language, candidates: Mapping[str, Language], **kwargs) -> dict[str, float]:
    """``{label: weight}`` (summing to 1, best first) of ``uriel_table``."""
    frame = uriel_table(target, candidates, **kwargs)
    return {k: float(w) for k, w in frame["weight"].items() if w > 0}


def _vectors(codes: Sequence[str], feature_set: str) -> pd.DataFrame:
    only_learned = [c for c in codes if c not in {str(x) for x in uriel._l2v().URIEL_LANGUAGES}]
    if only_learned and feature_set != "learned":
        raise ValueError(
            f"lang2vec has only a 'learned' vector for {only_learned}, no URIEL {feature_set!r} "
            "features; use --feature-set learned or another language"
        )
    frame = uriel._vectors(tuple(codes), feature_set)
    return frame.astype(np.float64)
