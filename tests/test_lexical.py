"""mu.lexical: the char n-gram baseline's N×N on toy data follows the toy families."""

from __future__ import annotations

import pytest

from mu import lexical


def test_lexical_nxn_native_high_and_transfer_follows_shared_forms():
    frame = lexical.nxn(["de-DE", "nl-NL", "sw-KE"], data="toy")
    assert list(frame.index) == list(frame.columns) == ["de-DE", "nl-NL", "sw-KE"]
    assert all(frame.loc[x, x] > 0.8 for x in frame.index)  # in-language: keywords seen in training
    assert frame.loc["de-DE", "nl-NL"] > frame.loc["de-DE", "sw-KE"]  # same family shares word forms
    s = lexical.summary(frame)
    assert s["n_locales"] == 3 and s["transfer"] < s["native"]
    with pytest.raises(ValueError, match="at least one source"):
        lexical.nxn([], data="toy")
