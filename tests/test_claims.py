"""The README's claims (``mu.claims``) on a hand-made per-target table whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mu import claims, compare, itemwise, seeds
from mu import stats as mu_stats

TARGETS = [f"t{i:02d}" for i in range(20)]


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    oracle = rng.uniform(0.5, 0.6, len(TARGETS))
    noise = lambda: rng.normal(0, 0.002, len(TARGETS))  # noqa: E731
    return pd.DataFrame(
        {
            "native": oracle + 0.1,
            "zero-shot/best": oracle,
            "zero-shot/uriel-top1": oracle - 0.05 + noise(),
            "merge/linear/similarity": oracle - 0.03 + noise(),
            "merge/linear/oracle": oracle + 0.05,
            "ensemble/soft/similarity": oracle + 0.02 + noise(),  # many models: not a single served model
            "adapted/distilled-soft/similarity": oracle + 0.018 + noise(),  # 0.002 under its teacher, above the oracle
            "iterative/linear/similarity": oracle - 0.1 + noise(),
        },
        index=TARGETS,
    )


def test_which_systems_are_label_free_single_models():
    assert claims.is_single_label_free("merge/ties/average") and claims.is_single_label_free("zero-shot/uriel-top1")
    assert claims.is_single_label_free("iterative-adaptive/linear/similarity")
    assert not claims.is_single_label_free("merge/linear/oracle")  # the N×N column picks its sources
    assert not claims.is_single_label_free("ensemble/soft/similarity")
    assert not claims.is_single_label_free("zero-shot/best") and not claims.is_single_label_free("merge/*/similarity")


def test_single_models_against_the_oracle_with_holm():
    table = _table()
    single = claims.single_models(table, n_boot=500)
    assert single["system"].iloc[0] == "adapted/distilled-soft/similarity"
    assert set(single["system"]) == {
        "zero-shot/uriel-top1",
        "merge/linear/similarity",
        "adapted/distilled-soft/similarity",
        "iterative/linear/similarity",
    }
    np.testing.assert_allclose(single["p_holm"], mu_stats.holm(single["p_value"].to_numpy(dtype=float)))
    direct = compare.head_to_head(table, ["merge/linear/similarity"], ["zero-shot/best"], n_boot=500).iloc[0]
    assert single.set_index("system").at["merge/linear/similarity", "mean_diff"] == pytest.approx(direct["mean_diff"])


def test_students_and_the_answer_in_words():
    table = _table()
    st = claims.students(table, n_boot=500).set_index("role")
    assert st.at["teacher", "baseline"] == "ensemble/soft/similarity"
    assert st.at["init", "baseline"] == "merge/linear/similarity"
    assert st.at["teacher", "mean_diff"] == pytest.approx(-0.002, abs=0.002)
    text = claims.markdown(table, n_boot=500)
    assert (
        "best label-free single model (largest paired gain over the oracle) is `adapted/distilled-soft/similarity`"
        in text
    )
    assert "over its 20 targets)" in text
    assert "it beats the oracle `zero-shot/best`" in text and "20/0/0 wins/ties/losses" in text
    # "within 0.005 of its teacher" is a TOST with that margin; a per-target table has no items: over targets
    assert st.at["teacher", "equivalence_test"] == itemwise.TOST_TARGETS and st.at["teacher", "delta"] == 0.005
    assert st.at["teacher", "p_tost"] < 0.05 and st.at["teacher", "p_tost_holm"] >= st.at["teacher", "p_tost"]
    assert "within ±0.005 of it (TOST p" in text and "not shown to be within" not in text
    assert f"- *Tests:* two-sided {itemwise.WILCOXON}; equivalence within ±0.005: {itemwise.TOST_TARGETS}" in text
    assert "above the oracle: `adapted/distilled-soft/similarity` (+0.018)" in text
    assert "No label-free single model" in claims.markdown(table[["native", "ensemble/soft/similarity"]])


def test_a_system_run_on_a_subset_is_ranked_by_its_paired_gain_and_says_so():
    table = _table()
    # iterative rows run on a declared subset: a low mean on easy-to-miss targets must not hide a large paired gain
    subset = TARGETS[:8]
    table["iterative/linear/similarity"] = np.nan
    table.loc[subset, "iterative/linear/similarity"] = table.loc[subset, "zero-shot/best"] + 0.05
    single = claims.single_models(table, n_boot=500).set_index("system")
    row = single.loc["iterative/linear/similarity"]
    assert single.index[0] == "iterative/linear/similarity" and row["n"] == 8
    assert row["oracle_mean"] == pytest.approx(table.loc[subset, "zero-shot/best"].mean())
    text = claims.markdown(table, n_boot=500)
    assert (
        "is `iterative/linear/similarity` (mean" in text and "over its 8 targets, a declared subset of the 20)" in text
    )
    assert "`iterative/linear/similarity` (+0.050, 8 targets)" in text


def test_a_student_from_another_merge_is_tested_against_that_merge():
    table = _table().rename(
        columns={"adapted/distilled-soft/similarity": "adapted/distilled-soft-from_iso_c/similarity"}
    )
    table["merge/iso_c/similarity"] = table["zero-shot/best"] + 0.01
    st = claims.students(table, n_boot=500).set_index("role")
    assert st.at["init", "baseline"] == "merge/iso_c/similarity"
    assert st.at["teacher", "baseline"] == "ensemble/soft/similarity"
    assert st.at["init", "mean_diff"] == pytest.approx(0.008, abs=0.002)


def test_the_claims_say_which_named_models_the_seeds_repeated_and_whether_they_held():
    table = _table()
    long = pd.DataFrame(
        [
            {"seed": s, "system": sys_, "baseline": "zero-shot/best", "n": 15, "mean_diff": d, "p_holm": p}
            for s in (42, 43, 44)
            for sys_, d, p in (
                ("adapted/distilled-soft/similarity", 0.02 + s / 1e4, 0.001),
                ("merge/linear/similarity", (-1) ** s * 0.01, 0.3),
            )
        ]
    )
    spread = seeds.spread(long)
    text = claims.markdown(table, seeds=spread, n_boot=500)
    first = text.splitlines()[0]
    assert "(over 3 fine-tuning seeds: yes: same sign and p_holm < 0.05 in every seed; mean +0.024, sd 0.000)" in first
    last = text.splitlines()[-1]
    assert last.startswith(
        "- **Over fine-tuning seeds** (42, 43, 44; the sources fine-tuned again per seed, 15 "
        "declared targets): Held in every seed (same sign, Holm p < 0.05 in each): "
        "`adapted/distilled-soft/similarity` vs `zero-shot/best` (+0.024, sd 0.000, range +0.024 to +0.024)"
    )
    assert "Same sign in every seed, not significant in each: none" in last
    assert "Did not hold (the sign changes, or a seed lacks it): `merge/linear/similarity` vs `zero-shot/best`" in last
    alone = seeds.spread(long[long["system"] == "merge/linear/similarity"])
    assert "(not repeated over fine-tuning seeds: this rests on one seed)" in claims.markdown(
        table, seeds=alone, n_boot=500
    )
    assert "fine-tuning seeds" not in claims.markdown(table, n_boot=500)
