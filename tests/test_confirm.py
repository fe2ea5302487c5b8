"""mu.confirm: the pre-registered hypotheses on synthetic per-item results of three seeds (15 targets × 50 items,
the registered family of 4 hypotheses × 3 seeds), from frames and from records written as the notebooks do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mu import aggregate, confirm, inference, paths, protocol, report, seeds

REPO = Path(__file__).resolve().parents[1]
PREREG = REPO / "params" / "preregistration.yaml"
TARGETS = [f"t{i:02d}" for i in range(15)]
IDS = sorted(str(i) for i in range(50))  # in the order records are read back (joined on sorted ids)
STUDENT = "adapted/distilled-uriel_logits-adaptunlabeled-from_iso_c/average"
ORACLE, AVG, SIM, BEST, JOINT = (
    "zero-shot/best",
    "merge/linear/average",
    "merge/linear/similarity",
    "merge/ties/average",
    "joint/similarity",
)
RECORDED = {"04.distill.init": {"value": "iso_c"}, "03.confirmatory_merge": {"value": "ties"}}


def better(base: np.ndarray, share: float, rng) -> np.ndarray:
    """``base`` with ``share`` of its wrong cells made right (``share`` < 0: of its right cells made wrong)."""
    flip = rng.uniform(size=base.shape) < abs(share)
    return np.where(flip, 1.0 if share > 0 else 0.0, base)


def world(seed: int, *, reverse_h3: bool = False, student_behind_joint: bool = False) -> dict[str, pd.DataFrame]:
    """Every confirmatory system of one seed: item difficulty shared by the targets; the student clearly above
    the oracle and level with joint training (or 10 points behind it); the ties merge above the average
    merge; the similarity merge above it (or, ``reverse_h3``, below)."""
    rng = np.random.default_rng(seed)
    easy = rng.uniform(0.2, 0.8, len(IDS))
    avg = (rng.uniform(size=(len(TARGETS), len(IDS))) < easy).astype(float)
    oracle = better(avg, 0.2, rng)
    student = better(oracle, 0.5, rng)
    cells = {
        AVG: avg,
        ORACLE: oracle,
        STUDENT: student,
        JOINT: better(student, 0.25, rng) if student_behind_joint else better(student, -0.002, rng),
        BEST: better(avg, 0.4, rng),
        SIM: better(avg, -0.4, rng) if reverse_h3 else better(avg, 0.4, rng),
    }
    return {s: pd.DataFrame(v, index=TARGETS, columns=IDS) for s, v in cells.items()}


def analyse(by_seed):
    reg = confirm.load(PREREG)
    systems = confirm.resolve_systems(reg, RECORDED)
    return confirm.analyse(reg, by_seed, systems, TARGETS, seed=42)


def test_the_registration_resolves_to_the_records_system_names():
    reg = confirm.load(PREREG)
    got = {r: s for r, (s, _) in confirm.resolve_systems(reg, RECORDED).items()}
    assert got == {
        "student": STUDENT,
        "oracle": ORACLE,
        "best_data_free_merge": BEST,
        "linear_average": AVG,
        "linear_similarity": SIM,
        "joint_similarity": JOINT,
    }
    assert confirm.resolve_systems(reg, {})["best_data_free_merge"][0] is None  # not determined
    linear = confirm.resolve_systems(reg, {"04.distill.init": {"value": "linear"}})["student"][0]
    assert (
        linear == "adapted/distilled-uriel_logits-adaptunlabeled/average"
    )  # a student from the linear merge has no suffix
    assert confirm.resolve_systems(reg, {}, [STUDENT, AVG])["student"][0] == STUDENT  # the one match
    assert confirm.settings(reg) == {"alpha": 0.05, "n_boot": 2000, "n_perm": 2000, "level": 0.95}


def test_the_study_refuses_04_settings_that_would_distil_another_student_than_the_registered_one():
    from mu import params

    reg = confirm.load(PREREG)
    p04 = params.load_params("04_ensembling", "mini")
    confirm.check_student_settings(reg, p04, "mini")  # the committed parameters make the registered student
    chosen = {**p04, "distill_teachers": None}  # the teacher chosen among every ensemble: maybe another one
    with pytest.raises(ValueError, match=r"mini would not distil .*set distill_teachers: \[uriel_logits/average\]"):
        confirm.check_student_settings(reg, chosen, "mini")
    with pytest.raises(ValueError, match="adapt_split is 'train', the registered student adapts on 'unlabeled'"):
        confirm.check_student_settings(reg, {**p04, "adapt_split": "train"}, "mini")
    with pytest.raises(ValueError, match="distill is false"):
        confirm.check_student_settings(reg, {**p04, "distill": False}, "mini")


def test_a_clear_effect_in_every_seed_is_supported_and_a_reversed_seed_is_not():
    tests, verdicts = analyse({42: world(42), 43: world(43), 44: world(44, reverse_h3=True)})
    v = verdicts.set_index("hypothesis")["verdict"]
    assert dict(v) == {"H1": "supported", "H2": "supported", "H3": "not supported", "H4": "supported"}
    assert "sign differs" in verdicts.set_index("hypothesis").at["H3", "reason"]
    assert len(tests) == 12 and tests["n_targets"].eq(15).all() and tests["n_items"].eq(50).all()
    # Holm over the whole family of 12 hypothesis × seed tests, each the registered sign-flip test
    np.testing.assert_allclose(tests["p_holm"], inference.stats.holm(tests["p_value"].to_numpy()))
    r = tests[(tests["hypothesis"] == "H3") & (tests["seed"] == 44)].iloc[0]
    w = world(44, reverse_h3=True)
    flip = inference.sign_flip_test((w[SIM] - w[AVG]).to_numpy(), 2000, 42, cluster="both")
    assert r["p_value"] == pytest.approx(flip.p_value) and r["mean_diff"] == pytest.approx(flip.mean_diff)
    assert r["mean_diff"] < 0 and r["rejects"]


def test_non_inferiority_fails_when_the_student_falls_behind_in_one_seed():
    _, verdicts = analyse({42: world(42), 43: world(43, student_behind_joint=True), 44: world(44)})
    v = verdicts.set_index("hypothesis")
    assert v.at["H4", "kind"] == "non-inferiority" and v.at["H4", "verdict"] == "not supported"
    assert "43" in v.at["H4", "reason"] and v.at["H1", "verdict"] == "supported"


def test_a_missing_seed_or_system_is_not_tested_and_counts_as_p_one():
    reg = confirm.load(PREREG)
    systems = confirm.resolve_systems(reg, {"04.distill.init": {"value": "iso_c"}})  # no confirmatory merge
    tests, verdicts = confirm.analyse(reg, {42: world(42), 43: world(43)}, systems, TARGETS)
    v = verdicts.set_index("hypothesis")
    assert (v["verdict"] == "not supported").all()
    assert "03.confirmatory_merge" in v.at["H2", "reason"] and "seed 44: no results" in v.at["H1", "reason"]
    ran = tests["p_value"].notna()
    assert ran.sum() == 6  # H1, H3, H4 in two seeds
    padded = np.where(ran, tests["p_value"], 1.0)
    np.testing.assert_allclose(tests["p_holm"], inference.stats.holm(padded))


def write_seed(cells: dict[str, pd.DataFrame], sources: list[str]) -> None:
    """One seed's run as the notebooks leave it: 03/04/05 records with items, the N×N with its per-item file
    (the oracle is the best of ``sources`` on each target)."""
    for t in TARGETS:
        rows = []
        for system, family in ((AVG, "merge"), (SIM, "merge"), (BEST, "merge"), (STUDENT, "adapted"), (JOINT, "joint")):
            c = cells[system].loc[t].to_numpy()
            item = report.items(IDS, c)
            rows.append({"system": system, "family": family, "accuracy": c.mean(), "n": len(IDS), "items": item})
        report.save("03_merging", t, "all", params={"profile": "toy"}, rows=rows)
    # the oracle's source scores it; the others are worse on every item
    correct = {s: {} for s in sources}
    for t in TARGETS:
        o = cells[ORACLE].loc[t].to_numpy()
        correct[sources[0]][t] = "".join("1" if x else "0" for x in o)
        for s in sources[1:]:
            correct[s][t] = "0" * len(IDS)
    nxn = pd.DataFrame({t: [correct[s][t].count("1") / len(IDS) for s in sources] for t in TARGETS}, index=sources)
    path = paths.reports_dir("02_training", "toy", "evaluation_matrix.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    nxn.to_csv(path)
    paths.write_json(
        aggregate.nxn_items_path(path), {"split": "test", "ids": {t: IDS for t in TARGETS}, "correct": correct}
    )


def test_report_reads_every_seeds_records_and_writes_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MU_ROOT", str(tmp_path))
    report.save("02_training", "toy", "training", params={"profile": "toy", "seed": 42})
    for name, knob in (("iso_c", "04.distill.init"), ("ties", "03.confirmatory_merge")):
        protocol.record("toy", knob, name, chosen_by="tuning-targets", data="dev of the tuning targets")
    for s in (42, 43, 44):
        root = seeds.roots("toy", [s])[s]
        monkeypatch.setenv("MU_ROOT", str(root))
        write_seed(world(s, reverse_h3=s == 44), ["x1", "x2"])
        monkeypatch.setenv("MU_ROOT", str(tmp_path))
    result = confirm.report("toy", PREREG, targets=TARGETS, tuning_targets=["de-DE"])
    v = result["verdicts"].set_index("hypothesis")["verdict"]
    assert dict(v) == {"H1": "supported", "H2": "supported", "H3": "not supported", "H4": "supported"}
    expected, _ = analyse({42: world(42), 43: world(43), 44: world(44, reverse_h3=True)})
    np.testing.assert_allclose(result["tests"]["p_value"], expected["p_value"])  # the same as from the frames
    assert not any("declares 15" in n for n in result["notes"])  # the registered number of targets
    written = confirm.write(result, tmp_path / "out")
    md = written["confirmatory.md"].read_text()
    assert "exploratory" in md and "| H3 |" in md and "supported" in md
    csv = pd.read_csv(written["confirmatory.csv"])
    assert len(csv) == 12 and set(csv["verdict"]) == {"supported", "not supported"}
    assert confirm.results(result)["systems"]["best_data_free_merge"] == BEST
