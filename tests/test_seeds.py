"""mu.seeds on synthetic per-seed tables: every number re-derived here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mu import aggregate, seeds
from mu import stats as mu_stats

TARGETS = [f"t{i:02d}" for i in range(12)]
ENS, ORACLE, MT, AVG, MS = (
    "ensemble/uriel_logits/transfer",
    "zero-shot/best",
    "merge/linear/transfer",
    "merge/linear/average",
    "merge/linear/similarity",
)
HEADLINE = ((ENS, ORACLE), (MT, AVG), (MS, AVG))


def table(seed: int, *, flip: bool = False, extra: bool = False) -> pd.DataFrame:
    """The ensemble beats the oracle on every target (every seed); transfer − average is +0.01 on every
    target except with ``flip`` (−0.01); similarity − average is noise around +0.001."""
    rng = np.random.default_rng(seed)
    oracle = rng.uniform(0.5, 0.6, len(TARGETS))
    avg = oracle - 0.04 + rng.uniform(-0.005, 0.005, len(TARGETS))
    frame = pd.DataFrame(
        {
            ORACLE: oracle,
            ENS: oracle + rng.uniform(0.002, 0.01, len(TARGETS)),
            AVG: avg,
            MT: avg + (-0.01 if flip else 0.01) + rng.uniform(-0.001, 0.001, len(TARGETS)),
            MS: avg + rng.normal(0.001, 0.01, len(TARGETS)),
        },
        index=TARGETS,
    )
    if extra:  # a system only this seed has: left out, so every seed's Holm family is the same
        frame["ensemble/soft/similarity"] = oracle - 0.2
    return frame


def test_effects_per_seed_with_wilcoxon_and_holm_over_the_shared_systems():
    by_seed = {42: table(42, extra=True), 43: table(43), 44: table(44, flip=True)}
    long = seeds.effects(by_seed, HEADLINE, min_pairs=5)
    assert len(long) == 3 * len(HEADLINE)
    for seed, t in by_seed.items():
        shared = t[[ORACLE, ENS, AVG, MT, MS]]
        family = aggregate.paired_tests(shared, min_pairs=5, others=[ORACLE, AVG])
        for system, baseline in HEADLINE:
            got = long[(long["seed"] == seed) & (long["system"] == system) & (long["baseline"] == baseline)].iloc[0]
            d = t[system] - t[baseline]
            assert got["n"] == len(TARGETS) and got["mean_diff"] == pytest.approx(d.mean())
            assert got["p_value"] == pytest.approx(stats.wilcoxon(t[system], t[baseline]).pvalue)
            fam = family[family["baseline"] == baseline]
            holm = dict(zip(fam["system"], mu_stats.holm(fam["p_value"].to_numpy())))
            assert got["p_holm"] == pytest.approx(holm[system]) and got["p_holm"] >= got["p_value"]
    assert "ensemble/soft/similarity" not in set(long["system"])


def test_spread_claims_only_what_holds_in_every_seed():
    by_seed = {42: table(42), 43: table(43), 44: table(44, flip=True)}
    long = seeds.effects(by_seed, HEADLINE, min_pairs=5)
    frame = seeds.spread(long).set_index(["system", "baseline"])
    ens = frame.loc[(ENS, ORACLE)]
    diffs = [(t[ENS] - t[ORACLE]).mean() for t in by_seed.values()]
    assert [ens["s42"], ens["s43"], ens["s44"]] == pytest.approx(diffs)
    assert ens["mean"] == pytest.approx(np.mean(diffs)) and ens["sd"] == pytest.approx(np.std(diffs, ddof=1))
    assert (ens["min"], ens["max"]) == pytest.approx((min(diffs), max(diffs)))
    assert ens["holds"].startswith("yes") and ens["max_p_holm"] < 0.05 and ens["n"] == len(TARGETS)
    assert frame.loc[(MT, AVG), "holds"] == "no: the sign changes across seeds"  # +0.01, +0.01, −0.01
    assert frame.loc[(MT, AVG), "min"] < 0 < frame.loc[(MT, AVG), "max"]
    noise = frame.loc[(MS, AVG)]
    assert noise["holds"] in ("no: the sign changes across seeds", "sign only: p_holm >= 0.05 in some seed")

    result = {
        "seeds": list(by_seed),
        "targets": TARGETS,
        "alpha": 0.05,
        "effects": long,
        "spread": seeds.spread(long),
        "notes": ["seed 45: no results"],
    }
    md = seeds.markdown(result)
    row = next(line for line in md.splitlines() if line.startswith(f"| {ENS} |"))
    assert f"{diffs[0]:+.3f} (p_holm" in row and "yes: same sign" in row
    assert "| system | baseline | seed 42 | seed 43 | seed 44 | mean | sd | min | max | holds |" in md
    assert "- seed 45: no results" in md


def test_a_system_missing_in_a_seed_and_too_few_targets_are_said():
    by_seed = {42: table(42), 43: table(43).drop(columns=[MT])}
    long = seeds.effects(by_seed, HEADLINE, min_pairs=5)
    missing = long[long["system"] == MT]
    assert missing["mean_diff"].isna().all() and missing["note"].str.contains("missing in some seed").all()
    assert seeds.spread(long).set_index("system").at[MT, "holds"] == "missing in some seed"
    few = seeds.effects({42: table(42).iloc[:3], 43: table(43).iloc[:3]}, HEADLINE, min_pairs=5)
    frame = seeds.spread(few).set_index("system")
    assert frame.at[ENS, "holds"] == "sign only: no test in some seed (too few targets)"


def test_roots_put_extra_seeds_in_their_own_project_root(mu_root):
    from mu import paths, report

    report.save("02_training", "seedprof", "training", params={"profile": "seedprof", "seed": 42})
    assert seeds.main_seed("seedprof") == 42 and seeds.main_seed("nothing-yet") is None
    assert seeds.roots("seedprof", [42, 43]) == {42: paths.root(), 43: paths.root() / "seeds" / "s43"}
    result = seeds.report("seedprof", [43], TARGETS[:2])
    assert result["seeds"] == [] and "seed 43: no results" in result["markdown"]
    with pytest.raises(ValueError, match="give seeds and targets"):
        seeds.report("seedprof", [], TARGETS)
