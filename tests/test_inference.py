"""mu.analysis.inference on simulated crossed targets × items data with a known truth: the two-way bootstrap
covers where the target-only bootstrap does not, the sign-flip test holds its level and finds a clear effect,
TOST decides clear cases, p-values are exact functions of (data, seed), and the family table is Holm-adjusted."""

import numpy as np
import pytest

from mu import stats
from mu.analysis import inference


def crossed(rng, n_targets, n_items, *, mean=0.5, target_sd=0.1, item_sd=0.3):
    """0/1 correctness with P(correct) = mean + a_target + b_item, a ~ U(±target_sd), b = ±item_sd: the
    population mean accuracy is exactly ``mean`` and no probability is clipped."""
    a = rng.uniform(-target_sd, target_sd, (n_targets, 1))
    b = rng.choice([-item_sd, item_sd], (1, n_items))
    return (rng.random((n_targets, n_items)) < mean + a + b).astype(float)


def null_diff(rng, n_targets, n_items, *, target_sd, item_sd, shift=0.0):
    """A − B where A and B differ by ±(a_t + b_i) with symmetric signs: zero population mean difference
    (plus ``shift``), but a difference that varies by target and/or by item."""
    a = rng.choice([-target_sd, target_sd], (n_targets, 1))
    b = rng.choice([-item_sd, item_sd], (1, n_items))
    pa, pb = 0.5 + shift / 2 + a + b, 0.5 - shift / 2 - a - b
    return (rng.random((n_targets, n_items)) < pa).astype(float) - (rng.random((n_targets, n_items)) < pb)


def test_two_way_interval_covers_and_target_only_undercovers():
    # Item variance dominates (as on MASSIVE: the same hard items in every language): the bootstrap over
    # per-target accuracies (mu.stats.bootstrap_ci, and over="targets") misses it.
    rng, n, hits = np.random.default_rng(1), 150, {"both": 0, "targets": 0, "mu.stats": 0}
    for sim in range(n):
        y = crossed(rng, 20, 100)
        for over in ("both", "targets"):
            _, lo, hi = inference.two_way_bootstrap(y, 400, sim, over=over)
            hits[over] += lo <= 0.5 <= hi
        lo, hi = stats.bootstrap_ci(y.mean(axis=1), n_boot=400, seed=sim)
        hits["mu.stats"] += lo <= 0.5 <= hi
    coverage = {k: v / n for k, v in hits.items()}
    assert 0.88 <= coverage["both"] <= 1.0, coverage
    assert coverage["targets"] <= 0.8 and coverage["mu.stats"] <= 0.8, coverage


def test_two_way_bootstrap_equals_explicit_resampling():
    # The weighted matrix product is the mean over the crossed resampled cells (NaN cells left out).
    rng = np.random.default_rng(0)
    full = crossed(rng, 7, 30)
    y = full.copy()
    y[2, 5] = y[4, :3] = np.nan
    n_boot, seed = 300, 11
    draw = np.random.default_rng(seed)  # the module's stream: one block, targets then items
    ti, ii = draw.integers(0, 7, (n_boot, 7)), draw.integers(0, 30, (n_boot, 30))
    for data in (full, y):
        got = inference.two_way_bootstrap(data, n_boot, seed, level=0.9)
        means = [np.nanmean(data[np.ix_(ti[b], ii[b])]) for b in range(n_boot)]
        assert got.mean == pytest.approx(np.nanmean(data))
        assert (got.low, got.high) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))
    ta = inference.two_way_bootstrap(y, n_boot, seed, over="targets")
    row = np.nansum(y, axis=1)
    means_t = [row[t].sum() / np.isfinite(y)[t].sum() for t in np.random.default_rng(seed).integers(0, 7, (n_boot, 7))]
    assert (ta.low, ta.high) == pytest.approx(tuple(np.quantile(means_t, [0.025, 0.975])))


def test_paired_bootstrap_and_input_checks():
    rng = np.random.default_rng(2)
    a, b = crossed(rng, 10, 50), crossed(rng, 10, 50)
    assert inference.two_way_bootstrap_diff(a, b, 200, 3) == inference.two_way_bootstrap(a - b, 200, 3)
    with pytest.raises(ValueError, match="shape"):
        inference.two_way_bootstrap_diff(a, b[:, :-1])
    empty_item = a.copy()
    empty_item[:, 4] = np.nan
    with pytest.raises(ValueError, match="no observed value"):
        inference.two_way_bootstrap(empty_item)
    with pytest.raises(ValueError, match="2-d"):
        inference.sign_flip_test(a[0])


