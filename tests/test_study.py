"""mu.study and its parts: the subsampled MASSIVE-layout folder (mu.subsample: parallel ids, sizes,
idempotent) and the CLI wiring (mu.study_cli)."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from mu import __main__ as cli
from mu import data, paths, stages, study, study_cli, subsample


def test_subsample_keeps_the_same_ids_in_every_locale(tmp_path):
    # the parallel design (the earlier one); the disjoint pools: tests/test_pools.py
    kw = dict(train=10, dev=None, test=5, design="parallel")
    out = subsample.subsample("toy", tmp_path / "sub", ["de-DE", "sw-KE"], **kw, seed=1)
    de = {s: data.load_split("de-DE", s, out) for s in data.SPLITS}
    sw = {s: data.load_split("sw-KE", s, out) for s in data.SPLITS}
    assert [len(de[s]) for s in data.SPLITS] == [10, len(data.load_split("de-DE", "dev", "toy")), 5]
    for s in data.SPLITS:
        assert de[s]["id"] == sw[s]["id"] and de[s]["label"] == sw[s]["label"]  # translations of each other
    full = data.load_split("de-DE", "train", "toy")
    rows = dict(zip(full["id"], zip(full["text"], full["label"])))
    assert all(rows[i] == (t, y) for i, t, y in zip(de["train"]["id"], de["train"]["text"], de["train"]["label"]))
    mtime = (out / "de-DE.jsonl").stat().st_mtime_ns
    assert subsample.subsample("toy", tmp_path / "sub", ["de-DE", "sw-KE"], **kw, seed=1) == out
    assert (out / "de-DE.jsonl").stat().st_mtime_ns == mtime  # same arguments: kept
    other = subsample.subsample("toy", tmp_path / "sub2", ["de-DE"], **kw, seed=2)
    assert data.load_split("de-DE", "train", other)["id"] != de["train"]["id"]  # the seed picks the subset
    with pytest.raises(ValueError, match="pool size train must be an integer >= 1"):
        subsample.subsample("toy", tmp_path / "bad", ["de-DE"], train=0, dev=None, test=None)
    with pytest.raises(ValueError, match=r"pool 'test' = test ranks \[500, 505\), but the test split has 96 ids"):
        subsample.subsample("toy", tmp_path / "bad", ["de-DE"], train=10, dev=None, test=5)  # disjoint: offset 500


def test_cli_has_the_study_commands():
    args = cli.parser().parse_args(["pretrain", "--objective", "mlm+tlm", "--steps", "10", "--hidden-size", "64"])
    assert (args.command, args.objective, args.steps, args.profile) == ("pretrain", "mlm+tlm", 10, "mini")
    assert study_cli._pretrain_kwargs(args)["hidden_size"] == 64
    args = cli.parser().parse_args(["study", "--steps", "5", "--train", "100", "--set", "locales=[en-US, de-DE]"])
    assert (args.train, args.test, args.objective) == (100, 500, "mlm+tlm+align")
    assert (args.pools, args.unlabeled, args.test_offset) == ("disjoint", 1000, None)  # the pre-registered pools
    kw = study_cli._pretrain_kwargs(cli.parser().parse_args(["study"]))  # the study's encoder recipe by default
    assert (kw["lr"], kw["embedding_init"]) == (1e-3, "parallel-svd")
    assert (
        cli.parser().parse_args(["study"]).steps == 3000
        and study_cli._pretrain_kwargs(args)["embedding_init"] == "parallel-svd"
    )
    assert dict(args.extra) == {"locales": ["en-US", "de-DE"]}
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["pretrain", "--objective", "clm", "--steps", "1"])
    args = cli.parser().parse_args(["study"])  # the protocol's declared defaults
    assert (args.tune_locales, args.tune_epochs, args.tune_lrs) == (
        list(study.TUNE_LOCALES),
        list(study.TUNE_EPOCHS),
        list(study.TUNE_LRS),
    )
    assert (args.seeds, args.seed_targets, args.subset_notebooks, args.budget) == (None, None, ["05"], False)
    args = cli.parser().parse_args(
        [
            "study",
            "--tune-locales",
            "--tune-epochs",
            "2",
            "2.5",
            "--seeds",
            "42",
            "43",
            "--seed-targets",
            "nl-NL",
            "--budget",
        ]
    )
    assert (args.tune_locales, args.tune_epochs, args.seeds, args.seed_targets) == ([], [2, 2.5], [42, 43], ["nl-NL"])
    assert isinstance(args.tune_epochs[0], int) and args.budget


def test_the_declared_target_sets_follow_their_rules_and_the_params_files():
    from mu import locales, params

    alphabetical = sorted(locales.LOCALES)
    assert list(study.TUNING_TARGETS) == alphabetical[5::10] and len(study.TUNING_TARGETS) == 5
    assert list(study.SUBSET) == [t for t in alphabetical[::3] if t not in study.TUNING_TARGETS]
    assert len(study.SUBSET) >= 15 and not set(study.SUBSET) & set(study.TUNING_TARGETS)
    p06 = params.load_params("06_aggregation", "mini")
    assert p06["tuning_targets"] == list(study.TUNING_TARGETS) and p06["seed_targets"] == list(study.SUBSET)
    assert len(p06["seeds"]) >= 3 and params.load_params("02_training", "mini")["seed"] in p06["seeds"]
    for stem in params.all_notebooks():  # every notebook taking tuning targets has 06's, profile by profile
        for profile, values in params.read_params_file(params.params_file(stem))["profiles"].items():
            got = {**params.read_params_file(params.params_file(stem))["shared"], **values}.get("tuning_targets")
            assert got is None or got == params.load_params("06_aggregation", profile)["tuning_targets"], (
                stem,
                profile,
            )


def test_declare_keeps_measured_choices_unless_the_user_set_them(mu_root):
    from mu import declare, protocol

    protocol.record("decl", "04.distill_lr", 3e-3, chosen_by="label-free", data="held-out unlabeled text")
    protocol.record("decl", "02.epochs", 8, chosen_by="dev", data="dev split of en-US")
    protocol.record("decl", "02.lr", 2e-3, chosen_by="dev", data="dev split of en-US")
    values = {"data": "x", "report_to": "none", "distill_lr": 1e-3, "max_k": 10, "tuning_targets": ["cy-GB"]}
    names = declare.notebook("decl", "04", values, source="params/04.yaml", notes={"tuning_targets": "a rule"})
    assert names == ["04.distill_lr", "04.max_k", "04.tuning_targets"]  # plumbing (data, report_to) is no knob
    got = protocol.load("decl")
    assert got["04.distill_lr"]["chosen_by"] == "label-free" and got["04.max_k"]["chosen_by"] == "declared"
    assert got["04.max_k"]["data"] == declare.DECLARED and "params/04.yaml" in got["04.max_k"]["note"]
    assert "a rule" in got["04.tuning_targets"]["note"]
    declare.notebook("decl", "04", {"distill_lr": 1e-2}, source="params/04.yaml", user_set={"distill_lr"})
    assert protocol.load("decl")["04.distill_lr"]["value"] == 1e-2
    assert protocol.load("decl")["04.distill_lr"]["note"] == "set by the user (--set)"
    # 02's recipe: measured now (kept), or not measured this time (its old dev record is replaced)
    declare.notebook("decl", "02", {"epochs": 8, "lr": 5e-4}, source="p", measured={"epochs"}, owned=("epochs", "lr"))
    got = protocol.load("decl")
    assert got["02.epochs"]["chosen_by"] == "dev" and (got["02.lr"]["chosen_by"], got["02.lr"]["value"]) == (
        "declared",
        5e-4,
    )


def test_each_stage_is_recorded_as_it_ends_so_an_interrupted_run_keeps_it(tmp_path):
    path = tmp_path / "study" / "timings.json"
    path.parent.mkdir()
    path.write_text('[{"stages": {"notebook 02": {"seconds": 5.0, "jobs": 1, "ran": 1}}}]')
    log = stages.Stages(path, targets=3, workers=2)
    log.add("notebook 05", time.perf_counter() - 2.0, 15, 15)  # then the run is killed: nothing else is written
    got = json.loads(path.read_text())
    assert len(got) == 2 and got[0]["stages"] == {"notebook 02": {"seconds": 5.0, "jobs": 1, "ran": 1}}
    assert got[1]["stages"]["notebook 05"]["ran"] == 15 and got[1]["stages"]["notebook 05"]["seconds"] >= 2.0
    assert (got[1]["targets"], got[1]["workers"]) == (3, 2)
    log.add("notebook 06", time.perf_counter(), 1, 1)
    log.save(tuned={"lr": 0.002})
    got = json.loads(path.read_text())  # the same invocation's entry, completed; earlier ones untouched
    assert (
        len(got) == 2 and set(got[1]["stages"]) == {"notebook 05", "notebook 06"} and got[1]["tuned"] == {"lr": 0.002}
    )


def test_a_stage_stopped_mid_way_keeps_the_jobs_it_finished_in_its_timings(mu_root, tmp_path, monkeypatch):
    from mu import runner

    def stopped_run(nbs, targets, *, on_job, **kw):  # two targets run, one was done already, then the run is killed
        for target, status in (("a", "skipped"), ("b", "done"), ("c", "failed")):
            on_job({"notebook": "04_ensembling", "target": target, "status": status, "seconds": 1.0})
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", stopped_run)
    path = tmp_path / "timings.json"
    with pytest.raises(KeyboardInterrupt):
        stages.Stages(path).notebook("notebook 04", "04", ["a", "b", "c", "d"], "stagep", 2, {})
    got = json.loads(path.read_text())[-1]["stages"]["notebook 04"]
    assert (got["jobs"], got["ran"], got["partial"]) == (4, 2, True) and got["seconds"] >= 0.0


def test_budget_prices_a_plan_from_the_last_timings_that_ran():
    from mu import budget

    entries = [
        {
            "stages": {
                "notebook 03": {"seconds": 100.0, "jobs": 10, "ran": 10},
                "seed 43 notebook 02": {"seconds": 600.0, "jobs": 1, "ran": 1},
            }
        },
        {
            "stages": {
                "notebook 03": {"seconds": 1.0, "jobs": 10, "ran": 0},  # resumed: nothing ran
                "notebook 02": {"seconds": 900.0, "jobs": 1, "ran": 1},
            }
        },
    ]
    plan = {"notebook 02": 1, "notebook 03": 51, "seed 44 notebook 02": 1, "seed 44 notebook 03": 15, "tune": 27}
    frame = budget.estimate(plan, entries).set_index("stage")
    assert frame.at["notebook 03", "seconds_per_job"] == 10.0 and frame.at["notebook 03", "estimate_min"] == 8.5
    assert frame.at["seed 44 notebook 02", "seconds_per_job"] == 600.0  # another seed's measurement
    assert frame.at["seed 44 notebook 03", "from"] == "the main run's notebook 03"
    assert frame.at["tune", "from"] == "never measured" and pd.isna(frame.at["tune", "estimate_min"])
    md = budget.markdown(frame.reset_index(), workers=2)
    assert "| notebook 03 | 51 | 10.0 | 8.5 | this stage |" in md and "plus 1 stage(s) never measured" in md
    assert "`--seeds`" in md.split("| seed 44 notebook 03 |")[1].splitlines()[0]
    assert "Total: unknown plus 1 stage(s)" in budget.markdown(frame.reset_index().iloc[-1:], workers=1)
    # what each stage really cost so far: every invocation's seconds, the runs that ran part of it
    assert (frame.at["notebook 03", "spent_min"], frame.at["notebook 03", "runs"]) == (101.0 / 60, 1)
    assert frame.at["seed 44 notebook 02", "runs"] == 0 and "| 1.7 (1) |" in md.split("| notebook 03 |")[1]


def test_budget_prices_a_cached_pretraining_and_grid_from_their_own_records(mu_root):
    from mu import budget

    pre = paths.models_dir("budg", "pretrained", "mlm", "pretrain.json")
    paths.write_json(pre, {"train_seconds": 900.0})
    paths.write_json(
        paths.reports_dir("study", "budg", "tuning", "finetune.json"),
        {"grid": [{"seconds": 100.0}, {"seconds": 300.0}]},
    )
    got = budget.recorded("budg", workers=2)
    assert got == {
        "pretrain": (900.0, "mlm/pretrain.json (training only)"),
        "tune": (100.0, "tuning/finetune.json (over 2 workers)"),
    }
    entries = [{"stages": {"pretrain": {"seconds": 1.0, "jobs": 1, "ran": 0}}}]  # cached: the study never timed it
    frame = budget.estimate({"pretrain": 1, "tune": 27, "notebook 02": 1}, entries, got).set_index("stage")
    assert frame.at["pretrain", "estimate_min"] == 15.0 and frame.at["tune", "estimate_min"] == 45.0
    assert frame.at["tune", "from"] == "tuning/finetune.json (over 2 workers)"
    assert frame.at["notebook 02", "from"] == "never measured"
    timed = [{"stages": {"pretrain": {"seconds": 60.0, "jobs": 1, "ran": 1}}}]  # a timing of its own wins
    assert budget.estimate({"pretrain": 1}, timed, got).at[0, "from"] == "this stage"
    # notebook 02's sources record their fine-tuning; a notebook 02 the study timed only as a resume (its
    # sources trained already) is priced from them, and so is a seed's notebook 02 no run has timed yet
    for loc, seconds in (("af-ZA", 300.0), ("sw-KE", 500.0)):
        paths.write_json(
            paths.models_dir("budg", f"xlm-roberta-base_massive_k_{loc}", "training_args.json"),
            {"log_history": [{"loss": 1.0}, {"train_runtime": seconds}]},
        )
    got = budget.recorded("budg", workers=2)
    assert got["notebook 02"] == (400.0, "its 2 sources' training_args.json (fine-tuning only, over 2 workers)")
    resumed = [{"stages": {"notebook 02": {"seconds": 30.0, "jobs": 1, "ran": 1}}}]
    frame = budget.estimate({"notebook 02": 1, "seed 43 notebook 02": 1}, resumed, got).set_index("stage")
    assert frame["seconds_per_job"].tolist() == [400.0, 400.0] and frame.at["notebook 02", "spent_min"] == 0.5
    # a seed's notebook 02, the same work timed whole in one invocation, prices the resumed main one before its records
    seed43 = {
        "seed 43 notebook 02": {"seconds": 700.0, "jobs": 1, "ran": 1},
        "seed 43 notebook 03": {"seconds": 30.0, "ran": 15},
    }
    seeded = [*resumed, {"stages": seed43}]
    frame = budget.estimate({"notebook 02": 1, "notebook 03": 51}, seeded, got).set_index("stage")
    assert frame.at["notebook 02", "seconds_per_job"] == 700.0
    assert frame.at["notebook 02", "from"] == "a seed's run of notebook 02"
    assert (
        frame.at["notebook 03", "from"] == "never measured"
    )  # a seed's other notebooks do the main's work only in part
    whole = [{"stages": {"notebook 02": {"seconds": 900.0, "jobs": 1, "ran": 1}}}]  # a run from scratch wins
    assert budget.estimate({"notebook 02": 1}, whole, got).at[0, "from"] == "this stage"


@pytest.mark.slow
def test_study_run_tunes_declares_runs_the_notebooks_and_the_seeds(mu_root):
    """``python -m mu study`` end to end at toy size: the mini profile narrowed to 4 toy locales, a 1×2 tuning
    grid, notebooks 02, 03, 06 over 2 targets (one a tuning target), one extra seed (02, 03 on one target)."""
    from mu import declare, params, paths, protocol, report, seeds

    toy4 = ["de-DE", "fr-FR", "nl-NL", "sw-KE"]  # 06 needs an N×N over >= 4 locales
    kwargs = dict(
        source="toy",
        train=48,
        unlabeled=24,
        dev=8,
        test=24,
        test_offset=24,  # the disjoint pools at toy size (the toy test split has 96 ids)
        objective="mlm",
        steps=4,
        targets=["nl-NL", "sw-KE"],
        notebooks=["02", "03", "06"],
        tune_locales=["de-DE"],
        tune_epochs=[2],
        tune_lrs=[5e-4, 2e-3],
        seed_notebooks=["02", "03"],
        subset_notebooks=[],
        extra_params={
            "locales": toy4,
            "epochs": 1,
            "adamerging": [],
            "compare_modes": [],
            "compare_methods": ["iso_c"],
            "tuning_targets": ["sw-KE"],
            "seeds": [42, 43],
            "seed_targets": ["nl-NL"],
            "n_boot": 500,
            "feature_sets": ["syntax_knn+phonology_knn+inventory_knn"],
        },
        pretrain_kwargs=dict(
            vocab_size=300,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            batch_size=8,
            warmup_steps=1,
            dev_per_locale=4,
        ),
    )
    rows = study.run("mini", **kwargs)
    assert set(rows["status"]) == {"done"}, rows[["notebook", "target", "error"]]
    assert list(rows["notebook"]) == [
        "02_training",
        "03_merging",
        "03_merging",
        "02_training",
        "03_merging",
        "06_aggregation",
    ]
    assert len(data.load_split("sw-KE", "test", "cache/data/mini")) == 24

    # the protocol: every knob of every notebook run, nothing on test labels, 02's lr chosen on dev
    got = protocol.load("mini")
    for stem in ("02_training", "03_merging", "06_aggregation"):
        nb = params.find_notebooks([stem])[0]
        knobs = declare.knobs({**params.notebook_parameters(nb), **params.load_params(stem, "mini")})
        missing = [k for k in knobs if f"{stem[:2]}.{k}" not in got and k not in params.INJECTED]
        assert not missing, (stem, missing)
    assert {r["chosen_by"] for r in got.values()} <= set(protocol.CHOSEN_BY)
    assert got["02.lr"]["chosen_by"] == "dev" and got["02.lr"]["value"] in (5e-4, 2e-3)
    assert got["02.epochs"]["value"] == 1 and got["02.epochs"]["note"] == "set by the user (--set)"
    assert got["06.tuning_targets"]["value"] == ["sw-KE"] and got["study.seed_params"]["value"] == {
        "03": {"adamerging": [], "compare_methods": ["iso_c"]}
    }
    assert got["03.confirmatory_merge"]["value"] == "iso_c"  # the one data-free candidate: declared
    assert {"pretrain.steps", "pretrain.embedding_init", "tune.lr_grid", "study.train"} <= set(got)
    assert got["study.pools"]["value"] == "disjoint" and got["study.pool_ranks"]["value"]["unlabeled"] == (
        "train ranks [48, 72)"
    )
    assert got["study.test_offset"]["value"] == 24 and "declared a priori" in got["pretrain.steps"]["note"]
    assert len(data.load_split("sw-KE", "unlabeled", "cache/data/mini")) == 24
    md = paths.reports_dir("study", "mini", "protocol.md").read_text()
    assert all(f"| `{k}` |" in md for k in got)
    trained = paths.read_json(report.record_path("02_training", "mini", "training"))["params"]
    assert (trained["lr"], trained["epochs"]) == (got["02.lr"]["value"], 1)  # 02 ran with the tuned recipe

    # the extra seed's run: its own root, sources trained with seed 43 from the main run's base and data
    s43 = seeds.seed_root(43) / "reports" / "02_training" / "mini" / "training.json"
    assert paths.read_json(s43)["params"]["seed"] == 43 and seeds.main_seed("mini") == 42
    summary = paths.reports_dir("06_aggregation", "mini", "summary.md").read_text()
    assert "## Tuning targets (reported apart)" in summary and "| sw-KE |" in summary.split("## Tuning targets")[1]
    assert "## Headline effects over fine-tuning seeds" in summary and "| seed 42 | seed 43 |" in summary
    spread = pd.read_csv(paths.reports_dir("06_aggregation", "mini", "seeds.csv")).set_index(["system", "baseline"])
    sim = spread.loc[("merge/linear/similarity", "merge/linear/average")]
    assert sim["n"] == 1 and np.isfinite(sim["s42"]) and np.isfinite(sim["s43"])

    timings = paths.read_json(paths.reports_dir("study", "mini", "timings.json"))
    assert set(timings[-1]["stages"]) == {
        "subsample",
        "pretrain",
        "tune",
        "notebook 02",
        "confirmatory merge",
        "notebook 03",
        "seed 43 notebook 02",
        "seed 43 notebook 03",
        "notebook 06",
    }
    assert timings[-1]["stages"]["notebook 03"] == {**timings[-1]["stages"]["notebook 03"], "jobs": 2, "ran": 2}
    priced = paths.reports_dir("study", "mini", "budget.md").read_text()
    assert "| notebook 03 | 2 |" in priced and "| notebook 05 | 2 |" in priced  # the whole study, not this run's part
    again = study.run("mini", **kwargs)  # resumable: everything is done already
    assert set(again["status"]) == {"skipped"}
    assert not any(
        s["ran"] for s in paths.read_json(paths.reports_dir("study", "mini", "timings.json"))[-1]["stages"].values()
    )
    with pytest.raises(ValueError, match="parameters of none of the notebooks"):
        study.run("mini", **{**kwargs, "extra_params": {**kwargs["extra_params"], "epochz": 3}})


def test_a_stage_writes_the_choices_its_kernels_recorded_into_protocol_md(mu_root, tmp_path, monkeypatch):
    from mu import protocol, runner

    def fake_run(nbs, targets, **kw):  # a kernel records a choice, then the stage ends (the run may stop after it)
        protocol.record("stagep", "04.distill.init", "iso_c", chosen_by="tuning-targets", data="dev split")
        return pd.DataFrame(
            {
                "notebook": ["04_ensembling"],
                "target": ["x"],
                "status": ["done"],
                "seconds": [1.0],
                "error": [None],
                "output": [""],
            }
        )

    monkeypatch.setattr(runner, "run", fake_run)
    stages.Stages(tmp_path / "timings.json").notebook("notebook 04", "04", ["x"], "stagep", 1, {})
    assert (
        "| `04.distill.init` | iso_c | `tuning-targets` |"
        in paths.reports_dir("study", "stagep", "protocol.md").read_text()
    )


def test_the_seeds_runs_take_the_main_seeds_choices_as_declared_values():
    """A seed's run makes no choice: the main seed's recorded merge, teacher, init and lr become one-candidate
    parameters; an unrecorded choice distils no student (it would be a new choice, made in the seed)."""
    from mu import seeding

    rec = {
        "03.confirmatory_merge": {"value": "ties"},
        "04.distill.teacher": {"value": "soft/similarity"},
        "04.distill.init": {"value": "iso_c"},
        "04.distill.lr": {"value": 3e-4},
    }
    got = seeding.params(rec, seeding.SEED_NOTEBOOKS)
    assert got["03"] == {"adamerging": [], "compare_methods": ["ties", "iso_c"]}
    assert got["04"] == {
        "max_k": 1,
        "distill": True,
        "distill_teachers": ["soft/similarity"],
        "distill_inits": ["iso_c"],
        "distill_lrs": [3e-4],
    }
    assert got["05"] == {"iterative": False, "joint": ["similarity"]} and "02" not in got
    bare = seeding.params({"03.confirmatory_merge": {"value": "linear"}}, ["03", "04"])
    assert bare == {"03": {"adamerging": [], "compare_methods": ["iso_c"]}, "04": {"max_k": 1, "distill": False}}
