"""Notebook 03's ``compare_methods`` (``mu.merge.sweep``): the valid values, every method under the same
weightings with its defaults, one record per method in the family naming, merged models deleted on request."""

from __future__ import annotations

from pathlib import Path

import pytest

from mu import merge as mm
from mu import paths

MODELS_DIR = "models/test_sweep"


def test_check_methods_valid_values():
    every = mm.sweep.check_methods("all")
    assert every == [m for m in mm.METHODS if m not in mm.ADAPTIVE]
    assert {"tsv_m", "iso_c", "iso_cts", "widen", "fisher_dataset", "regmean"} <= set(every)
    assert mm.sweep.check_methods([]) == [] and mm.sweep.check_methods(["ties", "widen"]) == ["ties", "widen"]
    for bad, match in (
        ("ALL", "valid are 'all'"),
        (["ties", "nope"], "nope"),
        (["ties", "ties"], "repeated"),
        (["adamerging"], "own cells"),
    ):
        with pytest.raises(ValueError, match=match):
            mm.sweep.check_methods(bad)


def test_not_applicable_names_the_exact_number_of_sources():
    assert mm.sweep.not_applicable("slerp", {"a": 0.5, "b": 0.5}) is None
    assert "exactly 2" in mm.sweep.not_applicable("slerp", {"a": 0.2, "b": 0.3, "c": 0.5})
    assert mm.sweep.not_applicable("tsv_m", {"a": 1.0}) is None


@pytest.mark.slow
def test_compare_runs_each_method_under_every_weighting(perturbed_sources, toy_base):
    perturbed_sources(["de-DE", "nl-NL", "fr-FR"], MODELS_DIR, seed=300)
    similarity = {"de-DE": 0.5, "nl-NL": 0.3, "fr-FR": 0.2}
    weightings = mm.with_average("similarity", similarity, compare={"transfer": {"de-DE": 0.5, "nl-NL": 0.5}})
    table, records = mm.sweep.compare(
        ["linear", "tsv_m", "slerp", "fisher_dataset"],
        "sw-KE",
        weightings,
        mode="similarity",
        skip=["linear"],
        models_dir=MODELS_DIR,
        data="toy",
        base_model=toy_base,
        keep_merged=False,
        seed=42,
        fisher_num_examples=16,
        batch_size=64,
        max_seq_length=32,
    )
    assert set(records) == {"tsv_m-similarity", "slerp-similarity", "fisher_dataset-similarity"}
    assert {r["system"] for r in records["tsv_m-similarity"]["rows"]} == {
        "merge/tsv_m/similarity",
        "merge/tsv_m/average",
        "merge/tsv_m/transfer",
    }
    # slerp: only the two-source weighting; the others are listed with why
    assert [r["system"] for r in records["slerp-similarity"]["rows"]] == ["merge/slerp/transfer"]
    skipped = table[table["system"].isna()]
    assert set(zip(skipped["method"], skipped["weighting"])) == {("slerp", "similarity"), ("slerp", "average")}
    assert all("exactly 2" in n for n in skipped["note"])
    assert set(records["slerp-similarity"]["results"]["not_applicable"]) == {"similarity", "average"}
    for name, record in records.items():
        for row in record["rows"]:
            assert row["family"] == "merge" and 0.0 <= row["accuracy"] <= 1.0 and "sw-KE" not in row["sources"]
            assert not Path(row["model"]).exists()  # keep_merged=False: deleted once evaluated
            assert record["inputs"][row["system"]]["sha256"] == row["model_sha256"]
        assert record["results"]["knobs"] == {} and record["results"]["seconds"] > 0
    assert not table[table["system"].notna()]["accuracy"].isna().any()
    # the data-dependent method computed its Fishers on each source's own train split (cached)
    assert len(list(paths.cache_dir("merge_stats").glob("fishers-*"))) >= 3


def test_compare_skips_only_what_ran_at_its_defaults(monkeypatch):
    calls = []

    def fake(method, target, weightings, **kw):
        calls.append((method, kw))
        return [
            {
                "system": f"merge/{method}/{w}",
                "family": "merge",
                "accuracy": 0.5,
                "sources": dict(ws),
                "model": f"/nowhere/{method}-{w}",
                "model_sha256": "0" * 64,
            }
            for w, ws in weightings.items()
        ]

    monkeypatch.setattr(mm.sweep, "evaluate_merges", fake)
    weightings = {"similarity": {"a": 0.6, "b": 0.4}, "average": {"a": 0.5, "b": 0.5}}
    table, records = mm.sweep.compare(
        ["linear", "ties", "slerp"],
        "sw-KE",
        weightings,
        mode="similarity",
        skip=["linear", "ties-density0.3"],
        models_dir="m",
        data="toy",
        base_model=None,
        keep_merged=False,
        seed=1,
    )
    assert [m for m, _ in calls] == ["ties", "slerp"]  # ties ran with other knobs in the main cells: default here
    assert all(kw["keep_merged"] is False and kw["seed"] == 1 and "density" not in kw for _, kw in calls)
    assert set(records) == {"ties-similarity", "slerp-similarity"}
    assert records["ties-similarity"]["inputs"]["merge/ties/average"] == {
        "path": "/nowhere/ties-average",
        "sha256": "0" * 64,
    }
    assert list(table["system"]) == [
        "merge/ties/similarity",
        "merge/ties/average",
        "merge/slerp/similarity",
        "merge/slerp/average",
    ]
