"""mu.typology on a synthetic N×N matrix whose transfer is (or is not) a function of URIEL cosine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mu import plots, similarity, typology
from mu import stats as mu_stats

LOCS = ["af-ZA", "de-DE", "nl-NL", "en-US", "fr-FR", "es-ES", "it-IT", "ru-RU", "ja-JP", "sw-KE"]
FS = similarity.DEFAULT_FEATURE_SET


def _nxn(values):
    return pd.DataFrame(values, index=pd.Index(LOCS, name="source"), columns=pd.Index(LOCS, name="target"))


def test_transfer_that_follows_cosine_correlates_perfectly_per_target():
    sim = similarity.similarity_matrix(FS).loc[LOCS, LOCS]
    nxn = _nxn(0.2 + 0.5 * sim.to_numpy())  # monotone in cosine
    got = typology.correlations(nxn, [FS, "fam"], n_boot=200)
    row = got["summary"].loc[FS]
    assert row["targets"] == len(LOCS) and row["targets_positive"] == len(LOCS)
    assert row["mean_rho_per_target"] == pytest.approx(1.0) and row["pooled_rho"] == pytest.approx(1.0)
    assert row["ci_low"] <= 1.0 <= row["ci_high"] + 1e-12 and row["wilcoxon_p"] < 0.01
    assert set(got["pairs"]["feature_set"]) == {FS, "fam"} and len(got["pairs"]) == 2 * len(LOCS) * (len(LOCS) - 1)
    assert list(got["per_target"].columns) == [FS, "fam"]
    summary = got["summary"]  # Holm over the feature sets, beside each raw p-value
    for col in ("wilcoxon_p", "pooled_p"):
        np.testing.assert_allclose(summary[f"{col}_holm"], mu_stats.holm(summary[col].to_numpy()))
        assert list(summary.columns).index(f"{col}_holm") == list(summary.columns).index(col) + 1


def test_transfer_unrelated_to_cosine_does_not_correlate():
    rng = np.random.default_rng(0)
    got = typology.correlations(_nxn(rng.uniform(size=(len(LOCS), len(LOCS)))), [FS], n_boot=200)["summary"].loc[FS]
    assert abs(got["mean_rho_per_target"]) < 0.35 and got["wilcoxon_p"] > 0.05


def test_correlations_refuse_unknown_feature_sets_and_tiny_matrices():
    nxn = _nxn(np.full((len(LOCS), len(LOCS)), 0.5))
    with pytest.raises(ValueError, match="unknown URIEL feature set 'nope'"):
        typology.correlations(nxn, ["nope"])
    with pytest.raises(ValueError, match="at least 4 locales"):
        typology.pairs(nxn.iloc[:3, :3], FS)
    # a constant matrix has no rank correlation: NaN, not a number made up
    assert typology.per_target(typology.pairs(nxn, FS)).isna().all()


def test_weight_spread_describes_the_rows_merges_receive(tmp_path):
    spread = typology.weight_spread(LOCS, top_k=5, sinkhorn_iters=20, num_languages=3)
    assert list(spread.index) == LOCS and (spread["candidates"] == len(LOCS) - 1).all()
    assert (spread["kept"] <= 5).all() and (spread["max"] >= spread["min"]).all()
    assert (spread["effective"] <= spread["kept"] + 1e-9).all() and (spread["chosen_effective"] <= 3 + 1e-9).all()
    w = similarity.weights("de-DE", [s for s in LOCS if s != "de-DE"], top_k=5, num_languages=3)
    assert spread.loc["de-DE", "chosen_max"] == pytest.approx(max(w.values()))
    corr = typology.correlations(_nxn(np.eye(len(LOCS)) * 0.5 + 0.3), [FS], n_boot=50)
    text = typology.markdown(corr, spread, top_k=5, num_languages=3)
    assert "top-K 5 over 9 candidate sources (10 targets)" in text and "| feature_set |" in text
    assert plots.similarity_vs_transfer(corr["pairs"], tmp_path / "s.png") and (tmp_path / "s.png").is_file()
    assert plots.clustered_heatmap(_nxn(np.eye(len(LOCS))), tmp_path / "c.png") and (tmp_path / "c.png").is_file()


def test_donor_quality_alone_leaves_nothing_after_adjustment():
    quality = np.linspace(0.3, 0.7, len(LOCS))[:, None] * np.ones((1, len(LOCS)))  # row = source: donor quality only
    frame = typology.pairs(_nxn(quality), FS)
    assert np.allclose(frame["transfer_vs_source_mean"], 0.0)
    got = typology.correlations(_nxn(quality), [FS], n_boot=50)["summary"].loc[FS]
    assert np.isnan(got["mean_rho_donor_adjusted"]) and np.isfinite(got["mean_rho_per_target"])
