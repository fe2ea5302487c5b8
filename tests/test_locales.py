import pytest

import mu
from mu.langs.locales import LOCALES, URIEL_CODES, check_locale, check_locales, uriel_code
from mu.langs.similarity import DEFAULT_FEATURE_SET, uriel_vectors


def test_51_massive_locales():
    assert len(LOCALES) == 51
    assert LOCALES[0] == "af-ZA" and LOCALES[-1] == "zh-TW"
    assert LOCALES == sorted(LOCALES)


@pytest.mark.parametrize(
    "locale,code",
    [
        ("sw-KE", "swh"),
        ("sq-AL", "als"),
        ("zh-CN", "cmn"),
        ("zh-TW", "cmn"),
        ("nb-NO", "nob"),
        ("fa-IR", "pes"),
        ("lv-LV", "lav"),
        ("mn-MN", "khk"),
        ("ms-MY", "zsm"),
        ("az-AZ", "azj"),
    ],
)
def test_documented_codes(locale, code):
    assert uriel_code(locale) == code


@pytest.mark.parametrize("feature_set", [DEFAULT_FEATURE_SET, "fam", "geo"])
def test_every_locale_resolves_in_uriel(feature_set):
    vec = uriel_vectors(LOCALES, feature_set)
    assert list(vec.index) == LOCALES
    # every locale has at least one real (non-missing) value: no silent zero vectors
    assert (vec.notna().sum(axis=1) > 0).all()
    if feature_set == DEFAULT_FEATURE_SET:
        assert vec.notna().all().all(), "the kNN-imputed default set should be complete"


def test_unknown_locale_error_names_value_and_valid_ones():
    with pytest.raises(ValueError, match=r"unknown locale 'xx-XX'.*af-ZA.*zh-TW"):
        check_locale("xx-XX")
    with pytest.raises(ValueError, match="duplicate"):
        check_locales(["de-DE", "de-DE"])
    with pytest.raises(ValueError, match="list of locales"):
        check_locales("de-DE")


def test_codes_cover_all_locales():
    assert set(URIEL_CODES) == set(mu.locales.LOCALES)
