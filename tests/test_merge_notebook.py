"""notebooks/03_merging.ipynb runs offline (papermill) on toy models with a method other than its default and
writes its records (nbmake runs it as committed, with `linear`)."""

from __future__ import annotations

from pathlib import Path

import papermill
import pytest

from mu import evaluate, merge, paths, protocol, report

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_merging.ipynb"
PROFILE = "test03"  # own N×N path (reports/02_training/test03/) and models folder: no clash with other tests
MODELS_DIR = "models/test03"
LOCALES = ["de-DE", "nl-NL", "af-ZA", "en-US", "es-ES"]


@pytest.fixture(scope="module")
def toy_setup(perturbed_sources):
    """Toy base + 'fine-tuned' sources (the base perturbed, one seed each) and their N×N matrix."""
    dirs = perturbed_sources(LOCALES, MODELS_DIR, seed=100)
    evaluate.nxn(dirs, data="toy", profile=PROFILE, max_seq_length=32)
    return dirs


@pytest.mark.slow
def test_notebook_runs_for_another_method(toy_setup, tmp_path):
    # ties, with every other method through the knob (two here), merged models not kept, and AdaMerging
    method = "ties"
    params = dict(
        profile=PROFILE,
        target_lang="es-ES",
        models_dir=MODELS_DIR,
        method=method,
        mode="similarity",
        num_languages=3,
        max_seq_length=32,
        compare_methods=["iso_c", "slerp"],
        keep_merged=False,
    )
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3", progress_bar=False
    )
    record = paths.read_json(report.record_path("03_merging", "es-ES", f"{method}-similarity"))
    systems = {r["system"]: r for r in record["rows"]}
    assert set(systems) == {f"merge/{method}/similarity", f"merge/{method}/average"}
    for row in systems.values():
        assert "es-ES" not in row["sources"] and len(row["sources"]) == 3
        assert 0.0 <= row["accuracy"] <= 1.0 and row["n"] > 0
        details = paths.read_json(Path(row["model"]) / "merge_details.json")
        assert details["method"] == method and details["weights"] == pytest.approx(row["sources"])
    assert list(systems[f"merge/{method}/average"]["sources"].values()) == pytest.approx([1 / 3] * 3)
    assert {"native", "zero-shot/best", "zero-shot/best-source"} <= set(record["results"]["accuracy"])
    assert record["params"]["method"] == method and "nxn" in record["inputs"]
    assert report.record_path("03_merging", "es-ES", f"{method}-similarity").with_suffix(".png").is_file()
    _adapted_record(systems)  # the records beside the method's: AdaMerging's and compare_methods'
    iso = paths.read_json(report.record_path("03_merging", "es-ES", "iso_c-similarity"))
    assert {r["system"] for r in iso["rows"]} == {"merge/iso_c/similarity", "merge/iso_c/average"}
    assert iso["params"]["compare_methods"] == ["iso_c", "slerp"] and iso["results"]["run_by"] == "compare_methods"
    assert not any(Path(r["model"]).exists() for r in iso["rows"])
    assert not report.record_path("03_merging", "es-ES", "slerp-similarity").exists()  # 3 sources: not run
    # STS of the encoders (toy pairs in es-ES): the base, each merged source and both merges
    sts = record["results"]["sts"]
    assert set(sts) == {"base", *systems[f"merge/{method}/similarity"]["sources"], *systems}
    assert all(-1.0 <= v <= 1.0 for v in sts.values()) and record["results"]["sts_data"]["n"] == 200


def _adapted_record(systems: dict) -> None:
    """The AdaMerging record beside the merges: its own rows, knobs chosen on the tuning targets, costs, plots."""
    adapted = paths.read_json(report.record_path("03_merging", "es-ES", "adamerging-similarity"))  # own record
    # granularity and steps chosen on the tuning targets' dev splits (the toy's de-DE, en-US), named as merges are
    label = merge.label("adamerging", **{k: v for k, v in adapted["results"]["knobs"].items() if k != "constraint"})
    assert {r["system"]: r["family"] for r in adapted["rows"]} == {
        f"adapted/{label}/similarity": "adapted",
        f"adapted/{label}/average": "adapted",
    }
    assert all(r["seconds"] > 0 for r in adapted["rows"]) and set(adapted["results"]["cost_s"]) >= set(systems)
    assert report.record_path("03_merging", "es-ES", "adamerging-similarity").with_suffix(".png").is_file()
    chosen = protocol.load(PROFILE)
    assert chosen["03.adamerging.steps"]["chosen_by"] == "tuning-targets"
    assert chosen["03.adamerging.steps"]["value"] == adapted["results"]["knobs"]["steps"]
    assert paths.reports_dir("study", PROFILE, "adamerging-selection.png").is_file()
