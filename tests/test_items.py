"""Per-item results in result rows (mu.core.report) and notebook 06's item-aware summary (mu.analysis.aggregate,
mu.analysis.itemwise): every interval and test re-derived here with mu.analysis.inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mu import aggregate, inference, itemwise, paths, report, seeds
from mu import summary as mu_summary

TARGETS = [f"t{i:02d}" for i in range(8)]
SOURCES = ["s1", "s2", "s3"]
IDS = [str(100 + i) for i in range(40)]  # the same items in every target (translations), not in sorted order
AVG, SIM, ORACLE = "merge/linear/average", "merge/linear/similarity", "zero-shot/best"


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MU_ROOT", str(tmp_path))
    return tmp_path


def bits(correct) -> str:
    return "".join("1" if c else "0" for c in correct)


def test_save_checks_items_and_stores_their_ids_once(root):
    a = report.items(IDS[:4], [1, 0, 1, 1])
    assert a == {"ids": IDS[:4], "correct": "1011"}
    rows = [
        {"system": AVG, "family": "merge", "accuracy": 0.75, "n": 4, "items": a},
        {"system": SIM, "family": "merge", "accuracy": 0.25, "n": 4, "items": report.items(IDS[:4], [0, 0, 1, 0])},
        {"system": "merge/ties/average", "family": "merge", "accuracy": 0.5},  # a row without items stays valid
    ]
    rec = paths.read_json(report.save("03_merging", "t00", "x", rows=rows))
    key = report.ids_sha256(IDS[:4])
    assert rec["item_ids"] == {key: IDS[:4]}  # once per record
    assert rec["rows"][0]["items"] == {"ids_sha256": key, "correct": "1011"}
    assert report.row_items(rec["rows"][1], rec["item_ids"]) == (IDS[:4], "0010")
    assert report.row_items(rec["rows"][2], rec["item_ids"]) is None
    with pytest.raises(ValueError, match="not the mean of its items"):
        report.save("03_merging", "t00", "y", rows=[{**rows[0], "accuracy": 0.5}])
    with pytest.raises(ValueError, match="n=5 but 4 items"):
        report.save("03_merging", "t00", "y", rows=[{**rows[0], "n": 5}])
    with pytest.raises(ValueError, match="one correctness per item"):
        report.items(IDS[:3], [1, 0])
    with pytest.raises(ValueError, match="do not match"):
        report.row_items(rec["rows"][0], {key: IDS[1:5]})


def world(seed: int = 0) -> dict[str, np.ndarray]:
    """targets × items 0/1 of each system: item difficulty shared by every target (translations), the
    similarity merge right on a few more items than the average merge, three sources of differing skill."""
    rng = np.random.default_rng(seed)
    easy = rng.uniform(0.2, 0.9, len(IDS))
    draw = rng.uniform(size=(len(TARGETS), len(IDS)))
    out = {AVG: draw < easy, SIM: draw < easy + 0.08}
    for k, s in enumerate(SOURCES):
        out[s] = rng.uniform(size=draw.shape) < easy - 0.1 * k
    return {k: v.astype(float) for k, v in out.items()}


def write_world(cells: dict[str, np.ndarray], *, items: bool = True) -> pd.DataFrame:
    """Records of the two merges per target (items in a shuffled order: joined by id, not position) and the
    N×N matrix with its per-item file; returns the matrix."""
    order = np.random.default_rng(1).permutation(len(IDS))
    for k, t in enumerate(TARGETS):
        rows = []
        for system in (AVG, SIM):
            c = cells[system][k]
            row = {"system": system, "family": "merge", "accuracy": float(c.mean()), "n": len(IDS)}
            row["sources"] = {s: 1 / 3 for s in SOURCES}
            if items:
                row["items"] = report.items([IDS[i] for i in order], c[order])
            rows.append(row)
        report.save("03_merging", t, "linear", params={"profile": "toy"}, rows=rows)
    nxn = pd.DataFrame({t: [cells[s][k].mean() for s in SOURCES] for k, t in enumerate(TARGETS)}, index=SOURCES)
    path = paths.reports_dir("02_training", "toy", "evaluation_matrix.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    nxn.to_csv(path)
    per_item = {
        "split": "test",
        "ids": {t: IDS for t in TARGETS},
        "correct": {s: {t: bits(cells[s][k]) for k, t in enumerate(TARGETS)} for s in SOURCES},
    }
    if items:
        paths.write_json(aggregate.nxn_items_path(path), per_item)
    return nxn


def test_rows_carry_items_that_agree_with_their_accuracy(root):
    cells = world()
    write_world(cells)
    summary = aggregate.aggregate("toy", n_boot=300, seed=7, min_pairs=5)
    rows = summary["rows"]
    for r in rows.itertuples():
        if r.system in (AVG, SIM, ORACLE):
            ids, correct = r.items
            assert sorted(ids) == sorted(IDS) and correct.count("1") / len(correct) == pytest.approx(r.accuracy)
    # the oracle's items are its chosen source's, from the N×N per-item file
    oracle = rows[(rows["system"] == ORACLE) & (rows["target"] == "t03")].iloc[0]
    source = next(iter(oracle["sources"]))
    assert oracle["items"][1] == bits(cells[source][3])
    assert summary["items"][SIM].shape == (len(TARGETS), len(IDS))


def test_summary_intervals_and_tests_are_the_item_aware_ones(root):
    cells = world()
    write_world(cells)
    n_boot, seed = 400, 3
    summary = aggregate.aggregate("toy", n_boot=n_boot, seed=seed, min_pairs=5)
    # matrices joined on the item id (sorted), whatever order the records hold them in
    matrix = {s: pd.DataFrame(cells[s], index=TARGETS, columns=IDS).sort_index(axis=1).to_numpy() for s in cells}
    means = summary["means"].set_index("system")
    ci = inference.two_way_bootstrap(matrix[SIM], n_boot, seed)
    assert tuple(means.loc[SIM, ["mean", "ci_low", "ci_high"]]) == pytest.approx(tuple(ci))
    assert means.loc[SIM, "interval"] == itemwise.TWO_WAY and means.loc[SIM, "n_items"] == len(IDS)

    tests = summary["tests"].set_index(["system", "baseline"])
    got = tests.loc[(SIM, AVG)]
    diff = matrix[SIM] - matrix[AVG]
    flip = inference.sign_flip_test(diff, n_boot, seed, cluster="both")
    ci = inference.two_way_bootstrap(diff, n_boot, seed)
    assert got["test"] == itemwise.SIGN_FLIP and "sign-flip" in got["test"]
    assert got["p_value"] == pytest.approx(flip.p_value) and got["mean_diff"] == pytest.approx(flip.mean_diff)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert got["items_favouring"] == pytest.approx(flip.items_favouring_a)
    assert got["targets_favouring"] == pytest.approx(flip.targets_favouring_a)
    assert np.isnan(got["statistic"]) and got["p_holm"] >= got["p_value"]
    assert set(summary["tests"]["test"]) == {itemwise.SIGN_FLIP}  # one method throughout

    md = mu_summary.summary_markdown(summary, "toy")
    assert itemwise.TWO_WAY in md and itemwise.SIGN_FLIP in md and "| test | note |" in md
    written = mu_summary.write_summary(summary, "toy")
    saved = pd.read_csv(written["rows.csv"])
    assert set(saved["items"].dropna()) == {len(IDS)}  # the counts, not the items


def test_records_without_items_aggregate_as_before(root):
    write_world(world(), items=False)
    summary = aggregate.aggregate("toy", n_boot=300, seed=7, min_pairs=5)
    table = summary["table"]
    assert set(summary["means"]["interval"]) - {""} == {itemwise.OVER_TARGETS}  # "": a column without results
    lo, hi = aggregate.bootstrap_ci(table[SIM].to_numpy(), n_boot=300, seed=7)
    means = summary["means"].set_index("system")
    assert (means.loc[SIM, "ci_low"], means.loc[SIM, "ci_high"]) == pytest.approx((lo, hi))
    assert set(summary["tests"]["test"]) == {itemwise.WILCOXON}
    assert summary["items"] == {}


def test_seed_effects_use_the_item_aware_test_where_items_exist(root):
    write_world(world())
    got = aggregate.aggregate("toy", n_boot=200, seed=42, min_pairs=5)
    long = seeds.effects({42: got["table"]}, [(SIM, AVG)], items={42: got["items"]}, n_boot=200)
    assert long["test"].tolist() == [itemwise.SIGN_FLIP]
    assert long["p_value"].iloc[0] == pytest.approx(
        got["tests"].set_index(["system", "baseline"]).at[(SIM, AVG), "p_value"]
    )
    assert seeds.effects({42: got["table"]}, [(SIM, AVG)])["test"].tolist() == [itemwise.WILCOXON]  # no items given


def _item_matrix(cells: dict[str, np.ndarray], system: str) -> np.ndarray:
    return pd.DataFrame(cells[system], index=TARGETS, columns=IDS).sort_index(axis=1).to_numpy()


def test_head_to_head_methods_and_claims_use_the_sign_flip_test_where_items_exist(root):
    """Every paired comparison built on head_to_head (the method table, its contrasts, the claims) takes notebook
    06's per-item matrices: each row's test is the sign-flip one and its interval the two-way one; the
    Wilcoxon test and the bootstrap over targets only without items."""
    from mu import claims, compare, methods_table

    cells = world()
    write_world(cells)
    n_boot, seed = 300, 5
    summary = aggregate.aggregate("toy", n_boot=n_boot, seed=seed, min_pairs=5)
    table, items = summary["table"], summary["items"]

    h2h = compare.head_to_head(table, [SIM, AVG], [ORACLE], items=items, n_boot=n_boot, seed=seed)
    h2h = pd.concat([h2h, compare.head_to_head(table, [SIM], [AVG], items=items, n_boot=n_boot, seed=seed)])
    assert set(h2h["test"]) == {itemwise.SIGN_FLIP} and set(h2h["interval"]) == {itemwise.TWO_WAY}
    got = h2h[h2h["baseline"] == AVG].iloc[0]
    diff = _item_matrix(cells, SIM) - _item_matrix(cells, AVG)
    flip = inference.sign_flip_test(diff, n_boot, seed, cluster="both")
    ci = inference.two_way_bootstrap(diff, n_boot, seed)
    assert got["p_value"] == pytest.approx(flip.p_value) and got["n_items"] == len(IDS)
    assert (got["diff_ci_low"], got["diff_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert got["items_favouring"] == pytest.approx(flip.items_favouring_a)
    # the same pair in notebook 06's tests table: one test, one number
    assert got["p_value"] == pytest.approx(summary["tests"].set_index(["system", "baseline"]).at[(SIM, AVG), "p_value"])

    plain = compare.head_to_head(table, [SIM], [AVG], n_boot=n_boot, seed=seed).iloc[0]  # no items: the fallback
    assert plain["test"] == itemwise.WILCOXON and plain["interval"] == itemwise.OVER_TARGETS
    lo, hi = aggregate.bootstrap_ci((table[SIM] - table[AVG]).to_numpy(), n_boot=n_boot, seed=seed)
    assert (plain["diff_ci_low"], plain["diff_ci_high"]) == pytest.approx((lo, hi))
    # items of one system only: that pair falls back, and says so
    half = compare.head_to_head(table, [SIM], [AVG], items={SIM: items[SIM]}, n_boot=n_boot, seed=seed).iloc[0]
    assert half["test"] == itemwise.WILCOXON

    methods = methods_table.table(table, n_boot=n_boot, seed=seed, items=items).set_index("system")
    assert set(methods["interval"]) == {itemwise.TWO_WAY}
    assert set(methods["vs_zero_shot_test"]) == {itemwise.SIGN_FLIP}
    assert methods.at[SIM, "vs_average_test"] == itemwise.SIGN_FLIP
    assert methods.at[SIM, "vs_average_p"] == pytest.approx(got["p_value"])
    md = methods_table.markdown(methods.reset_index())
    assert "two-way bootstrap intervals over targets × items" in md and "sign-flip test" in md
    assert "Wilcoxon" not in md
    contrasts = methods_table.contrasts(table, n_boot=n_boot, seed=seed, items=items)
    assert list(contrasts["family"]) == ["uriel_vs_equal"] and set(contrasts["test"]) == {itemwise.SIGN_FLIP}
    assert set(contrasts["interval"]) == {itemwise.TWO_WAY}
    assert itemwise.SIGN_FLIP in methods_table.answer(methods.reset_index(), contrasts).splitlines()[-1]
    legacy = methods_table.table(table, n_boot=n_boot, seed=seed)  # no items: every row the fallback
    assert set(legacy["vs_zero_shot_test"]) == {itemwise.WILCOXON} and set(legacy["interval"]) == {
        itemwise.OVER_TARGETS
    }
    assert "Wilcoxon p-value" in methods_table.markdown(legacy)

    single = claims.single_models(table, n_boot=n_boot, seed=seed, items=items)
    assert len(single) >= 2 and set(single["test"]) == {itemwise.SIGN_FLIP}
    assert set(single["interval"]) == {itemwise.TWO_WAY}
    text = claims.markdown(table, n_boot=n_boot, seed=seed, items=items)
    assert f"- *Tests:* two-sided {itemwise.SIGN_FLIP}." in text and "Wilcoxon" not in text
    assert set(claims.single_models(table, n_boot=n_boot, seed=seed)["test"]) == {itemwise.WILCOXON}


def test_equivalence_is_a_tost_over_items_where_they_exist(root):
    cells = world()
    write_world(cells)
    summary = aggregate.aggregate("toy", n_boot=200, seed=3, min_pairs=5)
    table, items = summary["table"], summary["items"]
    eq = itemwise.equivalence(table, SIM, AVG, 0.2, items=items, n_perm=300, seed=3)
    diff = _item_matrix(cells, SIM) - _item_matrix(cells, AVG)
    expected = inference.tost(diff, 0.2, n_perm=300, seed=3, cluster="both", n_boot=0)
    assert eq["equivalence_test"] == itemwise.TOST_ITEMS and eq["p_tost"] == pytest.approx(expected.p_value)
    plain = itemwise.equivalence(table, SIM, AVG, 0.2, n_perm=300, seed=3)  # no items: flips over targets
    d = (table[SIM] - table[AVG]).to_numpy()[:, None]
    over_targets = inference.tost(d, 0.2, n_perm=300, seed=3, cluster="target", n_boot=0)
    assert plain["equivalence_test"] == itemwise.TOST_TARGETS and plain["p_tost"] == pytest.approx(over_targets.p_value)


def test_collected_tables_name_the_test_their_rows_used():
    from mu.publish.collect import test_label

    assert test_label(pd.DataFrame({"p_value": [0.1]})) == "Wilcoxon"  # collected before tests were named
    assert test_label(pd.DataFrame({"test": [itemwise.SIGN_FLIP, None]})) == "sign-flip (targets × items)"
    both = pd.DataFrame({"test": [itemwise.SIGN_FLIP, itemwise.WILCOXON]})
    assert test_label(both) == "Wilcoxon / sign-flip (targets × items)"
