"""mu.iterative: cycles of training + merging on the toy profile; a run killed after the first
merge and resumed ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from mu import iterative, iterative_cycle, iterative_results, models, paths, plots, schedule
from mu.merge import lazy

TARGET = "it-IT"
SOURCES = {"fr-FR": 0.6, "es-ES": 0.4}
# 2 cycles of 1 epoch on 288 toy examples per source: a few seconds per cycle on CPU.
RUN = dict(
    data="toy",
    max_epochs=2,
    merge_frequency=1,
    merge_algorithm="linear",
    batch_size=32,
    lr=5e-4,
    max_seq_length=32,
    seed=7,
)


class Kill(TrainerCallback):
    """Raise at the first optimiser step of the ``at``-th ``fit`` (counting from 1)."""

    def __init__(self, at: int):
        self.at, self.fits = at, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.fits += 1

    def on_step_end(self, args, state, control, **kwargs):
        if self.fits >= self.at:
            raise KeyboardInterrupt(f"killed in fit #{self.fits}")


@pytest.fixture(scope="module")
def uninterrupted(toy_base):
    return iterative.run(TARGET, SOURCES, base_model=toy_base, out_dir="models/toy/iterative-test/full", **RUN)


def weights_of(path):
    sd = lazy.LazyStateDict.from_file(path) if path.suffix == ".safetensors" else lazy.open_model(path)
    return {k: sd[k] for k in sd}


def test_schedule_and_seeds():
    assert schedule.fixed(4, 2) == [2, 2]
    assert schedule.fixed(5, 2) == [2, 2, 1]
    assert schedule.fixed(1, 3) == [1]
    with pytest.raises(ValueError, match="merge_frequency must be an integer >= 1"):
        schedule.fixed(4, 0)
    assert iterative_cycle.derive_seed(42, 1, "fr-FR") == iterative_cycle.derive_seed(42, 1, "fr-FR")
    assert iterative_cycle.derive_seed(42, 1, "fr-FR") != iterative_cycle.derive_seed(42, 2, "fr-FR")
    assert 0 <= iterative_cycle.derive_seed(42, "merge", 3) < 2**31


def test_uninterrupted_run_logs_every_cycle(uninterrupted, toy_base):
    out = paths.resolve("models/toy/iterative-test/full")
    log = paths.read_json(out / "log.json")
    assert log == uninterrupted["log"]
    assert [e["cycle"] for e in log] == [1, 2] and [e["epochs"] for e in log] == [[0, 1], [1, 2]]
    assert log[0]["start"] == "base" and log[1]["start"] == "cycle_1"
    for entry in log:
        assert set(entry["sources"]) == set(SOURCES)
        for s in entry["sources"].values():
            assert s["train_loss"] > 0 and 0 <= s["dev_accuracy"] <= 1 and len(s["dev_accuracy_per_epoch"]) == 1
        assert {m["n"] for m in entry["merged"].values()} == {48, 96}  # toy dev / test sizes per locale
    # the final model is the last cycle's merge, evaluated on the target's test split
    test = dict(uninterrupted["test"])  # the final model's scores, with its per-item results for the report row
    assert test.pop("items")["correct"].count("1") / test["n"] == pytest.approx(test["accuracy"])
    assert test == log[-1]["merged"]["test"]
    assert uninterrupted["sources"] == pytest.approx(SOURCES)
    models.check_compatible({"merged": out / "merged", "base": toy_base})
    # only the last completed checkpoint is kept by default
    assert iterative_cycle.completed_cycles(out) == [2]
    details = paths.read_json(out / "merged" / iterative_cycle.DETAILS_JSON)
    assert details["cycle"] == 2 and details["weights"] == pytest.approx(SOURCES)
    png = plots.iterative_curves(
        iterative_results.log_frame(log), paths.reports_dir("05_iterative", TARGET, "test_curves.png")
    )
    assert paths.reports_dir("05_iterative", TARGET, "test_curves.png").stat().st_size > 0 and png is not None


def test_merge_is_the_weighted_mean_of_the_checkpointed_sources(uninterrupted):
    cycle = iterative_cycle.cycle_dir("models/toy/iterative-test/full", 2)
    src = {loc: weights_of(cycle / "sources" / f"{loc}.safetensors") for loc in SOURCES}
    merged = weights_of(cycle / "merged")
    final = weights_of(paths.resolve("models/toy/iterative-test/full/merged"))
    for key, value in merged.items():
        expected = sum(SOURCES[loc] * src[loc][key] for loc in SOURCES)
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(final[key], value)
    # the sources really moved away from each other during the cycle
    assert any(not torch.equal(src["fr-FR"][k], src["es-ES"][k]) for k in merged)


def test_killed_after_first_merge_resumes_to_identical_weights(uninterrupted, toy_base):
    out_dir = "models/toy/iterative-test/killed"
    out = paths.resolve(out_dir)
    # fits 1-2 are cycle 1; fit 4 is the second source of cycle 2 (the first one has finished)
    with pytest.raises(KeyboardInterrupt, match="fit #4"):
        iterative.run(TARGET, SOURCES, base_model=toy_base, out_dir=out_dir, callbacks=[Kill(4)], **RUN)
    assert iterative_cycle.completed_cycles(out) == [1]
    assert not (out / "cycle_2").exists() and not (out / "result.json").exists()
    assert not list(out.glob(".*.tmp")), "an interrupted cycle must leave nothing half-written"
    assert [e["cycle"] for e in paths.read_json(out / "log.json")] == [1]
    (out / ".cycle_2.stale.tmp").mkdir()  # what a SIGKILL would leave behind

    fits = Kill(at=10**9)  # counts the fits without killing
    resumed = iterative.run(TARGET, SOURCES, base_model=toy_base, out_dir=out_dir, callbacks=[fits], **RUN)
    assert fits.fits == len(SOURCES), "resume must retrain only cycle 2"
    assert not (out / ".cycle_2.stale.tmp").exists()
    full, again = weights_of(paths.resolve(uninterrupted["merged"])), weights_of(paths.resolve(resumed["merged"]))
    assert full.keys() == again.keys()
    assert all(torch.equal(full[k], again[k]) for k in full), "resumed run differs from the uninterrupted one"
    drop = ("elapsed_s",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in resumed["log"]] == [
        {k: v for k, v in e.items() if k not in drop} for e in uninterrupted["log"]
    ]
    assert resumed["test"] == uninterrupted["test"]

    # a finished run reruns as a no-op: no training, the saved result
    never = Kill(at=1)
    again_result = iterative.run(TARGET, SOURCES, base_model=toy_base, out_dir=out_dir, callbacks=[never], **RUN)
    assert never.fits == 0 and again_result == paths.read_json(out / "result.json")


def test_resume_with_other_parameters_is_refused(uninterrupted, toy_base):
    with pytest.raises(ValueError, match=r"other parameters .*'lr': \(0.0005, 0.001\)"):
        iterative.run(
            TARGET, SOURCES, base_model=toy_base, out_dir="models/toy/iterative-test/full", **{**RUN, "lr": 1e-3}
        )


def test_bad_inputs_are_clear_errors(toy_base):
    kw = dict(base_model=toy_base, out_dir="models/toy/iterative-test/bad", **RUN)
    with pytest.raises(ValueError, match="the target it-IT is among the sources"):
        iterative.run(TARGET, {**SOURCES, TARGET: 0.1}, **kw)
    with pytest.raises(ValueError, match="unknown locale"):
        iterative.run(TARGET, {"xx-XX": 1.0}, **kw)
    with pytest.raises(ValueError, match="unknown merge method 'nope'"):
        iterative.run(TARGET, SOURCES, **{**kw, "merge_algorithm": "nope"})
    with pytest.raises(ValueError, match=r"does not take \['density'\]"):
        iterative.run(TARGET, SOURCES, density=0.3, **kw)
    with pytest.raises(ValueError, match="apply to"):
        iterative.run(TARGET, SOURCES, stats_num_examples=8, **kw)
    assert not paths.resolve("models/toy/iterative-test/bad").exists(), "nothing written for a bad call"


def test_data_dependent_merge_uses_each_sources_statistics(toy_base):
    out_dir = "models/toy/iterative-test/fisher"
    result = iterative.run(
        TARGET,
        SOURCES,
        base_model=toy_base,
        out_dir=out_dir,
        **{**RUN, "max_epochs": 1, "merge_algorithm": "fisher_dataset"},
        stats_num_examples=16,
        keep_cycles=True,
    )
    cycle = iterative_cycle.cycle_dir(out_dir, 1)
    fishers = {loc: weights_of(cycle / "stats" / f"{loc}.safetensors") for loc in SOURCES}
    src = {loc: weights_of(cycle / "sources" / f"{loc}.safetensors") for loc in SOURCES}
    merged = weights_of(paths.resolve(result["merged"]))
    key = "classifier.out_proj.weight"
    f = {loc: SOURCES[loc] * (fishers[loc][key] + 1e-12) for loc in SOURCES}
    expected = sum(f[loc] * src[loc][key] for loc in SOURCES) / sum(f.values())
    torch.testing.assert_close(merged[key], expected, rtol=1e-5, atol=1e-6)
    linear = sum(SOURCES[loc] * src[loc][key] for loc in SOURCES)
    assert not torch.allclose(merged[key], linear), "Fisher weighting should differ from the plain mean"
    assert result["params"]["statistics"] == {"num_examples": 16, "batch_size": 1}


# --- adaptive schedule ------------------------------------------------------------------------------
# 3 epochs, at most 2 between merges (so >= 2 cycles), every epoch its own fit.
ADAPTIVE = dict(
    data="toy",
    max_epochs=3,
    merge_schedule="adaptive",
    max_interval=2,
    patience=1,
    convergence_threshold=0.02,
    performance_drop=0.0,
    batch_size=32,
    lr=5e-4,
    max_seq_length=32,
    seed=7,
)


@pytest.fixture(scope="module")
def adaptive_run(toy_base):
    """An uninterrupted adaptive run, tracked with TensorBoard."""
    return iterative.run(
        TARGET,
        SOURCES,
        base_model=toy_base,
        out_dir="models/toy/iterative-test/adaptive",
        report_to="tensorboard",
        **ADAPTIVE,
    )


def test_adaptive_log_states_why_each_merge_happened(adaptive_run):
    log = adaptive_run["log"]
    assert len(log) >= 2 and log[-1]["epochs"][1] == 3 and log[-1]["merge_reason"] == "end"
    assert [e["epochs"][0] for e in log[1:]] == [e["epochs"][1] for e in log[:-1]]  # contiguous cycles
    params = {k: v for k, v in adaptive_run["params"]["adaptive"].items()}
    for e in log:
        n = e["epochs"][1] - e["epochs"][0]
        assert len(e["decisions"]) == n and [d["merge"] for d in e["decisions"]] == [False] * (n - 1) + [True]
        assert e["merge_reason"] == e["decisions"][-1]["reason"] in schedule.REASONS
        for s in e["sources"].values():
            assert len(s["dev_accuracy_per_epoch"]) == len(s["seeds"]) == n  # one fit per epoch
        # every recorded decision is what mu.schedule.decide says about the logged dev accuracies
        for j, d in enumerate(e["decisions"], 1):
            dev = [{loc: s["dev_accuracy_per_epoch"][i] for loc, s in e["sources"].items()} for i in range(j)]
            assert schedule.decide(dev, epochs_done=e["epochs"][0] + j, max_epochs=3, **params) == (
                d["merge"],
                d["reason"],
                d["detail"],
            )
        # the epochs' learning rates are the pieces of one linear decay over max_interval epochs
        pieces = [d["lr"] for d in e["decisions"]]
        assert pieces[0][0] == pytest.approx(ADAPTIVE["lr"])
        assert all(a[1] == pytest.approx(b[0]) for a, b in zip(pieces, pieces[1:]))
        assert pieces[-1][1] == pytest.approx(ADAPTIVE["lr"] * (1 - n / ADAPTIVE["max_interval"]))
    merges = iterative_results.merges_frame(log)
    assert list(merges["reason"]) == [e["merge_reason"] for e in log] and merges["detail"].str.len().min() > 0
    table = iterative_results.compare({"adaptive": adaptive_run})
    assert table.loc["adaptive", "source_epochs"] == 3 * len(SOURCES)
    assert table.loc["adaptive", "merges"] == len(log) and table.loc["adaptive", "fits"] == 3 * len(SOURCES)


def test_tensorboard_event_files_hold_loss_and_dev_accuracy(adaptive_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = paths.resolve("models/toy/iterative-test/adaptive")
    steps_per_epoch = adaptive_run["log"][0]["sources"]["fr-FR"]["global_step"] // (
        adaptive_run["log"][0]["epochs"][1] - adaptive_run["log"][0]["epochs"][0]
    )
    seen = {}
    for e in adaptive_run["log"]:
        run_dir = out / "runs" / "fr-FR" / f"cycle_{e['cycle']}"
        assert list(run_dir.glob("events.out.tfevents.*")), f"no event file in {run_dir}"
        acc = EventAccumulator(str(run_dir)).Reload()
        assert {"train/loss", "eval/accuracy"} <= set(acc.Tags()["scalars"])
        evals = acc.Scalars("eval/accuracy")
        assert [ev.value for ev in evals] == pytest.approx(e["sources"]["fr-FR"]["dev_accuracy_per_epoch"])
        seen.update({ev.step: ev.value for ev in evals})
    # one continuous step axis over the cycles: dev accuracy at the end of epochs 1, 2, 3
    assert sorted(seen) == [steps_per_epoch * i for i in (1, 2, 3)]


def test_adaptive_run_killed_mid_cycle_resumes_to_identical_weights(adaptive_run, toy_base):
    out_dir = "models/toy/iterative-test/adaptive-killed"
    first = len(SOURCES) * (adaptive_run["log"][0]["epochs"][1])  # fits of cycle 1
    with pytest.raises(KeyboardInterrupt):  # the 2nd source's first fit in cycle 2
        iterative.run(TARGET, SOURCES, base_model=toy_base, out_dir=out_dir, callbacks=[Kill(first + 2)], **ADAPTIVE)
    assert iterative_cycle.completed_cycles(out_dir) == [1]
    resumed = iterative.run(TARGET, SOURCES, base_model=toy_base, out_dir=out_dir, **ADAPTIVE)
    # (the uninterrupted run was tracked with TensorBoard, this one not: tracking does not change training)
    full, again = weights_of(paths.resolve(adaptive_run["merged"])), weights_of(paths.resolve(resumed["merged"]))
    assert full.keys() == again.keys() and all(torch.equal(full[k], again[k]) for k in full)
    drop = ("elapsed_s",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in resumed["log"]] == [
        {k: v for k, v in e.items() if k not in drop} for e in adaptive_run["log"]
    ]


def test_schedule_arguments_are_checked_before_anything_is_written(toy_base):
    kw = dict(base_model=toy_base, out_dir="models/toy/iterative-test/bad-schedule")
    with pytest.raises(ValueError, match="unknown merge_schedule 'smart'"):
        iterative.run(TARGET, SOURCES, **{**RUN, "merge_schedule": "smart"}, **kw)
    with pytest.raises(ValueError, match=r"\['patience'\] apply to merge_schedule='adaptive'"):
        iterative.run(TARGET, SOURCES, **RUN, patience=2, **kw)
    with pytest.raises(ValueError, match="merge_frequency applies to merge_schedule='fixed'"):
        iterative.run(TARGET, SOURCES, **{**ADAPTIVE, "merge_frequency": 2}, **kw)
    with pytest.raises(ValueError, match=r"unknown report_to backend\(s\) \['tensorbored'\]"):
        iterative.run(TARGET, SOURCES, **RUN, report_to="tensorbored", **kw)
    assert not paths.resolve("models/toy/iterative-test/bad-schedule").exists()


def test_report_rows_name_each_run_in_the_iterative_family():
    fixed = {"test": {"accuracy": 0.5, "macro_f1": 0.4, "n": 96}}
    adaptive = {"test": {"accuracy": 0.6, "macro_f1": 0.5, "n": 96}}
    rows = iterative_results.report_rows(
        {"iterative": fixed, "iterative-adaptive": adaptive}, "linear", "similarity", {"de-DE": 0.6, "nl-NL": 0.4}
    )
    assert [(r["system"], r["family"], r["accuracy"]) for r in rows] == [
        ("iterative/linear/similarity", "iterative", 0.5),
        ("iterative-adaptive/linear/similarity", "iterative", 0.6),
    ]
    assert all(r["sources"] == {"de-DE": 0.6, "nl-NL": 0.4} and r["n"] == 96 for r in rows)


def test_a_run_not_made_is_left_out_of_rows_comparison_and_inputs(tmp_path):
    fixed = {
        "test": {"accuracy": 0.5, "macro_f1": 0.4, "n": 96},
        "merged": str(tmp_path / "m"),
        "log": [{"epochs": [0, 2], "elapsed_s": 1.0, "sources": {}}],
    }
    (tmp_path / "m").write_text("x")
    rows = iterative_results.report_rows(
        {"iterative": fixed, "iterative-adaptive": None}, "linear", "similarity", {"de-DE": 1.0}
    )
    assert [r["system"] for r in rows] == ["iterative/linear/similarity"]
    assert list(iterative_results.compare({"fixed": fixed, "adaptive": None}).index) == ["fixed"]
    got = iterative_results.inputs(tmp_path / "m", {"merged_model": fixed, "adaptive_merged_model": None})
    assert set(got) == {"base_model", "merged_model"}


# --- like for like, cost, the declared subset (mu.iterative_results) ---


def _trained(models_dir, recipes):
    """Fake notebook-02 sources: only their training_args.json (what like_for_like and costs read)."""
    for loc, (epochs, lr, runtime) in recipes.items():
        folder = paths.resolve(models.source_path(loc, models_dir))
        folder.mkdir(parents=True, exist_ok=True)
        paths.write_json(
            folder / "training_args.json",
            {
                "params": {"locale": loc, "epochs": epochs, "lr": lr, "batch_size": 32},
                "log_history": [{"loss": 1.0}, {"train_runtime": runtime, "epoch": epochs}],
            },
        )


def test_like_for_like_takes_the_one_shot_sources_epochs_and_lr(mu_root):
    from mu import notes, protocol

    _trained("models/lfl", {"de-DE": (5, 1e-3, 20.0), "nl-NL": (5, 1e-3, 22.5)})
    assert iterative_results.like_for_like("lfl", "models/lfl", ["de-DE", "nl-NL"], max_epochs=None, lr=None) == (
        5,
        1e-3,
    )
    assert protocol.load("lfl")["05.max_epochs"]["value"] == 5
    notes.clear()
    assert iterative_results.like_for_like("lfl", "models/lfl", ["de-DE"], max_epochs=2, lr=None) == (2, 1e-3)
    assert any("not like for like" in n for n in notes.noted())
    _trained("models/lfl", {"sv-SE": (3, 1e-3, 9.0)})
    with pytest.raises(ValueError, match="different recipes"):
        iterative_results.source_recipe("models/lfl", ["de-DE", "sv-SE"])
    with pytest.raises(FileNotFoundError, match="run 02 first, or give max_epochs and lr"):
        iterative_results.like_for_like("lfl", "models/lfl", ["fr-FR"], max_epochs=None, lr=None)
    run = {"test": {"accuracy": 0.5}, "log": [{"elapsed_s": 10.0}, {"elapsed_s": 5.5}]}
    cost = iterative_results.costs(
        {"iterative": run, "iterative-adaptive": None},
        "linear",
        "similarity",
        "models/lfl",
        ["de-DE", "nl-NL"],
        {"seconds": 0.5, "model": None},
    ).set_index("system")
    assert cost.at["iterative/linear/similarity", "seconds"] == 15.5
    assert cost.at["merge/linear/similarity", "seconds"] == pytest.approx(43.0)  # 20 + 22.5 of 02, + the merge
    assert cost.at["ensemble/*/similarity", "seconds"] == pytest.approx(42.5)
    assert "iterative-adaptive/linear/similarity" not in cost.index


def test_the_declared_subset_is_every_third_locale_without_the_tuning_targets():
    from mu import locales

    assert iterative_results.subset() == list(locales.LOCALES)[::3] and len(iterative_results.subset()) == 17
    from mu import study

    got = iterative_results.subset(exclude=study.TUNING_TARGETS)
    assert got == list(study.SUBSET) and len(got) == 15 and not set(got) & set(study.TUNING_TARGETS)
    with pytest.raises(ValueError):
        iterative_results.subset(["xx-XX"])


def test_studies_train_the_iterative_sources_as_long_as_the_one_shot_ones():
    """Equal source-epochs: 05's max_epochs / lr are None (the one-shot sources' own) or 02's values."""
    from mu import params

    for profile in ("mini", "massive"):
        p02, p05 = params.load_params("02_training", profile), params.load_params("05_iterative", profile)
        assert p05["max_epochs"] in (None, p02["epochs"]) and p05["lr"] in (None, p02["lr"]), profile
        assert p05["batch_size"] == p02["batch_size"], profile
        # mini: the fixed schedule only, a budget declared in the pre-registration before any result
        assert p05["adaptive_schedule"] is (profile == "massive"), profile
