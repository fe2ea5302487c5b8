import numpy as np
import pandas as pd
import pytest

from mu import similarity as sim
from mu.langs import uriel
from mu.langs.locales import LOCALES

TOY = ["af-ZA", "de-DE", "nl-NL", "en-US", "fr-FR", "es-ES", "it-IT", "sw-KE"]


@pytest.fixture(scope="module")
def matrix():
    return sim.compute_matrix(LOCALES)


def test_matrix_is_symmetric_cosine(matrix):
    assert matrix.shape == (51, 51)
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T)
    assert np.allclose(np.diag(matrix), 1.0)
    assert matrix.to_numpy().max() <= 1 + 1e-12
    # zh-CN and zh-TW share the code cmn
    assert matrix.loc["zh-CN", "zh-TW"] == pytest.approx(1.0)
    # cosine computed by hand for one pair
    v = sim.uriel_vectors(["de-DE", "nl-NL"]).to_numpy()
    assert matrix.loc["de-DE", "nl-NL"] == pytest.approx(v[0] @ v[1] / np.linalg.norm(v[0]) / np.linalg.norm(v[1]))


def test_the_declared_feature_sets_are_lang2vecs():
    """mu names the sets without importing lang2vec (seconds); the copy must be lang2vec's own list, in order."""
    assert uriel.FEATURE_SETS == tuple(uriel._l2v().FEATURE_SETS)
    with pytest.raises(ValueError, match="unknown URIEL feature set 'syntax_knm'.*valid: syntax_wals"):
        sim.check_feature_set("syntax_knn+syntax_knm")


def test_uriel_vectors_read_back_from_the_shared_cache_are_lang2vecs_exactly(tmp_path, monkeypatch):
    """Kept once per lang2vec version, feature set and codes; read back bit for bit, gaps (NaN) included."""
    monkeypatch.setenv("MU_SHARED_CACHE", str(tmp_path))
    codes = ("afr", "deu", "swh")
    uriel._vectors.cache_clear()
    computed = uriel._vectors(codes, "syntax_wals")  # a raw set: it has gaps
    path = uriel.vectors_path(codes, "syntax_wals")
    assert path.is_file() and path.parent.parent == tmp_path and computed.isna().any().any()
    uriel._vectors.cache_clear()
    cached = uriel._vectors(codes, "syntax_wals")
    assert list(cached.index) == list(codes) and list(cached.columns) == list(computed.columns)
    assert np.array_equal(cached.to_numpy(), computed.to_numpy(), equal_nan=True)
    assert uriel.vectors_path(codes, "fam") != path and uriel.vectors_path(codes[:2], "syntax_wals") != path
    path.write_text(path.read_text().splitlines()[0] + "\n")  # a file cut after its header: damaged, rebuilt
    uriel._vectors.cache_clear()
    with pytest.warns(UserWarning, match="corrupt URIEL vectors"):
        rebuilt = uriel._vectors(codes, "syntax_wals")
    assert np.array_equal(rebuilt.to_numpy(), computed.to_numpy(), equal_nan=True)
    uriel._vectors.cache_clear()


def test_cosine_ignores_missing_dimensions():
    vec = pd.DataFrame([[1.0, np.nan, 1.0], [1.0, 5.0, 1.0], [0.0, 1.0, np.nan]], index=["a", "b", "c"])
    c = sim.cosine(vec)
    assert c.loc["a", "b"] == pytest.approx(1.0)  # dimension 1 is missing for a
    assert c.loc["b", "c"] == pytest.approx(5 / np.sqrt(26))  # dims both have: 0 and 1


def test_top_k_keeps_exactly_k(matrix):
    for k in (1, 5, 20, 50):
        f = sim.top_k_filter(matrix, k)
        assert ((f > 0).sum(axis=1) == k).all()
        assert (np.diag(f) == 0).all()
        row = matrix.loc["de-DE"].drop("de-DE")
        kept = f.loc["de-DE"][f.loc["de-DE"] > 0]
        assert kept.min() >= row.sort_values(ascending=False).iloc[k - 1] - 1e-15


def test_sinkhorn_rows_sum_to_one(matrix):
    for k, iters in [(5, 1), (5, 20), (20, 20), (50, 100)]:
        s = sim.sinkhorn(sim.top_k_filter(matrix, k), iters)
        assert np.allclose(s.sum(axis=1), 1.0)
        assert (s.to_numpy() >= 0).all()
    # on a full positive matrix Sinkhorn converges to doubly stochastic
    s = sim.sinkhorn(matrix, 200)
    assert np.allclose(s.sum(axis=0), 1.0, atol=1e-6)


def test_sinkhorn_refuses_negative():
    with pytest.raises(ValueError, match="non-negative"):
        sim.sinkhorn(pd.DataFrame([[1.0, -0.5], [0.2, 1.0]]), 5)


def test_weights_sum_to_one_deterministic_and_exclude_target():
    w1 = sim.weights("sw-KE", TOY, top_k=5, num_languages=3)
    w2 = sim.weights("sw-KE", list(reversed(TOY)), top_k=5, num_languages=3)
    assert w1 == w2
    assert len(w1) == 3 and "sw-KE" not in w1
    assert sum(w1.values()) == pytest.approx(1.0)
    assert all(v > 0 for v in w1.values())
    w_all = sim.weights("sw-KE", LOCALES, top_k=20, num_languages=5)
    assert len(w_all) == 5 and set(w_all) <= set(LOCALES) - {"sw-KE"}
    assert list(w_all.values()) == sorted(w_all.values(), reverse=True)