def test_sign_flip_holds_its_level_where_one_way_flips_do_not():
    # Item-only null: the item-cluster flip is exact, so its p-values are uniform-ish.
    rng, n = np.random.default_rng(3), 300
    p_item = np.array(
        [
            inference.sign_flip_test(null_diff(rng, 20, 100, target_sd=0, item_sd=0.2), 400, s, "item").p_value
            for s in range(n)
        ]
    )
    assert np.mean(p_item <= 0.05) <= 0.09
    assert 0.4 <= np.mean(p_item <= 0.5) <= 0.6 and 0.15 <= np.mean(p_item <= 0.25) <= 0.35
    # A difference varying by item (resp. target) only: the flip blind to it rejects far too often, the
    # crossed ("both") flip does not.
    for blind, kwargs in (("target", {"target_sd": 0, "item_sd": 0.2}), ("item", {"target_sd": 0.1, "item_sd": 0})):
        rng = np.random.default_rng(4)
        rejections = {"both": 0, blind: 0}
        for s in range(150):
            d = null_diff(rng, 20, 100, **kwargs)
            for cluster in rejections:
                rejections[cluster] += inference.sign_flip_test(d, 400, s, cluster).p_value <= 0.05
        assert rejections["both"] / 150 <= 0.08, (kwargs, rejections)
        assert rejections[blind] / 150 >= 0.3, (kwargs, rejections)


def test_sign_flip_finds_a_clear_effect_with_its_effect_sizes():
    d = null_diff(np.random.default_rng(5), 20, 100, target_sd=0.03, item_sd=0.1, shift=0.3)
    two = inference.sign_flip_test(d, 999, 7)
    assert two.p_value == 1 / 1000  # the +1 correction's floor: no flip as extreme
    assert inference.sign_flip_test(d, 999, 7, alternative="greater").p_value == 1 / 1000
    assert inference.sign_flip_test(d, 999, 7, alternative="less").p_value > 0.99
    assert two.mean_diff == pytest.approx(d.mean()) and two.dz_items > 0
    assert two.items_favouring_a > 0.6 and two.targets_favouring_a > 0.9
    assert (two.n_targets, two.n_items, two.n_perm, two.cluster) == (20, 100, 999, "both")
    with pytest.raises(ValueError, match="cluster"):
        inference.sign_flip_test(d, cluster="locale")


@pytest.mark.parametrize("cluster", inference.CLUSTERS)
def test_p_value_is_an_exact_function_of_data_and_seed(cluster):
    rng = np.random.default_rng(6)
    a, b = crossed(rng, 12, 40), crossed(rng, 12, 40, mean=0.48)
    d = a - b
    first = inference.sign_flip_test(d, 500, 9, cluster)
    assert inference.sign_flip_test(d.copy(), 500, 9, cluster) == first  # identical inputs, identical result
    assert (first.p_value * 501) == pytest.approx(round(first.p_value * 501), abs=1e-9)  # on the k/(n+1) grid
    # Binary differences tie exactly with many flips; neither dtype, summation order nor float noise moves p.
    for same in (
        d.astype(np.float32),
        d.astype(np.int8),
        a.astype(bool).astype(int) - b.astype(int),
        d + 1e-13 * rng.standard_normal(d.shape),
    ):
        assert inference.sign_flip_test(same, 500, 9, cluster).p_value == first.p_value
    if cluster != "both":  # the same flips, on the transposed layout
        other = {"item": "target", "target": "item"}[cluster]
        assert inference.sign_flip_test(d.T, 500, 9, other).p_value == first.p_value
    assert inference.tost(d, 0.05, n_perm=500, seed=9, cluster=cluster) == inference.tost(
        d.copy(), 0.05, n_perm=500, seed=9, cluster=cluster
    )


