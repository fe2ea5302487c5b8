"""mu.joint: one model fine-tuned on the union of the sources' labeled data (joint/<weighting>) or on every
non-target source at the same example budget (joint/all), on the toy profile with one short epoch."""

from __future__ import annotations

import math

import pytest
from safetensors.torch import load_file

from mu import families, iterative_results, joint, models, notes, paths, report
from mu.corpus import data as mu_data
from mu.learn import train

TARGET = "it-IT"
CANDIDATES = ["de-DE", "nl-NL", "fr-FR", "es-ES", "it-IT"]
RECIPE = {"epochs": 1, "lr": 5e-4, "batch_size": 32}
RUN = dict(data="toy", recipe=RECIPE, max_seq_length=32, seed=7, num_languages=2)
N_TRAIN = 288  # toy train examples per locale


class Spy:
    """Wraps ``mu.learn.train.fit``: records each call's texts and counts the examples the model's forward
    passes really see while training (a forward pre-hook), so the budget is measured, not assumed."""

    def __init__(self):
        self.calls, self.real = [], train.fit

    def __call__(self, model, tokenizer, train_ds, **kw):
        seen = [0]

        def hook(module, args, kwargs):
            if module.training:
                seen[0] += (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).shape[0]

        handle = model.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            out = self.real(model, tokenizer, train_ds, **kw)
        finally:
            handle.remove()
        self.calls.append({"texts": list(train_ds["text"]), "seen": seen[0], "epochs": kw["epochs"]})
        return out


def run_spied(models_dir, which, toy_base, **kw):
    spy = Spy()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "fit", spy)
        results = joint.run(TARGET, CANDIDATES, which, base_model=toy_base, models_dir=models_dir, **{**RUN, **kw})
    return results, spy


@pytest.fixture(scope="module")
def first(toy_base):
    return run_spied("models/toy/joint-test", ["similarity", "average", "all"], toy_base)


def _ids(result):
    return paths.read_json(paths.resolve(result["model"]) / joint.IDS)


def test_joint_weighting_trains_on_exactly_the_union_of_its_sources_never_the_target(first):
    results, spy = first
    sim = results["joint/similarity"]
    chosen = sorted(sim["sources"])
    assert len(chosen) == 2 and TARGET not in chosen
    # the ids trained on are every train id of the chosen sources, nothing else
    assert _ids(sim) == {loc: list(mu_data.load_split(loc, "train", "toy")["id"]) for loc in chosen}
    # and fit received exactly those examples
    union = [t for loc in chosen for t in mu_data.load_split(loc, "train", "toy")["text"]]
    assert spy.calls[0]["texts"] == union
    with pytest.raises(ValueError, match="never trains on it"):
        joint.train_joint(
            TARGET, "x", {TARGET: 1.0}, base_model="b", models_dir="m", data="toy", max_seq_length=32, seed=7, **RECIPE
        )


def test_equal_budget_joint_weighting_sees_each_pool_for_the_sources_epochs(first):
    results, spy = first
    sim = results["joint/similarity"]
    expected = 2 * N_TRAIN * RECIPE["epochs"]  # K sources x n_train x epochs: what the K source models saw
    assert joint.budget(sim["sources"], "toy", RECIPE["epochs"]) == expected
    assert sim["examples_seen"] == spy.calls[0]["seen"] == expected
    assert sim["examples_per_source"] == {loc: N_TRAIN * RECIPE["epochs"] for loc in sim["sources"]}
    assert sim["optimizer_steps"] == math.ceil(2 * N_TRAIN / RECIPE["batch_size"]) * RECIPE["epochs"]
    assert sim["params"]["sampling"] == "union" and sim["params"]["epochs"] == RECIPE["epochs"]


