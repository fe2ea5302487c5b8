"""The 51 MASSIVE locales and the ISO 639-3 code each maps to in URIEL (lang2vec).

Choices where more than one code exists (checked against ``lang2vec`` 1.1.2 by
calling ``get_features``, since ``l2v.URIEL_LANGUAGES`` is incomplete):

* ar-SA → ``arb`` (Standard Arabic; ``ara`` is the macrolanguage)
* az-AZ → ``azj`` (North Azerbaijani; has kNN-imputed features but no raw WALS/SSWL ones)
* fa-IR → ``pes`` (Western Farsi), mn-MN → ``khk`` (Halh Mongolian)
* lv-LV → ``lav`` (not ``lvs``: ``lvs`` has no raw features in URIEL)
* ms-MY → ``zsm`` (not ``zlm``: ``zlm`` has no raw features in URIEL)
* nb-NO → ``nob``, sq-AL → ``als`` (Tosk Albanian), sw-KE → ``swh``
* zh-CN and zh-TW → ``cmn`` (both: URIEL does not separate them, so their
  similarity is 1 and they are indistinguishable to URIEL weighting)
"""

from __future__ import annotations

URIEL_CODES: dict[str, str] = {
    "af-ZA": "afr",
    "am-ET": "amh",
    "ar-SA": "arb",
    "az-AZ": "azj",
    "bn-BD": "ben",
    "cy-GB": "cym",
    "da-DK": "dan",
    "de-DE": "deu",
    "el-GR": "ell",
    "en-US": "eng",
    "es-ES": "spa",
    "fa-IR": "pes",
    "fi-FI": "fin",
    "fr-FR": "fra",
    "he-IL": "heb",
    "hi-IN": "hin",
    "hu-HU": "hun",
    "hy-AM": "hye",
    "id-ID": "ind",
    "is-IS": "isl",
    "it-IT": "ita",
    "ja-JP": "jpn",
    "jv-ID": "jav",
    "ka-GE": "kat",
    "km-KH": "khm",
    "kn-IN": "kan",
    "ko-KR": "kor",
    "lv-LV": "lav",
    "ml-IN": "mal",
    "mn-MN": "khk",
    "ms-MY": "zsm",
    "my-MM": "mya",
    "nb-NO": "nob",
    "nl-NL": "nld",
    "pl-PL": "pol",
    "pt-PT": "por",
    "ro-RO": "ron",
    "ru-RU": "rus",
    "sl-SL": "slv",
    "sq-AL": "als",
    "sv-SE": "swe",
    "sw-KE": "swh",
    "ta-IN": "tam",
    "te-IN": "tel",
    "th-TH": "tha",
    "tl-PH": "tgl",
    "tr-TR": "tur",
    "ur-PK": "urd",
    "vi-VN": "vie",
    "zh-CN": "cmn",
    "zh-TW": "cmn",
}

#: All MASSIVE locales, sorted.
LOCALES: list[str] = sorted(URIEL_CODES)


def check_locale(locale: str) -> str:
    """Return ``locale`` if it is a MASSIVE locale, else raise naming the valid ones."""
    if locale not in URIEL_CODES:
        raise ValueError(f"unknown locale {locale!r}; valid MASSIVE locales: {', '.join(LOCALES)}")
    return locale


def check_locales(locales) -> list[str]:
    """Validate a list of locales (a lone string is refused: it is a common slip)."""
    if isinstance(locales, str):
        raise ValueError(f"expected a list of locales, got the string {locales!r}")
    out = [check_locale(loc) for loc in locales]
    dup = sorted({loc for loc in out if out.count(loc) > 1})
    if dup:
        raise ValueError(f"duplicate locales: {dup}")
    return out


def uriel_code(locale: str) -> str:
    """The ISO 639-3 code URIEL uses for a MASSIVE locale."""
    return URIEL_CODES[check_locale(locale)]
