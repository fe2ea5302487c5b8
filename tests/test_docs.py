"""README.md and docs/: generated tables match the committed result files, every relative link
resolves, and `make help` lists every target (mu.docs, Makefile)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mu.analysis.methods_table
import mu.publish.collect
import mu.publish.docs
import mu.publish.docs_results
from mu import aggregate

REPO = Path(__file__).resolve().parents[1]


def test_committed_tables_are_what_the_command_generates():
    """`python -m mu docs --check`: regenerating every table from the committed files changes nothing."""
    assert mu.docs.update(check=True) == [], "run `python -m mu docs` and commit the result"
    tables = sum(len(re.findall(r"^<!-- mu:table ", p.read_text(), re.M)) for p in mu.docs.pages())
    assert tables >= 10, "README and docs should show their results as generated tables"


def test_rewrite_regenerates_only_the_marked_block_and_is_idempotent():
    text = "intro 0.123\n<!-- mu:table bench-eval -->\n| stale | 0.999 |\n<!-- /mu:table -->\noutro 0.456\n"
    new = mu.docs.rewrite(text)
    assert "0.999" not in new and new.startswith("intro 0.123\n") and new.endswith("outro 0.456\n")
    assert new.count("<!-- mu:table bench-eval -->") == 1 and "`mu.evaluate`" in new
    assert mu.docs.rewrite(new) == new


@pytest.mark.parametrize(
    "text, message",
    [
        ("a\n<!-- mu:table bench-eval -->\n| x |\n", "page.md:2: .* never closed"),
        ("<!-- mu:table nosuch -->\n<!-- /mu:table -->", "unknown table 'nosuch'; valid: .*bench-merge"),
        ("<!-- mu:table systems toy -->\n<!-- /mu:table -->", "argument 'toy' is not key=value"),
        ("<!-- mu:table systems profile=toy vs=best -->\n<!-- /mu:table -->", "valid baselines are"),
        ("<!-- mu:table bench-eval -->\n<!-- mu:table bench-eval -->\n<!-- /mu:table -->", "opens inside"),
    ],
)
def test_bad_markers_are_errors_naming_file_and_line(text, message):
    with pytest.raises(ValueError, match=message):
        mu.docs.rewrite(text, "page.md")


def _fake_run(root: Path, profile: str) -> pd.DataFrame:
    """The files notebook 06 and the runner leave for ``profile`` under ``root``, from a synthetic table."""
    rng = np.random.default_rng(0)
    targets = [f"t{i}" for i in range(6)]
    systems = [
        "native",
        "zero-shot/best",
        "zero-shot/uriel-top1",
        "merge/linear/similarity",
        "merge/linear/average",
        "ensemble/soft/similarity",
    ]
    table = pd.DataFrame(rng.uniform(0.3, 0.9, (6, 6)), index=targets, columns=systems)
    table.loc[["t4", "t5"], "merge/linear/similarity"] = np.nan  # run on a subset of the targets (as notebook 05)
    agg = root / "reports" / "06_aggregation" / profile
    agg.mkdir(parents=True)
    means, tests = aggregate.means(table, n_boot=200), aggregate.paired_tests(table)
    means.to_csv(agg / "means.csv", index=False)
    tests.to_csv(agg / "tests.csv", index=False)
    table.rename_axis("target").to_csv(agg / "summary.csv")
    uriel = {
        "fam": {
            "mean_rho_per_target": 0.25,
            "ci_low": 0.1,
            "ci_high": 0.4,
            "targets": 6,
            "targets_positive": 5,
            "wilcoxon_p": 0.03,
            "mean_rho_donor_adjusted": 0.2,
            "pooled_rho": 0.3,
            "pooled_p": 0.01,
            "pairs": 30,
        }
    }
    spread = {
        t: {
            "candidates": 5,
            "kept": 4,
            "max": 0.4,
            "min": 0.1,
            "max_over_min": 4.0,
            "effective": 3.2,
            "chosen_max": 0.5,
            "chosen_min": 0.1,
            "chosen_effective": 2.9,
        }
        for t in targets
    }
    (agg / "summary.json").write_text(
        json.dumps(
            {
                "notebook": "06_aggregation",
                "target": profile,
                "rows": [],
                "params": {"profile": profile},
                "versions": {"mu": "0.1.0"},
                "created": "2026-01-01T00:00:00+00:00",
                "results": {
                    "table": json.loads(table.to_json(orient="index")),
                    "uriel_transfer": {"summary": uriel, "weight_spread": spread},
                },
            }
        )
    )
    (root / "reports" / "03_merging" / "t0").mkdir(parents=True)
    (root / "reports" / "03_merging" / "t0" / "linear-similarity.json").write_text(
        json.dumps(
            {
                "notebook": "03_merging",
                "target": "t0",
                "rows": [],
                "params": {"profile": profile},
                "results": {"sts": {"base": 0.5, "de-DE": 0.7, "fr-FR": 0.8, "merge/linear/similarity": 0.75}},
            }
        )
    )
    for nb, target, seconds in (("03_merging", "t0", 61.5), ("03_merging", "t1", 60.0), ("02_training", profile, 5)):
        (root / "reports" / nb).mkdir(parents=True, exist_ok=True)
        (root / "reports" / nb / f"{target}.done.json").write_text(
            json.dumps({"notebook": nb, "target": target, "seconds": seconds, "parameters": {"profile": profile}})
        )
    return table


def test_collect_copies_a_runs_summary_and_the_tables_show_its_numbers(tmp_path, monkeypatch):
    for module in (mu.docs_results, mu.collect):
        monkeypatch.setattr(module, "RESULTS", str(tmp_path / "results"))
    assert "Not yet collected" in mu.docs.render("systems profile=fake")
    assert "Not yet collected" in mu.docs.render("methods-answer profile=fake")
    table = _fake_run(tmp_path / "run", "fake")
    agg, study = (
        tmp_path / "run" / "reports" / "06_aggregation" / "fake",
        tmp_path / "run" / "reports" / "study" / "fake",
    )
    methods = mu.methods_table.table(table, n_boot=200)
    methods.to_csv(agg / "methods.csv", index=False)
    mu.methods_table.contrasts(table, n_boot=200).to_csv(agg / "methods_contrasts.csv", index=False)
    (study / "tuning").mkdir(parents=True)
    (study / "protocol.md").write_text("# protocol\n")
    (study / "budget.md").write_text("# Time budget\n\n| stage | jobs |\n|---|---|\n| pretrain | 1 |\n")
    stage = lambda sec, ran: {"seconds": sec, "jobs": 51, "ran": ran}  # noqa: E731
    (study / "timings.json").write_text(
        json.dumps(
            [
                {"stages": {"pretrain": stage(700.0, 1), "notebook 03": stage(600.0, 51)}, "targets": 51, "workers": 2},
                {"stages": {"pretrain": stage(1.0, 0), "notebook 03": stage(1200.0, 51)}, "targets": 51, "workers": 2},
            ]
        )
    )
    grid = [
        {"locale": loc, "epochs": e, "lr": lr, "dev_accuracy": 0.1 * e + lr, "n_dev": 200, "seconds": 10.0}
        for loc in ("en-US", "hi-IN")
        for e in (3, 5)
        for lr in (0.001, 0.002)
    ]
    (study / "tuning" / "finetune.json").write_text(json.dumps({"args": {"locales": ["en-US", "hi-IN"]}, "grid": grid}))
    ada = [
        {
            "target": t,
            "granularity": "task",
            "step": s,
            "dev_accuracy": 0.5 + 0.01 * s,
            "dev_entropy": 2.0 - 0.01 * s,
            "held_out_entropy": 2.1 - 0.01 * s,
            "fit_seconds": 3.0,
        }
        for t in ("a", "b")
        for s in (0, 25)
    ]
    (study / "tuning" / "adamerging.json").write_text(json.dumps({"args": "x", "rows": ada}))
    inits = [
        {"target": t, "method": m, "dev_accuracy": d, "held_out_agreement": a, "note": ""}
        for t in ("a", "b")
        for m, d, a in (("linear", 0.5, 0.8), ("iso_c", 0.6, 0.7))
    ]
    inits += [{"target": t, "method": "slerp", "note": "slerp merges exactly 2 sources"} for t in ("a", "b")]
    (study / "tuning" / "distill_init.json").write_text(json.dumps({"args": "x", "rows": inits}))
    lrs = [
        {
            "target": t,
            "lr": lr,
            "dev_accuracy": d,
            "held_out_agreement": a,
            "best_step": b,
            "steps": 100,
            "seconds": 1.0,
        }
        for t in ("a", "b")
        for lr, d, a, b in ((3e-4, 0.6, 0.9, 50), (3e-3, 0.5, 0.7, 0))
    ]
    (study / "tuning" / "distill_lr.json").write_text(json.dumps({"args": "x", "rows": lrs}))
    rec = tmp_path / "run" / "reports" / "03_merging" / "t1" / "adamerging-similarity.json"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(
        json.dumps(
            {
                "notebook": "03_merging",
                "target": "t1",
                "params": {"profile": "fake"},
                "rows": [
                    {"system": "adapted/adamerging/similarity", "seconds": 12.5},
                    {"system": "merge/linear/similarity", "seconds": 0.5},
                ],
            }
        )
    )
    for target, seconds in (("t1", 6.0), ("t2", 8.0)):  # compare_methods records: a method's merges and evaluations
        sweep = tmp_path / "run" / "reports" / "03_merging" / target / "ties-similarity.json"
        sweep.parent.mkdir(parents=True, exist_ok=True)
        sweep.write_text(
            json.dumps(
                {
                    "target": target,
                    "params": {"profile": "fake"},
                    "rows": [],
                    "results": {"run_by": "compare_methods", "seconds": seconds},
                }
            )
        )
    (agg / "methods.png").write_bytes(b"\x89PNG figure")
    long = pd.DataFrame(
        [
            {
                "seed": s,
                "system": "merge/linear/similarity",
                "baseline": "zero-shot/best",
                "n": 4,
                "mean_diff": d,
                "p_holm": p,
            }
            for s, d, p in ((42, 0.02, 0.01), (43, 0.01, 0.2))
        ]
        + [
            {
                "seed": s,
                "system": "ensemble/soft/similarity",
                "baseline": "zero-shot/best",
                "n": 4,
                "mean_diff": d,
                "p_holm": 0.01,
            }
            for s, d in ((42, 0.03), (43, -0.01))
        ]
    )
    mu.seeds.spread(long).to_csv(agg / "seeds.csv", index=False)
    long.to_csv(agg / "seeds_per_seed.csv", index=False)
    assert "Not yet collected" in mu.docs.render("seeds profile=fake")
    out = mu.docs.collect("fake", tmp_path / "run")
    assert mu.docs.render("budget profile=fake").strip() == "| stage | jobs |\n|---|---|\n| pretrain | 1 |"
    over = mu.docs.render("seeds profile=fake")
    assert "| system | baseline | targets | seed 42 | seed 43 | mean | sd | largest Holm p | holds |" in over
    assert (
        "| `merge/linear/similarity` | `zero-shot/best` | 4 | +0.020 | +0.010 | +0.015 | 0.007 | 0.2 | sign only"
        in over
    )
    said = mu.docs.render("claims profile=fake")
    assert "**Over fine-tuning seeds** (42, 43; the sources fine-tuned again per seed, 4 declared targets)" in said
    assert "Did not hold (the sign changes, or a seed lacks it): `ensemble/soft/similarity` vs `zero-shot/best`" in said
    assert "| `adapted/adamerging/similarity` | 1 | 12.5 | 12.5 | 12 s |" in mu.docs.render("costs profile=fake")
    assert sorted(p.name for p in out.iterdir()) == [
        "budget.md",
        "costs.csv",
        "means.csv",
        "methods.csv",
        "methods.png",
        "methods_contrasts.csv",
        "protocol.md",
        "run.json",
        "seeds.csv",
        "seeds_per_seed.csv",
        "spread.csv",
        "sts.csv",
        "summary.csv",
        "sweep.csv",
        "tests.csv",
        "timings.json",
        "tuning",
        "uriel.csv",
    ]
    assert (out / "methods.png").read_bytes() == b"\x89PNG figure"
    cost = mu.docs.render("sweep-cost profile=fake")
    assert "| `ties` | 2 | 7.0 | 14 s |" in cost and "1 methods over 2 targets: 14 s" in cost
    assert "about 7 s of wall time on the run's 2 notebook worker(s)" in cost
    assert json.loads((out / "tuning" / "finetune.json").read_text())["grid"] == grid
    tuned = mu.docs.render("tuning profile=fake")
    assert "| 5 | 0.501 | **0.502** |" in tuned and "chosen: 5 epochs, lr 0.002" in tuned
    assert "grid's edge (most epochs, largest lr)" in tuned and "8 fits, 1 min 20 s" in tuned
    init = mu.docs.render("distill-init profile=fake")
    assert "| `iso_c` | **0.600** | 0.700 |\n| `linear` | 0.500 | **0.800** |" in init
    assert (
        "Over the tuning targets a, b; 2 methods at their defaults; `slerp` not applicable (slerp merges exactly 2 "
        "sources)."
    ) in init
    assert "| 0.0003 | **0.600** | **0.900** | 50 | 100 |\n| 0.003 | 0.500 | 0.700 | 0 | 100 |" in mu.docs.render(
        "distill-lr profile=fake"
    )
    ada_text = mu.docs.render("adamerging profile=fake")
    assert "| task | 25 | 0.750 | 1.750 | 1.850 |" in ada_text
    assert "`task`: from step 0 to 25, held-out entropy 2.100 → 1.850, dev accuracy 0.500 → 0.750" in ada_text
    best = methods.sort_values("mean").iloc[-1]
    assert f"**Best merge:** `{best['system']}`, mean {best['mean']:.3f}" in mu.docs.render(
        "methods-answer profile=fake"
    )
    assert "| linear |" in mu.docs.render("methods profile=fake tests=no")
    shown = mu.docs.render("systems profile=fake vs=average,oracle,top1")
    for system in table.columns:
        assert f"`{system}`" in shown and f"{table[system].mean():.3f}" in shown
    diff = (table["ensemble/soft/similarity"] - table["merge/linear/average"]).mean()
    assert f"{diff:+.3f} (" in shown
    assert "0.250 [0.100, 0.400]" in mu.docs.render("uriel profile=fake") and "5 / 6" in mu.docs.render(
        "uriel profile=fake"
    )
    timed = mu.docs.render("timings profile=fake")
    assert "| `03_merging` | 2 | 2 min 02 s |" in timed
    assert "| pretrain | 1 / 51 | 11 min 40 s | 1 |" in timed and "| notebook 03 | 51 / 51 | 20 min 00 s | 2 |" in timed
    assert "| t0 | 0.500 | 0.800 (fr-FR) | 0.750 |" in mu.docs.render("sts profile=fake")
    head = mu.docs.render("headline profiles=fake,absent")
    assert "fake (6 targets)" in head and "not yet collected" in head
    # merge/linear/similarity ran on 4 of the 6 targets: not beside 6-target means, but in a column of its own
    # where every system is averaged over the same 4 targets
    four = table["merge/linear/similarity"].notna()
    assert "| fake, the 4 targets all of them ran on (mean) |" in head
    row = next(r for r in head.splitlines() if r.startswith("| `merge/linear/similarity` |"))
    assert row.endswith(
        f"| only a subset | {table.loc[four, 'merge/linear/similarity'].mean():.3f} | not yet collected |"
    )
    native = next(r for r in head.splitlines() if r.startswith("| `native` |"))
    assert f"| {table.loc[four, 'native'].mean():.3f} |" in native
    assert f"{table['native'].mean():.3f}" in head
    merges = mu.docs.render("systems profile=fake families=merge")
    assert merges.count("`merge/") == 2  # one table per target set: linear/similarity ran on 4 of the 6
    assert merges.index("*On 6 targets:*") < merges.index("`merge/linear/average`") < merges.index("*On 4 targets:*")
    pairs = mu.docs.render(
        "pairs profile=fake systems=ensemble/soft/similarity baselines=merge/linear/similarity,native"
    )
    subset = table.dropna(subset=["merge/linear/similarity"])  # that system's targets only: the pair's
    gain = (subset["ensemble/soft/similarity"] - subset["merge/linear/similarity"]).mean()
    assert f"| `ensemble/soft/similarity` | `merge/linear/similarity` | 4 | {gain:+.3f} [" in pairs
    assert "| `native` | 6 |" in pairs and "Holm (2 tests)" in pairs
    with pytest.raises(ValueError, match=r"\['merge/nosuch/average'\] are not systems"):
        mu.docs.render("pairs profile=fake systems=merge/nosuch/average baselines=native")
    # what its transfer weighting saw: the run's notebook 02 wrote no dev N×N, so it ranked on the test one
    assert mu.collect.transfer_split("fake") == "test"
    dev = tmp_path / "run" / "reports" / "02_training" / "fake" / "evaluation_matrix_dev.csv"
    dev.parent.mkdir(parents=True, exist_ok=True)
    dev.write_text("source,a\na,1.0\n")
    mu.docs.collect("fake", tmp_path / "run")
    assert mu.collect.transfer_split("fake") == "dev"
    # the README's note says what the run could see: no pool design recorded is the earlier, parallel one
    said = mu.docs.render("provenance profile=fake")
    assert said.startswith("**These fake numbers are exploratory.**") and "translations of the sources'" in said
    assert "ranked sources on test items" not in said and "no joint-training baseline" in said
    timings = tmp_path / "run" / "reports" / "study" / "fake" / "timings.json"
    timings.write_text(json.dumps([*json.loads(timings.read_text()), {"stages": {}, "pools": "disjoint"}]))
    mu.docs.collect("fake", tmp_path / "run")
    assert mu.collect.pools("fake") == "disjoint"
    assert mu.docs.render("provenance profile=fake").startswith("**The fake column comes from the pre-registered run**")


def test_collect_without_an_aggregation_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(mu.collect, "RESULTS", str(tmp_path / "results"))
    with pytest.raises(FileNotFoundError, match="lacks .*means.csv.*run notebook 06"):
        mu.docs.collect("toy", tmp_path)


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img[^>]+src=\"([^\"]+)\"")


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code blocks are not links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [a or b for a, b in LINK.findall(text)]


def test_every_relative_link_and_image_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    checked, broken = 0, []
    for page in pages:
        for link in _links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):
                continue
            target = (page.parent / link.split("#")[0]).resolve()
            checked += 1
            if not target.exists() or REPO not in [target, *target.parents]:
                broken.append(f"{page.relative_to(REPO)}: {link}")
    assert not broken, f"links that resolve to no file of the repository: {broken}"
    assert checked >= 20


def test_make_help_lists_every_target_with_one_line():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = dict(re.findall(r"^  make (\S+)\s+(.+)$", out, re.M))
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    assert set(phony) <= set(listed), f"targets without a `## ` line: {set(phony) - set(listed)}"
    for target in ("demo", "test", "lab", "docs", "study", "bench", "bench-study"):
        assert listed[target].strip()