def test_a_weighting_with_the_same_sources_reuses_the_model(first):
    results, spy = first
    avg, sim = results["joint/average"], results["joint/similarity"]
    assert set(avg["sources"]) == set(sim["sources"]) and avg["same_as"] == "joint/similarity"
    assert avg["model"] == sim["model"] and avg["test"] == sim["test"]
    assert len(spy.calls) == 2  # similarity and all; average trained nothing


def test_joint_all_sees_every_non_target_source_evenly_at_joint_similaritys_budget(first):
    results, spy = first
    everything = results["joint/all"]
    budget = results["joint/similarity"]["examples_seen"]
    assert sorted(everything["sources"]) == sorted(c for c in CANDIDATES if c != TARGET)
    assert everything["examples_seen"] == spy.calls[1]["seen"] == budget
    assert spy.calls[1]["epochs"] == 1 and everything["params"]["sampling"] == "even"
    ids = _ids(everything)
    assert set(ids) == set(everything["sources"]) and TARGET not in ids
    assert {len(v) for v in ids.values()} == {budget // 4}
    for loc, got in ids.items():  # drawn without repeats from the source's own train ids
        assert len(set(got)) == len(got) and set(got) <= set(mu_data.load_split(loc, "train", "toy")["id"])
    assert everything["optimizer_steps"] == math.ceil(budget / RECIPE["batch_size"])


def test_draws_are_even_seeded_and_use_every_example_before_repeating_one():
    got = joint.draw(["de-DE", "nl-NL", "fr-FR"], "toy", 100, seed=3)
    assert sorted(len(v) for v in got.values()) == [33, 33, 34]
    assert got == joint.draw(["fr-FR", "nl-NL", "de-DE"], "toy", 100, seed=3)
    assert got != joint.draw(["de-DE", "nl-NL", "fr-FR"], "toy", 100, seed=4)
    over = joint.draw(["de-DE"], "toy", N_TRAIN + 12, seed=3)["de-DE"]
    assert sorted(over[:N_TRAIN]) == list(range(N_TRAIN)) and len(set(over[N_TRAIN:])) == 12


def test_training_is_deterministic_under_the_seed(toy_base):
    kw = dict(base_model=toy_base, data="toy", **RECIPE, max_seq_length=32, seed=11, examples=96)
    sources = {"de-DE": 0.5, "fr-FR": 0.5}
    a = joint.train_joint(TARGET, "all", sources, models_dir="models/toy/joint-det-a", **kw)
    b = joint.train_joint(TARGET, "all", sources, models_dir="models/toy/joint-det-b", **kw)
    wa, wb = (load_file(str(paths.resolve(r["model"]) / models.WEIGHTS_FILE)) for r in (a, b))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert _ids(a) == _ids(b) and a["test"] == b["test"]
    c = joint.train_joint(TARGET, "all", sources, models_dir="models/toy/joint-det-c", **{**kw, "seed": 12})
    assert _ids(c) != _ids(a)


def test_a_finished_joint_model_is_not_retrained(first, toy_base):
    results, _ = first
    weights = {s: paths.resolve(r["model"]) / models.WEIGHTS_FILE for s, r in results.items()}
    before = {s: w.stat().st_mtime_ns for s, w in weights.items()}
    again, spy = run_spied("models/toy/joint-test", ["similarity", "average", "all"], toy_base)
    assert spy.calls == [] and not any(r["trained"] for r in again.values())
    assert {s: w.stat().st_mtime_ns for s, w in weights.items()} == before
    assert {s: r["test"] for s, r in again.items()} == {s: r["test"] for s, r in results.items()}
    # other parameters are another model: retrained in place
    _, spy = run_spied("models/toy/joint-test", ["similarity"], toy_base, seed=8)
    assert len(spy.calls) == 1


def test_rows_are_the_joint_family_seeing_nothing_and_needing_source_labels(first, mu_root):
    results, _ = first
    rows = joint.report_rows(results)
    assert [r["system"] for r in rows] == ["joint/similarity", "joint/average", "joint/all"]
    for r in rows:
        assert r["family"] == "joint" and r["examples"] > 0 and r["seconds"] >= 0
        assert families.family(r["system"]) == "joint"
        assert families.sees(r["system"]) == "nothing"
        assert families.needs(r["system"]) == "source data (labels)"
    assert "joint" in report.FAMILIES
    saved = paths.read_json(report.save("05_iterative", TARGET, "joint-test", rows=rows))
    assert {r["family"] for r in saved["rows"]} == {"joint"}
    for r in saved["rows"]:  # each row's per-item results, their ids stored once in the record
        ids, correct = report.row_items(r, saved["item_ids"])
        assert len(ids) == r["n"] and correct.count("1") / r["n"] == pytest.approx(r["accuracy"])
    assert families.needs("iterative-adaptive/linear/similarity") == "source data (labels)"
    assert families.needs("merge/linear/similarity") == families.needs("adapted/adamerging/similarity")
    assert families.needs("merge/linear/similarity") == "source models" and families.needs("native") == "target labels"
    table = families.table(["native", "merge/linear/similarity", "joint/similarity"])
    assert list(table["needs"]) == ["target labels", "source models", "source data (labels)"]
    assert set(joint.inputs(results)) == set(results)
    frame = joint.frame(results)
    assert frame.at["joint/average", "same_as"] == "joint/similarity"


def _trained(models_dir, locs, epochs=3, lr=1e-3, n_train=N_TRAIN):
    for loc in locs:
        folder = paths.resolve(models.source_path(loc, models_dir))
        folder.mkdir(parents=True, exist_ok=True)
        paths.write_json(
            folder / "training_args.json",
            {
                "params": {"locale": loc, "epochs": epochs, "lr": lr, "batch_size": 16, "n_train": n_train},
                "log_history": [{"train_runtime": 10.0, "epoch": epochs}],
            },
        )


def test_recipe_is_the_one_shot_sources_own_and_costs_show_examples_seen(first, mu_root):
    _trained("models/joint-recipe", ["de-DE", "nl-NL"])
    assert joint.recipe("models/joint-recipe", ["de-DE", "nl-NL"], epochs=9, lr=1.0, batch_size=1) == {
        "epochs": 3,
        "lr": 1e-3,
        "batch_size": 16,
    }
    with pytest.raises(FileNotFoundError, match="run 02 first"):
        joint.recipe("models/joint-recipe", ["fr-FR"])
    notes.clear()
    assert joint.recipe("models/joint-recipe", ["fr-FR"], epochs=2, lr=0.1, batch_size=8)["epochs"] == 2
    assert any("not the one-shot sources'" in n for n in notes.noted())
    with pytest.raises(ValueError, match="whole source epochs"):
        joint.recipe("models/joint-recipe", ["fr-FR"], epochs=1.5, lr=0.1, batch_size=8)
    results, _ = first
    cost = iterative_results.costs(
        {"iterative": None}, "linear", "similarity", "models/joint-recipe", ["de-DE", "nl-NL"], joint=results
    ).set_index("system")
    assert cost.at["joint/similarity", "examples"] == results["joint/similarity"]["examples_seen"]
    assert cost.at["joint/all", "seconds"] == results["joint/all"]["train_s"]
    assert cost.at["merge/linear/similarity", "examples"] == 2 * N_TRAIN * 3  # 02's sources: n_train x epochs each


def test_the_notebook_parameters_are_declared():
    from mu.batch import checks

    assert checks.problem("joint", ["similarity", "all"]) is None and checks.problem("joint", []) is None
    assert checks.problem("joint", ["bogus"]) is not None and checks.problem("joint", ["all", "all"]) is not None
    assert checks.problem("joint_all_examples", None) is None and checks.problem("joint_all_examples", 0) is not None
    with pytest.raises(ValueError, match="distinct names"):
        joint.check_weightings(["similarity", "similarity"])