def test_weights_only_over_available_sources():
    w = sim.weights("af-ZA", ["de-DE", "nl-NL"], top_k=20, num_languages=5)
    assert set(w) == {"de-DE", "nl-NL"} and sum(w.values()) == pytest.approx(1.0)


def test_sparse_equals_dense():
    path = sim.save_matrix()
    sparse = sim.load_matrix(path)
    dense = sim.compute_matrix(LOCALES)
    assert np.array_equal(sparse.to_numpy(), dense.to_numpy())
    for target in ("sw-KE", "fr-FR", "zh-TW"):
        ws = sim.weights(target, LOCALES, top_k=10, num_languages=5, similarity_source="sparse")
        wd = sim.weights(target, LOCALES, top_k=10, num_languages=5, similarity_source="dense")
        assert ws == wd


def test_save_matrix_is_resumable():
    path = sim.save_matrix()
    mtime = path.stat().st_mtime_ns
    assert sim.save_matrix() == path
    assert path.stat().st_mtime_ns == mtime


def test_modes_average_uses_same_sources():
    ws = sim.select("af-ZA", TOY, mode="similarity", num_languages=4)
    wa = sim.select("af-ZA", TOY, mode="average", num_languages=4)
    assert set(ws) == set(wa) and all(v == pytest.approx(0.25) for v in wa.values())


def test_transfer_mode_leaves_target_out():
    nxn = pd.DataFrame(
        [[0.9, 0.5, 0.1, 0.8], [0.4, 0.9, 0.7, 0.6], [0.2, 0.3, 0.9, 0.1], [0.5, 0.5, 0.5, 0.9]],
        index=["de-DE", "nl-NL", "fr-FR", "af-ZA"],
        columns=["de-DE", "nl-NL", "fr-FR", "af-ZA"],
    )
    w = sim.select("af-ZA", ["de-DE", "nl-NL", "fr-FR"], mode="transfer", num_languages=2, nxn=nxn)
    # leave-target-out scores: de=(0.5+0.1)/2=0.3, nl=(0.4+0.7)/2=0.55, fr=(0.2+0.3)/2=0.25
    assert list(w) == ["nl-NL", "de-DE"]
    assert w["nl-NL"] == pytest.approx(0.55 / 0.85)
    # changing the target's column must not change transfer weights ...
    nxn2 = nxn.copy()
    nxn2["af-ZA"] = [0.0, 0.0, 1.0, 0.9]
    assert sim.select("af-ZA", ["de-DE", "nl-NL", "fr-FR"], mode="transfer", num_languages=2, nxn=nxn2) == w
    # ... but it does change the oracle
    o = sim.select("af-ZA", ["de-DE", "nl-NL", "fr-FR"], mode="oracle", num_languages=1, nxn=nxn2)
    assert o == {"fr-FR": 1.0}
    # the study ranks transfer on the dev N×N and keeps the oracle on the test N×N (oracle_nxn)
    both = dict(nxn=nxn, oracle_nxn=nxn2, num_languages=1)
    assert sim.select("af-ZA", ["de-DE", "nl-NL", "fr-FR"], mode="oracle", **both) == o
    assert sim.select("af-ZA", ["de-DE", "nl-NL", "fr-FR"], mode="transfer", **both) == {"nl-NL": 1.0}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(target="xx-XX", available=TOY), "unknown locale 'xx-XX'"),
        (dict(target="af-ZA", available=["de-DE", "yy"]), "unknown locale 'yy'"),
        (
            dict(target="af-ZA", available=TOY, feature_set="syntax_bogus"),
            "unknown URIEL feature set 'syntax_bogus'.*syntax_knn",
        ),
        (dict(target="af-ZA", available=TOY, top_k=0), "top_k must be an integer >= 1"),
        (dict(target="af-ZA", available=TOY, num_languages=0), "num_languages must be an integer >= 1"),
        (dict(target="af-ZA", available=TOY, mode="uriel"), "unknown mode 'uriel'.*similarity"),
        (dict(target="af-ZA", available=TOY, mode="transfer"), "needs the N×N"),
        (dict(target="af-ZA", available=["af-ZA"]), "no source model"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sim.select(**kwargs)


def test_locale_without_features_is_an_error():
    with pytest.raises(ValueError, match=r"no URIEL 'syntax_wals' features for az-AZ \(azj\)"):
        sim.uriel_vectors(["de-DE", "az-AZ"], "syntax_wals")


def test_select_modes_is_select_per_mode():
    avail = ["de-DE", "nl-NL", "en-US", "fr-FR"]
    nxn = pd.DataFrame(0.5, index=avail + ["af-ZA"], columns=avail + ["af-ZA"])
    got = sim.select_modes("af-ZA", avail, ["similarity", "transfer"], num_languages=2, nxn=nxn)
    assert list(got) == ["similarity", "transfer"]
    assert got["similarity"] == sim.select("af-ZA", avail, mode="similarity", num_languages=2)
    assert got["transfer"] == sim.select("af-ZA", avail, mode="transfer", num_languages=2, nxn=nxn)
    with pytest.raises(ValueError, match="modes repeat"):
        sim.select_modes("af-ZA", avail, ["transfer", "transfer"], nxn=nxn)
