"""mu.report aggregation: synthetic records + N×N matrix, every number re-derived here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mu import aggregate, paths, plots, report, runner
from mu import stats as mu_stats
from mu import summary as mu_summary

REPO = Path(__file__).resolve().parent.parent
LOCALES = ["af-ZA", "de-DE", "nl-NL", "en-US", "fr-FR", "es-ES"]
N_TEST = 200


def make_nxn(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    m = rng.integers(40, 120, size=(len(LOCALES), len(LOCALES))) / N_TEST
    np.fill_diagonal(m, rng.integers(160, 190, size=len(LOCALES)) / N_TEST)
    return pd.DataFrame(m, index=LOCALES, columns=LOCALES)


def acc(rng) -> float:
    return int(rng.integers(50, 150)) / N_TEST


def row(system: str, family: str, accuracy: float, sources: dict | None = None) -> dict:
    r = {"system": system, "family": family, "accuracy": accuracy, "macro_f1": accuracy / 2, "n": N_TEST}
    return {**r, "sources": sources} if sources else r


def write_results(targets=LOCALES, *, iterative_missing: str | None = "es-ES", seed: int = 1) -> dict:
    """Records as notebooks 03-05 would save them; returns {target: sources}."""
    rng = np.random.default_rng(seed)
    used = {}
    for i, t in enumerate(targets):
        others = [s for s in LOCALES if s != t]
        src = {s: w for s, w in zip(others[i % 3 : i % 3 + 3], (0.5, 0.3, 0.2))}
        used[t] = src
        avg = {s: 1 / 3 for s in src}
        params = {"profile": "toy", "target_lang": t}
        report.save(
            "03_merging",
            t,
            "linear-similarity",
            params=params,
            rows=[row("merge/linear/similarity", "merge", acc(rng), src)],
        )
        report.save(
            "03_merging", t, "linear-average", params=params, rows=[row("merge/linear/average", "merge", acc(rng), avg)]
        )
        report.save(
            "04_ensembling", t, "soft", params=params, rows=[row("ensemble/soft/similarity", "ensemble", acc(rng), src)]
        )
        if t != iterative_missing:
            report.save(
                "05_iterative",
                t,
                "linear",
                params=params,
                rows=[row("iterative/linear/similarity", "iterative", acc(rng), src)],
            )
    return used


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MU_ROOT", str(tmp_path))
    return tmp_path


def test_table_holds_every_column_derived_from_records_and_nxn(root):
    nxn = make_nxn()
    used = write_results()
    report.save(
        "03_merging",
        "af-ZA",
        "other-profile",
        params={"profile": "massive"},
        rows=[row("merge/ties/similarity", "merge", 0.99)],
    )
    paths.write_json(paths.reports_dir("03_merging", "af-ZA", "weights.json"), {"af-ZA": 1.0})
    summary = aggregate.aggregate("toy", nxn=nxn)
    table = summary["table"]

    assert list(table.index) == sorted(LOCALES)
    assert list(table.columns) == [
        "native",
        "merge/linear/similarity",
        "merge/linear/average",
        "zero-shot/best-source",
        "zero-shot/best",
        "zero-shot/uriel-top1",
        "ensemble/soft/similarity",
        "iterative/linear/similarity",
    ]
    for t in LOCALES:
        others = nxn[t].drop(t)
        assert table.at[t, "native"] == nxn.at[t, t]
        assert table.at[t, "zero-shot/best"] == others.max()
        assert table.at[t, "zero-shot/best-source"] == nxn.loc[list(used[t]), t].max()
        # URIEL top-1: the similarity merge's largest weight, scored without choosing by the target's labels
        top = max(used[t], key=used[t].get)
        assert table.at[t, "zero-shot/uriel-top1"] == nxn.at[top, t]
        rec = paths.read_json(report.record_path("03_merging", t, "linear-similarity"))
        assert table.at[t, "merge/linear/similarity"] == rec["rows"][0]["accuracy"]
    assert np.isnan(table.at["es-ES", "iterative/linear/similarity"])  # missing, not invented
    assert "merge/ties/similarity" not in table.columns  # the massive record stays out

    best = summary["rows"].set_index(["target", "system"])
    assert best.at[("fr-FR", "zero-shot/best"), "sources"] == {nxn["fr-FR"].drop("fr-FR").idxmax(): 1.0}
    lo, hi = best.at[("fr-FR", "native"), "ci_low"], best.at[("fr-FR", "native"), "ci_high"]
    assert lo < nxn.at["fr-FR", "fr-FR"] < hi  # Wilson interval from the targets' n
    assert set(summary["inputs"]) >= {"reports/03_merging/af-ZA/linear-similarity.json"}


def test_means_bootstrap_and_wilcoxon(root):
    write_results()
    summary = aggregate.aggregate("toy", nxn=make_nxn(), n_boot=2000, seed=7, min_pairs=5)
    table, means = summary["table"], summary["means"].set_index("system")
    for system in table.columns:
        v = table[system].dropna()
        assert means.at[system, "n"] == len(v)
        assert means.at[system, "mean"] == pytest.approx(v.mean())
        assert means.at[system, "ci_low"] <= v.mean() <= means.at[system, "ci_high"]
    assert means.at["iterative/linear/similarity", "n"] == len(LOCALES) - 1
    again = aggregate.aggregate("toy", nxn=make_nxn(), n_boot=2000, seed=7)["means"]
    pd.testing.assert_frame_equal(again, summary["means"])  # seeded

    tests = summary["tests"].set_index(["system", "baseline"])
    sim, avg = table["merge/linear/similarity"], table["merge/linear/average"]
    expected = stats.wilcoxon(sim, avg)
    got = tests.loc[("merge/linear/similarity", "merge/linear/average")]
    assert got["n"] == len(LOCALES) and got["p_value"] == pytest.approx(expected.pvalue)
    assert got["mean_diff"] == pytest.approx((sim - avg).mean())
    assert got["wins"] + got["ties"] + got["losses"] == len(LOCALES)
    assert ("merge/linear/average", "merge/linear/average") not in tests.index
    ens = tests.loc[("ensemble/soft/similarity", "zero-shot/best")]
    pair = table[["ensemble/soft/similarity", "zero-shot/best"]].dropna()
    assert ens["p_value"] == pytest.approx(stats.wilcoxon(pair.iloc[:, 0], pair.iloc[:, 1]).pvalue)
    assert tests.loc[("iterative/linear/similarity", "merge/linear/average"), "n"] == len(LOCALES) - 1


def test_holm_adjustment():
    p = [0.01, 0.04, np.nan, 0.03, 0.005]
    got = mu_stats.holm(p)
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 over m = 4 -> 0.02, 0.03, 0.06, 0.06 (monotone)
    np.testing.assert_allclose(got, [0.03, 0.06, np.nan, 0.06, 0.02])
    assert np.isnan(mu_stats.holm([np.nan])).all() and mu_stats.holm([0.9, 0.8]).max() == 1.0


def test_tests_carry_holm_per_baseline(root):
    write_results()
    tests = aggregate.aggregate("toy", nxn=make_nxn(), n_boot=200, seed=7)["tests"]
    for _, fam in tests.groupby("baseline"):
        np.testing.assert_allclose(fam["p_holm"].to_numpy(), mu_stats.holm(fam["p_value"].to_numpy()))
        ok = fam["p_value"].notna()
        assert (fam.loc[ok, "p_holm"] >= fam.loc[ok, "p_value"]).all()


def test_tuning_targets_are_left_out_of_the_main_table_and_reported_apart(root):
    write_results()
    full = aggregate.aggregate("toy", nxn=make_nxn(), n_boot=200)
    apart = ["de-DE", "fr-FR"]
    summary = aggregate.aggregate(
        "toy", nxn=make_nxn(), n_boot=200, min_pairs=4, tuning_targets=[*apart, "ja-JP"]
    )  # ja-JP has no result: nothing to leave out
    table, tuning = summary["table"], summary["tuning"]
    main = sorted(set(LOCALES) - set(apart))
    assert list(table.index) == main and list(tuning.index) == apart
    assert not summary["rows"]["target"].isin(apart).any()
    pd.testing.assert_frame_equal(table, full["table"].loc[main, table.columns])
    pd.testing.assert_frame_equal(tuning, full["table"].loc[apart, table.columns])
    means = summary["means"].set_index("system")
    assert means.at["merge/linear/similarity", "mean"] == pytest.approx(table["merge/linear/similarity"].mean())
    got = summary["tests"].set_index(["system", "baseline"]).loc[("merge/linear/similarity", "merge/linear/average")]
    expected = stats.wilcoxon(table["merge/linear/similarity"], table["merge/linear/average"])
    assert got["n"] == len(main) and got["p_value"] == pytest.approx(expected.pvalue)
    md = mu_summary.summary_markdown(summary, "toy")
    assert "## Tuning targets (reported apart)" in md and "| de-DE |" in md.split("## Tuning targets")[1]
    assert not any(line.startswith("| de-DE |") for line in md.split("## Tuning targets")[0].splitlines())
    assert "mean over them" in md
    assert "de-DE" in mu_summary.summary_results(summary)["tuning_targets"]
    with pytest.raises(ValueError, match="every target .* is a tuning target"):
        aggregate.aggregate("toy", nxn=make_nxn(), tuning_targets=LOCALES)


def test_too_few_targets_is_not_computable(root):
    write_results(targets=LOCALES[:3])
    summary = aggregate.aggregate("toy", nxn=make_nxn(), min_pairs=5)
    tests = summary["tests"]
    assert tests["p_value"].isna().all()
    assert (tests["note"] == "not computable: 3 paired targets < 5").all()
    means = summary["means"].set_index("system")
    assert means.at["native", "n"] == 3 and np.isfinite(means.at["native", "ci_low"])


def test_absent_groups_show_as_missing_columns(root):
    report.save(
        "03_merging",
        "nl-NL",
        "linear-similarity",
        params={"profile": "toy"},
        rows=[row("merge/linear/similarity", "merge", 0.5, {"de-DE": 1.0})],
    )
    summary = aggregate.aggregate("toy", nxn=make_nxn())
    table = summary["table"]
    for placeholder in ("merge/*/average", "ensemble/*", "iterative/*"):
        assert placeholder in table.columns and table[placeholder].isna().all()
    tests = summary["tests"].set_index(["system", "baseline"])
    assert (
        tests.at[("merge/linear/similarity", "merge/linear/average"), "note"]
        == "not computable: no merge/linear/average results"
    )


def test_newest_duplicate_wins_with_a_note(root):
    write_results(targets=["de-DE"])
    path = report.record_path("03_merging", "de-DE", "linear-similarity")
    old = paths.read_json(path)
    old["created"], old["name"] = "2000-01-01T00:00:00+00:00", "old"
    old["rows"][0]["accuracy"] = 0.01
    paths.write_json(report.record_path("03_merging", "de-DE", "old"), old)
    summary = aggregate.aggregate("toy", nxn=make_nxn())
    assert summary["table"].at["de-DE", "merge/linear/similarity"] == paths.read_json(path)["rows"][0]["accuracy"]
    assert any("old.json superseded" in n for n in summary["notes"])


def test_record_rows_win_over_nxn_and_unknown_sources_are_noted(root):
    report.save(
        "03_merging",
        "sw-KE",
        "x",
        params={"profile": "toy"},
        rows=[
            row("merge/linear/similarity", "merge", 0.4, {"de-DE": 0.5, "it-IT": 0.5}),
            row("native", "native", 0.77),
        ],
    )
    nxn = make_nxn()
    nxn["sw-KE"] = 0.3
    summary = aggregate.aggregate("toy", nxn=nxn)
    table = summary["table"]
    assert table.at["sw-KE", "native"] == 0.77  # the record's own evaluation
    assert table.at["sw-KE", "zero-shot/best"] == 0.3
    assert np.isnan(table.at["sw-KE", "zero-shot/best-source"])
    assert any("['it-IT'] are not rows of the N×N" in n for n in summary["notes"])


def test_errors_name_what_is_missing(root):
    with pytest.raises(ValueError, match="no merge, ensemble or iterative results for profile 'toy'"):
        aggregate.aggregate("toy", nxn=make_nxn())
    write_results(targets=["de-DE"])
    with pytest.raises(FileNotFoundError, match="run notebook 02"):
        aggregate.aggregate("toy", nxn=root / "nope.csv")


def test_written_summary_files_and_figures(root):
    write_results()
    nxn_file = root / "nxn.csv"
    make_nxn().to_csv(nxn_file)
    summary = aggregate.aggregate("toy", nxn=nxn_file, n_boot=500)
    written = mu_summary.write_summary(summary, "toy")
    out = mu_summary.summary_dir("toy")
    assert set(written) == {"summary.csv", "rows.csv", "means.csv", "tests.csv", "tuning.csv", "summary.md"}
    csv = pd.read_csv(out / "summary.csv", index_col="target")
    pd.testing.assert_frame_equal(csv, summary["table"], check_names=False)
    md = (out / "summary.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| target | native"))
    for column in summary["table"].columns:
        assert f" {column} " in header
    es = next(line for line in md.splitlines() if line.startswith("| es-ES |"))
    assert es.rstrip(" |").endswith(mu_summary.MISSING)  # iterative missing for es-ES
    assert (
        "Paired tests" in md
        and "Wilcoxon signed-rank over targets" in md
        and summary["inputs"]["nxn"]["sha256"] == report.sha256(nxn_file)
    )
    rows = pd.read_csv(out / "rows.csv")
    assert json.loads(rows["sources"].dropna().iloc[0])
    results = mu_summary.summary_results(summary)
    json.dumps(results, allow_nan=False)
    assert results["table"]["es-ES"]["iterative/linear/similarity"] is None

    systems = list(summary["table"].columns)
    fig = plots.per_target_bars(summary["rows"], out / "per_target.png", systems=systems, title="t")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == sorted(summary["rows"]["target"].unique())  # one panel per target
    rows = summary["rows"].set_index(["target", "system"])
    dots = 0
    for ax in panels:
        for mark in ax.containers:  # one dot per row, on its system's line, with its interval where known
            x, y = (float(v[0]) for v in mark.lines[0].get_data())
            r = rows.loc[(ax.get_title(), systems[round(y)])]
            assert x == pytest.approx(r["accuracy"]) and mark.has_xerr == pd.notna(r["ci_low"])
            dots += 1
    assert dots == len(summary["rows"])
    plots.method_means(summary["means"], out / "means.png", title="m")
    assert (out / "per_target.png").stat().st_size > 1000 and (out / "means.png").stat().st_size > 1000
    assert not list(out.glob(".*"))  # nothing half-written


def per_target_rows(n_targets: int) -> tuple[pd.DataFrame, list[str]]:
    """A summary's long frame with the real study's 23 systems (one with no result) over ``n_targets``."""
    systems = [
        *("native", "zero-shot/best-source", "zero-shot/best", "zero-shot/uriel-top1", "iterative/*"),
        *(
            f"merge/{m}/{w}"
            for m in ("linear", "ties", "dare_ties", "task_arithmetic")
            for w in ("similarity", "average")
        ),
        *(f"ensemble/{m}/similarity" for m in ("soft", "majority", "uriel_logits")),
        *("adapted/distilled-soft-similarity", "adapted/adamerging-layer", "adapted/adamerging-task-adapttest"),
        *("iterative/linear/similarity", "iterative/ties/average", "merge/linear/oracle"),
    ]
    systems = aggregate.column_order(systems)
    rng = np.random.default_rng(0)
    targets = [f"t{i:02d}-XX" for i in range(n_targets)]
    acc = rng.uniform(0.3, 0.95, size=(n_targets, len(systems)))
    rows = pd.DataFrame(
        [
            {"target": t, "system": s, "accuracy": acc[i, j], "ci_low": acc[i, j] - 0.02, "ci_high": acc[i, j] + 0.02}
            for i, t in enumerate(targets)
            for j, s in enumerate(systems)
            if s != "iterative/*"
        ]
    )
    return rows, systems


@pytest.mark.parametrize("n_targets", [5, 51])
def test_per_target_figure_stays_readable(tmp_path, n_targets):
    """23 systems: dot panels for a few targets, a heatmap for many; bounded size, every system labelled."""
    rows, systems = per_target_rows(n_targets)
    fig = plots.per_target_bars(rows, tmp_path / "per_target.png", systems=systems, title="t")
    width, height = fig.get_size_inches()
    assert width <= 18 and height <= 8  # a 1400-px page shows it whole at a legible scale
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [s if s != "iterative/*" else "iterative/* (no result)" for s in systems]
    assert len({t.get_color() for t in fig.axes[0].get_yticklabels()}) == 6  # one colour per family
    assert (tmp_path / "per_target.png").stat().st_size > 1000


def test_notebook_06_runs_on_records_and_reruns_nothing(root):
    write_results()
    paths.write_text(aggregate.nxn_path("toy"), make_nxn().to_csv())
    kwargs = dict(notebooks_dir=REPO / "notebooks", params_dir=REPO / "params")
    summary = runner.run(["06"], [], **kwargs)
    assert summary["status"].tolist() == ["done"], summary["error"].tolist()
    out = mu_summary.summary_dir("toy")
    for name in ("summary.md", "summary.csv", "per_target.png", "means.png", "methods.csv", "methods.png"):
        assert (out / name).is_file()
    assert "## Which merge method works across languages" in (out / "summary.md").read_text()
    rec = paths.read_json(report.record_path("06_aggregation", "toy", "summary"))
    assert {r["system"] for r in rec["results"]["methods"]} == set(pd.read_csv(out / "methods.csv")["system"])
    assert rec["rows"] == [] and rec["results"]["table"]["af-ZA"]["native"] == make_nxn().at["af-ZA", "af-ZA"]
    # the toy profile's declared tuning targets (params/06_aggregation.yaml) are reported apart
    assert "de-DE" not in rec["results"]["table"] and set(rec["results"]["tuning_targets"]) == {"de-DE", "en-US"}
    assert rec["results"]["seeds"] is None  # no seeds declared for the toy profile
    assert "nxn" in rec["inputs"] and rec["params"]["profile"] == "toy"
    assert runner.run(["06"], [], **kwargs)["status"].tolist() == ["skipped"]


def test_nxn_path_is_notebook_02s():
    from mu import evaluate

    assert aggregate.nxn_path("toy") == evaluate.nxn_path("toy")