def test_tost_verdicts():
    rng = np.random.default_rng(8)
    same = null_diff(rng, 30, 400, target_sd=0.02, item_sd=0.1)
    eq = inference.tost(same, 0.05, n_perm=999, seed=1)
    assert eq.equivalent and eq.p_lower < 0.01 and eq.p_upper < 0.01 and eq.p_value == max(eq.p_lower, eq.p_upper)
    assert -0.05 < eq.ci_low < eq.ci_high < 0.05  # the 90% two-way interval agrees
    far = null_diff(rng, 30, 400, target_sd=0.02, item_sd=0.1, shift=0.1)
    ne = inference.tost(far, 0.03, n_perm=999, seed=1)
    assert not ne.equivalent and ne.p_upper > 0.5 and ne.ci_high > 0.03
    few = null_diff(rng, 3, 10, target_sd=0.02, item_sd=0.1)  # no evidence either way: not shown equivalent
    assert not inference.tost(few, 0.05, n_perm=999, seed=1).equivalent
    assert np.isnan(inference.tost(same, 0.05, n_perm=99, n_boot=0).ci_low)
    with pytest.raises(ValueError, match="delta"):
        inference.tost(same, 0)


def test_run_family_table():
    rng = np.random.default_rng(9)
    base = crossed(rng, 15, 200, mean=0.6)
    better = np.maximum(base, rng.random(base.shape) < 0.2)  # right on ~8% more items
    twin = np.where(rng.random(base.shape) < 0.02, 1 - base, base)  # flips 2% of answers both ways
    correct = {"base": base, "better": better, "twin": twin}
    family = [
        inference.Hypothesis("better wins", "better", "base"),
        ("twin equivalent", "twin", "base", "equivalence", 0.03),
        {"name": "twin vs better", "a": "twin", "b": "better", "kind": "superiority"},
    ]
    table = inference.run_family(family, correct, n_perm=999, n_boot=500, seed=1)
    assert list(table.columns) == inference.FAMILY_COLUMNS and len(table) == 3
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p_value"]).tolist())
    assert (table["p_holm"] >= table["p_value"]).all()
    assert table["verdict"].tolist() == ["A > B", "equivalent", "A < B"]
    row = table.iloc[1]
    assert row["p_value"] == max(row["p_lower"], row["p_upper"]) and np.isnan(table.iloc[0]["p_lower"])
    assert (table["ci_low"] <= table["mean_diff"]).all() and (table["mean_diff"] <= table["ci_high"]).all()
    assert inference.run_family(family, correct, n_perm=999, n_boot=500, seed=1).equals(table)
    with pytest.raises(ValueError, match="no correct array"):
        inference.run_family([("x", "base", "missing")], correct)
    with pytest.raises(ValueError, match="positive delta"):
        inference.run_family([("x", "twin", "base", "equivalence")], correct)
    with pytest.raises(ValueError, match="kind"):
        inference.run_family([("x", "twin", "base", "one-sided", 0.1)], correct)


def test_item_matrix_joins_on_ids():
    targets, items, y = inference.item_matrix({"de-DE": (["3", "1", "2"], [1, 0, 1]), "sw-KE": ([2, 3], [0, 0])})
    assert targets == ["de-DE", "sw-KE"] and items.tolist() == ["1", "2", "3"]
    assert np.array_equal(y, [[0, 1, 1], [np.nan, 0, 0]], equal_nan=True)
    assert inference.two_way_bootstrap(y, 50).mean == pytest.approx(2 / 5)  # over the observed cells
    _, items, y = inference.item_matrix({"de-DE": (["1", "2"], [1, 0])}, items=["2"])
    assert items.tolist() == ["2"] and y.tolist() == [[0.0]]
    with pytest.raises(ValueError, match="duplicate"):
        inference.item_matrix({"de-DE": (["1", "1"], [1, 0])})


def test_non_inferiority_is_the_lower_one_sided_test_of_tost():
    rng = np.random.default_rng(5)
    a = (rng.random((12, 300)) < 0.70).astype(float)
    b = a.copy()
    flip = rng.random(a.shape) < 0.02  # B a little better, well within a 5-point margin
    b[flip] = 1.0
    table = inference.run_family(
        [("H", "a", "b", "non-inferiority", 0.05), ("H-tight", "a", "b", "non-inferiority", 0.001)],
        {"a": a, "b": b},
        n_perm=500,
        n_boot=200,
    )
    loose, tight = table.iloc[0], table.iloc[1]
    assert loose["verdict"] == "A not worse than B − delta" and loose["p_value"] == loose["p_lower"]
    assert tight["verdict"] == "not shown"
    eq = inference.tost(a - b, 0.05, n_perm=500, seed=42, n_boot=0)
    assert loose["p_lower"] == eq.p_lower
