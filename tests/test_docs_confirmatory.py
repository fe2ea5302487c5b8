"""The confirmatory tables (mu.publish.docs_confirm) read a collected confirmatory.csv written by
mu.analysis.confirm and say plainly when there is none; collect copies it; the training bench table
(mu.publish.docs_bench.training) renders from the committed reports/bench/training.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mu.publish.collect
import mu.publish.docs
from mu.analysis import confirm

REPO = Path(__file__).resolve().parents[1]
TARGETS = [f"t{i}" for i in range(12)]
SYSTEMS = {
    "student": "adapted/distilled-uriel_logits-adaptunlabeled-from_iso_c/average",
    "oracle": "zero-shot/best",
    "best_data_free_merge": "merge/iso_c/average",
    "linear_average": "merge/linear/average",
    "linear_similarity": "merge/linear/similarity",
    "joint_similarity": "joint/similarity",
}
ACCURACY = {  # each system's chance of a correct item: the student well above the oracle, near joint training
    "student": 0.9,
    "oracle": 0.3,
    "best_data_free_merge": 0.6,
    "linear_average": 0.55,
    "linear_similarity": 0.55,
    "joint_similarity": 0.9,
}


def _result() -> dict:
    """mu.analysis.confirm on synthetic targets × items matrices of every registered seed; seed 44 lacks the
    similarity-weighted linear merge, so H3 is not tested there."""
    reg = confirm.load()
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(40)]
    by_seed = {}
    for seed in reg["seeds"]:
        frames = {
            SYSTEMS[role]: pd.DataFrame(
                (rng.random((len(TARGETS), len(items))) < p).astype(float), index=TARGETS, columns=items
            )
            for role, p in ACCURACY.items()
        }
        if seed == reg["seeds"][-1]:
            del frames[SYSTEMS["linear_similarity"]]
        by_seed[seed] = frames
    systems = {role: (name, "registered name") for role, name in SYSTEMS.items()}
    tests, verdicts = confirm.analyse(reg, by_seed, systems, TARGETS)
    result = {"registration": reg, "systems": systems, "targets": TARGETS, "tests": tests}
    result.update(verdicts=verdicts, notes=[], inputs={})
    result["markdown"] = confirm.markdown(result)
    return result


@pytest.fixture(scope="module")
def result() -> dict:
    return _result()


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(mu.publish.collect, "RESULTS", str(tmp_path / "results"))
    return tmp_path


def test_not_collected_says_so_and_shows_no_number(results_dir):
    for spec in ("confirmatory profile=mini", "confirmatory-answer profile=mini"):
        text = mu.publish.docs.render(spec)
        assert "results are not collected" in text
        assert not re.search(r"\d", text), text
    assert "`python -m mu docs --collect mini --from <its MU_ROOT>`" in mu.publish.docs.render(
        "confirmatory profile=mini"
    )


def test_collect_copies_the_confirmatory_files_and_the_tables_show_them(results_dir, result):
    agg = results_dir / "run" / "reports" / "06_aggregation" / "mini"
    agg.mkdir(parents=True)
    for name in ("means.csv", "tests.csv", "summary.csv"):
        (agg / name).write_text("x\n1\n")
    (agg / "summary.json").write_text(json.dumps({"results": {"table": {}}}))
    written = confirm.write(result, agg)
    out = mu.publish.docs.collect("mini", results_dir / "run")
    for name, path in written.items():
        assert (out / name).read_text() == path.read_text()

    tests, verdicts = result["tests"], result["verdicts"].set_index("hypothesis")
    # the verdict read back from the file is the analysis' own, its reason included
    assert (
        confirm.verdicts_of(pd.read_csv(out / "confirmatory.csv"))
        .set_index("hypothesis")[["verdict", "reason"]]
        .equals(verdicts[["verdict", "reason"]])
    )
    assert verdicts.at["H1", "verdict"] == "supported" and verdicts.at["H3", "verdict"] == "not supported"

    table = mu.publish.docs.render("confirmatory profile=mini")
    assert "| hypothesis | claim | A − B | test | verdict | seed 42: A − B [95% CI], Holm p |" in table
    for _, r in tests.dropna(subset=["p_value"]).iterrows():
        shown = f"{r['mean_diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], Holm p {float(r['p_holm']):.2g}"
        assert shown in table, shown
    h1 = next(line for line in table.splitlines() if line.startswith("| H1 |"))
    assert "**supported**: rejects with the claim's sign (A > B) in all 3 seeds" in h1
    assert f"`{SYSTEMS['student']}` − `zero-shot/best`" in h1
    h3 = next(line for line in table.splitlines() if line.startswith("| H3 |"))
    assert "**not supported**: not tested: seed 44: no per-item results for merge/linear/similarity" in h3
    assert "not run (no per-item results for merge/linear/similarity)" in h3
    assert "| non-inferiority, δ = 0.01 |" in table
    assert "sign-flip test with target and item clusters" in table and "2000 flips" in table
    assert "Holm over all 12 hypothesis × seed tests" in table and "alpha 0.05" in table
    assert "12 confirmatory targets × 40 test items" in table and "a deviation" not in table

    answer = mu.publish.docs.render("confirmatory-answer profile=mini")
    assert "**Yes** (H1 supported): the label-free student" in answer
    h4 = tests[tests["hypothesis"] == "H4"]
    for _, r in h4.iterrows():
        assert f"seed {r['seed']}: {r['mean_diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" in answer
    said = "no worse than" if verdicts.at["H4", "verdict"] == "supported" else "not shown"
    assert f"it is **{said}**" in answer and "`joint/similarity`" in answer

    # a registration changed after the run is named a deviation
    section = out / "confirmatory.md"
    section.write_text(re.sub(r"sha256 `[0-9a-f]+`", "sha256 `000000000000`", section.read_text()))
    assert "The run tested registration sha256 `000000000000`" in mu.publish.docs.render("confirmatory profile=mini")


def test_training_table_renders_from_the_committed_json():
    d = json.loads((REPO / "reports" / "bench" / "training.json").read_text())
    table = mu.publish.docs.render("training")
    after, before = d["result"]["fit"]["en-US"], d["before"]["fit"]["en-US"]
    assert (
        f"| fine-tuning en-US (epoch of 2,000) | before | {before['examples_per_s']:.0f} | "
        f"{before['real_gflops_per_s']:.1f} | {before['floor_gflops_per_s']:.1f} | {before['ratio']:.2f}× |"
    ) in table
    assert f"| after | {after['examples_per_s']:.0f} |" in table
    test = d["result"]["eval"]["test"]
    assert f"| evaluation test (1,500 utterances) | after | {test['examples_per_s']:.0f} |" in table
    assert f"{test['ratio']:.2f}× (N×N row {test['row_ratio']:.2f}×)" in table
    bench_md = (REPO / "reports" / "bench" / "training.md").read_text()
    for name, p in d["projection"]["runs"].items():  # the bench's own Markdown projects the same minutes
        line = f"| {name} | {p['train_s'] / 60:.1f} | {p['nxn_s'] / 60:.1f} | {p['total_s'] / 60:.1f} |"
        assert line in table and line in bench_md
