"""The method × weighting table of notebook 06 (``mu.methods_table``) on a hand-made per-target table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mu import aggregate, compare, methods_table, paths, plots
from mu import stats as mu_stats

TARGETS = [f"t{i:02d}" for i in range(12)]


def _per_target() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, len(TARGETS))
    cols = {
        "native": base + 0.1,
        "zero-shot/best": base + 0.03,
        "zero-shot/uriel-top1": base - 0.02,
        "merge/*/similarity": np.nan,
    }
    for method, shift in (("linear", 0.0), ("ties", 0.02), ("dare_ties", -0.1)):
        for k, weighting in enumerate(("similarity", "average", "transfer")):
            cols[f"merge/{method}/{weighting}"] = base + shift + 0.001 * k + rng.normal(0, 0.005, len(TARGETS))
    table = pd.DataFrame(cols, index=TARGETS)
    table.loc["t00", "merge/dare_ties/transfer"] = np.nan  # one missing result: n = 11 there
    return table


def test_table_means_tests_and_holm_families():
    per_target = _per_target()
    frame = methods_table.table(per_target, n_boot=2000)
    assert list(frame["method"]) == ["linear"] * 3 + ["ties"] * 3 + ["dare_ties"] * 3  # table order, not the mean
    assert list(frame["weighting"][:3]) == ["similarity", "average", "transfer"]
    assert "merge/*/similarity" not in set(frame["system"])
    row = frame.set_index("system").loc["merge/dare_ties/transfer"]
    assert row["n"] == 11 and row["mean"] == pytest.approx(per_target["merge/dare_ties/transfer"].mean())
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    # against the linear average merge: every other system (8) is one Holm family
    direct = compare.head_to_head(
        per_target, [s for s in frame["system"] if s != "merge/linear/average"], ["merge/linear/average"], n_boot=2000
    )
    mine = frame.set_index("system")
    for r in direct.itertuples():
        assert mine.at[r.system, "vs_average_diff"] == pytest.approx(r.mean_diff)
        assert mine.at[r.system, "vs_average_p_holm"] == pytest.approx(r.p_holm)
    assert np.isnan(mine.at["merge/linear/average", "vs_average_p"])  # not tested against itself
    raw = mine["vs_zero_shot_p"].to_numpy(dtype=float)
    np.testing.assert_allclose(mine["vs_zero_shot_p_holm"].to_numpy(dtype=float), mu_stats.holm(raw))
    assert (mine.loc["merge/dare_ties/similarity", ["vs_zero_shot_wins", "vs_zero_shot_losses"]] == [0, 12]).all()


def test_markdown_csv_and_figure(mu_root):
    frame = methods_table.table(_per_target(), n_boot=500)
    text = methods_table.markdown(frame)
    assert "| ties |" in text and "p_holm vs `merge/linear/average`" in text and "(oracle)" in text
    assert text.count("\n| merge/") == 9
    out = methods_table.write(frame, "test-methods")
    assert out == paths.reports_dir("06_aggregation", "test-methods", "methods.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out)[["system", "mean"]], frame[["system", "mean"]])
    means = aggregate.means(_per_target(), n_boot=200)
    refs = methods_table.references(means)
    assert set(refs) == {"merge/linear/average", "zero-shot/best"}
    png = plots.method_dots(frame, out.with_name("methods.png"), references=refs, title="t")
    assert out.with_name("methods.png").is_file() and png is not None


def test_without_the_baselines_or_any_merge():
    per_target = _per_target().drop(columns=["merge/linear/average"])
    frame = methods_table.table(per_target, n_boot=200)
    assert frame["vs_average_note"].str.contains("no merge/linear/average results").all()
    assert frame["vs_zero_shot_p_holm"].notna().all()
    empty = methods_table.table(per_target[["native", "zero-shot/best"]], n_boot=200)
    assert empty.empty and "compare_methods=all" in methods_table.markdown(empty)


def test_contrasts_families_holm_and_the_answer_in_words():
    per_target = _per_target()
    c = methods_table.contrasts(per_target, n_boot=500)
    assert set(c["family"]) == {"method_vs_linear", "uriel_vs_equal", "transfer_vs_equal"}
    vs_lin = c[c["family"] == "method_vs_linear"]
    # ties and dare_ties against linear under each of the 3 weightings: one family of 6, Holm within it
    assert len(vs_lin) == 6 and set(vs_lin["baseline"]) == {
        f"merge/linear/{w}" for w in ("similarity", "average", "transfer")
    }
    assert (vs_lin["baseline"].str.split("/").str[2] == vs_lin["weighting"]).all()
    np.testing.assert_allclose(vs_lin["p_holm"], mu_stats.holm(vs_lin["p_value"].to_numpy(dtype=float)))
    one = compare.head_to_head(per_target, ["merge/ties/average"], ["merge/linear/average"], n_boot=500).iloc[0]
    row = vs_lin.set_index("system").loc["merge/ties/average"]
    assert row["mean_diff"] == pytest.approx(one["mean_diff"]) and row["p_value"] == pytest.approx(one["p_value"])
    uriel = c[c["family"] == "uriel_vs_equal"]
    assert list(uriel["baseline"]) == [f"merge/{m}/average" for m in ("linear", "ties", "dare_ties")]
    text = methods_table.answer(methods_table.table(per_target, n_boot=500), c)
    # dare_ties is 0.1 below linear on every target: worse everywhere; ties +0.02 on every target: better
    assert "**DARE** (dare_ties, dare_linear): worse than linear under every weighting" in text
    assert "**TIES** (ties): better than linear under every weighting" in text
    assert "**Best merge:** `merge/ties/" in text and "merges significantly above it" in text
    assert methods_table.contrasts(per_target[["native", "merge/linear/average"]], n_boot=100).empty
