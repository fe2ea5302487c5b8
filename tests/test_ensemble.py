"""mu.ensemble: hand-made logits where each method's answer is known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import XLMRobertaForSequenceClassification

from mu import data, distill, ensemble, ensemble_eval, evaluate, models, paths, plots, protocol, report, similarity

EQUAL3 = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}


def test_registry_lists_the_four_methods():
    assert list(ensemble.METHODS) == ["majority", "weighted_majority", "soft", "uriel_logits"]


def test_majority_and_soft_disagree():
    # a and b lean weakly to class 0, c is sure of class 1: 2 votes to 1 for class 0,
    # but the mean probability of class 1 is about 0.65.
    logits = {
        "a": np.array([[1.0, 0.9, -5.0]]),
        "b": np.array([[1.0, 0.9, -5.0]]),
        "c": np.array([[-10.0, 10.0, -10.0]]),
    }
    assert ensemble.combine("majority", logits, EQUAL3).tolist() == [0]
    assert ensemble.combine("weighted_majority", logits, EQUAL3).tolist() == [0]
    assert ensemble.combine("soft", logits, EQUAL3).tolist() == [1]
    assert ensemble.combine("uriel_logits", logits, EQUAL3).tolist() == [1]


def test_weighted_majority_differs_from_majority():
    # two light sources vote 0, one heavy source votes 1
    logits = {"a": np.array([[2.0, 0.0]]), "b": np.array([[2.0, 0.0]]), "c": np.array([[0.0, 2.0]])}
    weights = {"a": 0.1, "b": 0.1, "c": 0.8}
    assert ensemble.combine("majority", logits, weights).tolist() == [0]
    assert ensemble.combine("weighted_majority", logits, weights).tolist() == [1]


def test_uriel_logits_differs_from_soft():
    # a has a huge logit margin for class 1 (prob ~1); b and c are ~0.99 sure of class 0.
    # probabilities: class 0 ~0.66; raw logit sums: [10, 20] -> class 1.
    logits = {"a": np.array([[0.0, 20.0]]), "b": np.array([[5.0, 0.0]]), "c": np.array([[5.0, 0.0]])}
    assert ensemble.combine("soft", logits, EQUAL3).tolist() == [0]
    assert ensemble.combine("uriel_logits", logits, EQUAL3).tolist() == [1]


def test_weights_scale_uriel_logits():
    logits = {"a": np.array([[3.0, 0.0]]), "b": np.array([[0.0, 2.0]])}
    assert ensemble.combine("uriel_logits", logits, {"a": 0.5, "b": 0.5}).tolist() == [0]
    assert ensemble.combine("uriel_logits", logits, {"a": 0.3, "b": 0.7}).tolist() == [1]


def test_vote_tie_goes_to_higher_probability_mass_not_lowest_id():
    # 2 votes for class 1 (weak), 2 votes for class 2 (confident) -> class 2
    weak1 = np.array([[0.0, 1.0, 0.0]])
    sure2 = np.array([[0.0, 0.0, 5.0]])
    logits = {"a": weak1, "b": weak1, "c": sure2, "d": sure2}
    weights = {k: 0.25 for k in logits}
    assert ensemble.combine("majority", logits, weights).tolist() == [2]
    assert ensemble.combine("weighted_majority", logits, weights).tolist() == [2]


def test_vote_tie_with_equal_mass_goes_to_lowest_id():
    # a votes 1, b votes 2, mirror-image probabilities -> equal mass -> lowest id (1)
    logits = {"a": np.array([[0.0, 2.0, 1.0]]), "b": np.array([[0.0, 1.0, 2.0]])}
    for method in ("majority", "weighted_majority"):
        assert ensemble.combine(method, logits, {"a": 0.5, "b": 0.5}).tolist() == [1]


def test_weighted_vote_tie_survives_float_rounding():
    # 0.1 + 0.2 != 0.3 in floating point; the votes must still count as tied and the
    # probability mass (c is sure of class 0, a and b barely prefer class 2) decides.
    logits = {"a": np.array([[0.9, 0.9, 1.0]]), "b": np.array([[0.9, 0.9, 1.0]]), "c": np.array([[10.0, 0.0, 0.0]])}
    weights = {"a": 0.1, "b": 0.2, "c": 0.3}
    assert 0.1 + 0.2 != 0.3
    assert ensemble.weighted_majority(logits, weights).tolist() == [0]
    assert ensemble.combine("weighted_majority", logits, weights).tolist() == [0]


def test_argmax_ties_go_to_lowest_id():
    logits = {"a": np.array([[1.0, 1.0, 0.0]]), "b": np.array([[1.0, 1.0, 0.0]])}
    w = {"a": 0.5, "b": 0.5}
    for method in ensemble.METHODS:
        assert ensemble.combine(method, logits, w).tolist() == [0], method


def test_single_source_every_method_is_its_argmax():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 7))
    for method in ensemble.METHODS:
        np.testing.assert_array_equal(ensemble.combine(method, {"a": a}, {"a": 1.0}), a.argmax(1))


def test_batch_rows_are_independent_and_match_reference():
    rng = np.random.default_rng(1)
    logits = {k: rng.normal(size=(40, 5)) for k in "abc"}
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    expected = sum(weights[k] * logits[k] for k in logits).argmax(1)
    got = ensemble.combine("uriel_logits", logits, weights)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64 and got.shape == (40,)
    # row by row gives the same answers for every method
    for method in ensemble.METHODS:
        whole = ensemble.combine(method, logits, weights)
        rows = [ensemble.combine(method, {k: v[i : i + 1] for k, v in logits.items()}, weights)[0] for i in range(40)]
        assert whole.tolist() == rows, method


def test_weights_are_normalised():
    rng = np.random.default_rng(2)
    logits = {k: rng.normal(size=(30, 4)) for k in "ab"}
    for method in ensemble.METHODS:
        np.testing.assert_array_equal(
            ensemble.combine(method, logits, {"a": 2.0, "b": 6.0}),
            ensemble.combine(method, logits, {"a": 0.25, "b": 0.75}),
        )


def test_unknown_method_lists_valid():
    with pytest.raises(ValueError, match="unknown ensemble method 'median'.*uriel_logits"):
        ensemble.combine("median", {"a": np.zeros((1, 2))}, {"a": 1.0})


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"a": -0.5, "b": 1.5}, "non-negative"),
        ({"a": float("nan"), "b": 1.0}, "finite"),
        ({"a": 0.0, "b": 0.0}, "positive sum"),
        ({"a": 1.0}, "different sources"),
        ({"a": 0.5, "b": 0.25, "z": 0.25}, "different sources"),
    ],
)
def test_bad_weights(weights, match):
    logits = {"a": np.zeros((2, 3)), "b": np.zeros((2, 3))}
    with pytest.raises(ValueError, match=match):
        ensemble.combine("soft", logits, weights)


@pytest.mark.parametrize("shape_b", [(3, 3), (2, 4)])
def test_mismatched_shapes_name_both_sources_and_shapes(shape_b):
    logits = {"fr-FR": np.zeros((2, 3)), "de-DE": np.zeros(shape_b)}
    with pytest.raises(ValueError) as err:
        ensemble.combine("soft", logits, {"fr-FR": 0.5, "de-DE": 0.5})
    msg = str(err.value)
    assert "fr-FR" in msg and "de-DE" in msg
    assert str((2, 3)) in msg and str(shape_b) in msg


def test_bad_logits():
    with pytest.raises(ValueError, match="at least one source"):
        ensemble.combine("soft", {}, {})
    with pytest.raises(ValueError, match="expected"):
        ensemble.combine("soft", {"a": np.zeros(3)}, {"a": 1.0})
    with pytest.raises(ValueError, match="NaN"):
        ensemble.combine("soft", {"a": np.array([[np.nan, 0.0]])}, {"a": 1.0})


# --- cached and live paths on tiny XLM-R models (built from a config, perturbed, not trained) ---

TARGET = "sw-KE"
SOURCES = ["de-DE", "fr-FR", "en-US", "es-ES"]
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04_ensembling.ipynb"


def _perturbed(base_dir, out_dir, seed: int, scale: float = 0.05):
    """A 'fine-tuned' source: the base with seeded Gaussian noise on every parameter."""
    model, tokenizer = models.load_classifier(base_dir)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return models.save_classifier(model, tokenizer, out_dir)


@pytest.fixture(scope="module")
def toy_models(toy_base):
    """(models_dir, base): a perturbed copy of the toy base for every SOURCE and for the target, in a
    folder of their own (so other tests' models never change the candidates)."""
    models_dir = paths.models_dir("ens-test")
    for i, loc in enumerate(SOURCES + [TARGET]):
        _perturbed(toy_base, models.source_path(loc, models_dir), seed=i + 1)
    return models_dir, toy_base


@pytest.fixture(scope="module")
def cached(toy_models):
    """Logits of every source on the target's test split, computed once (the cache is warm after this)."""
    models_dir, _ = toy_models
    return ensemble.source_logits(TARGET, models_dir=models_dir, data="toy", compute=True)


def _no_forward(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model forward ran on the cache-only path")

    monkeypatch.setattr(XLMRobertaForSequenceClassification, "forward", boom)


def test_candidates_exclude_the_target(toy_models):
    models_dir, _ = toy_models
    assert ensemble.candidates(TARGET, models_dir) == sorted(SOURCES)
    with pytest.raises(ValueError, match="xx-XX"):
        ensemble.candidates("xx-XX", models_dir)


def test_source_logits_are_the_evaluate_logits(toy_models, cached):
    models_dir, _ = toy_models
    logits, labels = cached
    assert sorted(logits) == sorted(SOURCES)
    gold = data.load_split(TARGET, "test", "toy")["label"]
    assert labels.tolist() == list(gold)
    for loc, lg in logits.items():
        assert lg.shape == (len(gold), len(data.INTENTS))
        ref, _ = evaluate.cached_logits(models.source_path(loc, models_dir), TARGET, "test", data="toy")
        np.testing.assert_array_equal(lg, ref)


def test_cache_only_run_performs_zero_model_forwards(toy_models, cached, monkeypatch):
    models_dir, _ = toy_models
    logits, labels = cached
    before = evaluate.forward_calls()
    _no_forward(monkeypatch)
    weights = similarity.select(TARGET, SOURCES, mode="similarity", num_languages=3)
    for method in ensemble.METHODS:
        got = ensemble_eval.evaluate_ensemble(method, TARGET, weights, models_dir=models_dir, data="toy")
        pred = ensemble.combine(method, {k: logits[k] for k in weights}, weights)
        assert got["accuracy"] == pytest.approx(float(np.mean(pred == labels)))
        assert got["n"] == len(labels)
        assert 0.0 <= got["macro_f1"] <= 1.0
    frame = ensemble_eval.table(
        TARGET,
        methods=list(ensemble.METHODS),
        modes=["similarity", "average"],
        models_dir=models_dir,
        data="toy",
        num_languages=3,
    )
    assert len(frame) == 2 * len(ensemble.METHODS)
    assert evaluate.forward_calls() == before


def test_single_source_ensemble_equals_that_models_evaluation(toy_models, cached):
    models_dir, _ = toy_models
    expected = evaluate.evaluate(models.source_path("fr-FR", models_dir), TARGET, data="toy")
    for method in ensemble.METHODS:
        got = ensemble_eval.evaluate_ensemble(method, TARGET, {"fr-FR": 1.0}, models_dir=models_dir, data="toy")
        assert got == expected


def test_missing_cache_is_an_error_not_a_forward(toy_models, monkeypatch):
    models_dir, _ = toy_models
    _no_forward(monkeypatch)
    with pytest.raises(FileNotFoundError, match="no cached logits"):
        ensemble_eval.evaluate_ensemble(
            "soft", "it-IT", {"fr-FR": 0.5, "de-DE": 0.5}, models_dir=models_dir, data="toy"
        )


def test_cached_logits_of_a_different_split_size_name_both(toy_models, cached, monkeypatch):
    models_dir, _ = toy_models
    real = evaluate.cached_logits

    def short_for_de(model, locale, split="test", **kw):
        lg, lb = real(model, locale, split, **kw)
        return (lg[:-3], lb[:-3]) if "de-DE" in str(model) else (lg, lb)

    monkeypatch.setattr(evaluate, "cached_logits", short_for_de)
    n = len(cached[1])
    with pytest.raises(ValueError) as err:
        ensemble_eval.evaluate_ensemble("soft", TARGET, {"fr-FR": 0.5, "de-DE": 0.5}, models_dir=models_dir, data="toy")
    msg = str(err.value)
    assert "fr-FR" in msg and "de-DE" in msg and f"{n - 3} vs {n}" in msg


def test_cached_logits_of_a_different_label_space_name_both(toy_models, cached, monkeypatch):
    models_dir, _ = toy_models
    real = evaluate.cached_logits

    def narrow_for_de(model, locale, split="test", **kw):
        lg, lb = real(model, locale, split, **kw)
        return (lg[:, :59], lb) if "de-DE" in str(model) else (lg, lb)

    monkeypatch.setattr(evaluate, "cached_logits", narrow_for_de)
    with pytest.raises(ValueError) as err:
        ensemble_eval.evaluate_ensemble("soft", TARGET, {"fr-FR": 0.5, "de-DE": 0.5}, models_dir=models_dir, data="toy")
    msg = str(err.value)
    assert "fr-FR" in msg and "de-DE" in msg and "59" in msg and "60" in msg


def test_models_with_different_id2label_are_refused(toy_models, tmp_path):
    models_dir, base = toy_models
    other = tmp_path / "models"
    for loc in ("fr-FR", "de-DE"):
        src = models.source_path(loc, models_dir)
        dst = models.source_path(loc, other)
        dst.mkdir(parents=True)
        for f in src.iterdir():
            (dst / f.name).write_bytes(f.read_bytes())
    config = paths.read_json(models.source_path("de-DE", other) / "config.json")
    config["id2label"]["0"], config["id2label"]["1"] = config["id2label"]["1"], config["id2label"]["0"]
    paths.write_json(models.source_path("de-DE", other) / "config.json", config)
    with pytest.raises(ValueError, match=r"model de-DE is incompatible: id2label"):
        ensemble.source_logits(TARGET, ["fr-FR", "de-DE"], models_dir=other, data="toy")


def test_table_rows_use_the_merging_weights(toy_models, cached):
    models_dir, _ = toy_models
    logits, labels = cached
    nxn = pd.DataFrame(np.linspace(0.1, 0.9, 25).reshape(5, 5), index=SOURCES + [TARGET], columns=SOURCES + [TARGET])
    modes = ["similarity", "average", "transfer"]
    frame = ensemble_eval.table(
        TARGET, methods=list(ensemble.METHODS), modes=modes, models_dir=models_dir, data="toy", num_languages=2, nxn=nxn
    )
    assert list(frame["system"]) == [f"ensemble/{m}/{mode}" for mode in modes for m in ensemble.METHODS]
    assert set(frame["family"]) == {"ensemble"}
    for _, row in frame.iterrows():
        expected_w = similarity.select(TARGET, SOURCES, mode=row["mode"], num_languages=2, nxn=nxn)
        assert row["sources"] == expected_w
        pred = ensemble.combine(row["method"], {k: logits[k] for k in expected_w}, expected_w)
        assert row["accuracy"] == pytest.approx(float(np.mean(pred == labels)))
        assert row["n"] == len(labels)
        # each row's items: the target's test ids in the logits' order, right where the ensemble is right
        assert row["items"]["ids"] == list(data.load_split(TARGET, "test", "toy")["id"])
        assert row["items"]["correct"] == "".join("1" if c else "0" for c in pred == labels)
    with pytest.raises(ValueError, match="N×N"):
        ensemble_eval.table(TARGET, methods=["soft"], modes=["transfer"], models_dir=models_dir, data="toy")
    with pytest.raises(ValueError, match="unknown ensemble method"):
        ensemble_eval.table(TARGET, methods=["vote"], modes=["average"], models_dir=models_dir, data="toy")


def test_transfer_mode_reads_the_nxn_file_and_inputs_are_recorded(toy_models, cached, tmp_path):
    models_dir, _ = toy_models
    nxn = pd.DataFrame(np.linspace(0.9, 0.1, 25).reshape(5, 5), index=SOURCES + [TARGET], columns=SOURCES + [TARGET])
    path = tmp_path / "evaluation_matrix.csv"
    nxn.to_csv(path)
    frame = ensemble_eval.table(
        TARGET, methods=["soft"], modes=["transfer"], models_dir=models_dir, data="toy", num_languages=2, nxn=path
    )
    expected = similarity.select(TARGET, SOURCES, mode="transfer", num_languages=2, nxn=nxn)
    assert frame.loc[0, "sources"] == pytest.approx(expected)
    with pytest.raises(FileNotFoundError, match="no N×N matrix"):
        ensemble_eval.table(
            TARGET,
            methods=["soft"],
            modes=["transfer"],
            models_dir=models_dir,
            data="toy",
            nxn=path.with_name("missing.csv"),
        )
    inputs = ensemble_eval.describe_inputs(TARGET, ["fr-FR", "de-DE"], models_dir=models_dir, data="toy", nxn=path)
    assert sorted(inputs) == ["logits/de-DE", "logits/fr-FR", "model/de-DE", "model/fr-FR", "nxn"]
    folder = models.source_path("fr-FR", models_dir)
    assert inputs["model/fr-FR"]["sha256"] == evaluate.model_fingerprint(folder)
    ds = data.load_split(TARGET, "test", "toy")
    cache_file = evaluate.cache_path(folder, ds, TARGET, "test", 128)
    assert inputs["logits/fr-FR"] == {"path": str(cache_file), "sha256": report.sha256(cache_file)}
    assert inputs["nxn"]["sha256"] == report.sha256(path)


def test_accuracy_vs_k(toy_models, cached, monkeypatch):
    models_dir, base = toy_models
    methods = ["majority", "uriel_logits"]
    frame = ensemble_eval.accuracy_vs_k(
        TARGET, methods=methods, models_dir=models_dir, data="toy", base_model=base, max_k=3
    )
    assert sorted(set(frame["k"])) == [1, 2, 3]
    assert len(frame) == 3 * (len(methods) + 1)
    for k, group in frame.groupby("k"):
        expected_w = similarity.select(TARGET, SOURCES, num_languages=k)
        assert all(s == expected_w for s in group["sources"])
        assert set(group["system"]) == {
            "ensemble/majority/similarity",
            "ensemble/uriel_logits/similarity",
            "merge/linear/similarity",
        }
    # K = 1: every ensemble and the (one-model) merge are the top source itself
    top = next(iter(similarity.select(TARGET, SOURCES, num_languages=1)))
    alone = evaluate.evaluate(models.source_path(top, models_dir), TARGET, data="toy")["accuracy"]
    assert frame.loc[frame["k"] == 1, "accuracy"].tolist() == pytest.approx([alone] * 3)
    # a rerun reuses the merged models and the cached logits: no forward at all; without the
    # merged models (keep_merged=False) it merges again, identically, so evaluation is still cached
    merged = [models_dir / "merged" / TARGET / f"linear-similarity-k{k}" for k in (1, 2, 3)]
    assert all(m.is_dir() for m in merged)
    before = evaluate.forward_calls()
    _no_forward(monkeypatch)
    for _ in range(2):
        again = ensemble_eval.accuracy_vs_k(
            TARGET, methods=methods, models_dir=models_dir, data="toy", base_model=base, max_k=3, keep_merged=False
        )
        pd.testing.assert_frame_equal(again, frame)
        assert not any(m.exists() for m in merged)
    assert evaluate.forward_calls() == before
    png = paths.reports_dir("ens-test", "accuracy_vs_k.png")
    plots.accuracy_vs_k(frame, png)
    assert png.is_file() and png.stat().st_size > 0


def test_predict_loads_each_model_once_and_matches_the_cache(toy_models, cached, monkeypatch):
    models_dir, _ = toy_models
    logits, _ = cached
    texts = list(data.load_split(TARGET, "test", "toy")["text"])
    sources = {loc: models.source_path(loc, models_dir) for loc in SOURCES}
    loads = []
    real = models.load_classifier
    monkeypatch.setattr(models, "load_classifier", lambda p: loads.append(p) or real(p))
    live = ensemble.live_logits(texts, sources, batch_size=16)
    assert len(loads) == len(SOURCES)
    for loc in SOURCES:
        np.testing.assert_allclose(live[loc], logits[loc], atol=1e-4)
    weights = {"de-DE": 0.4, "fr-FR": 0.3, "en-US": 0.2, "es-ES": 0.1}
    for method in ensemble.METHODS:
        np.testing.assert_array_equal(
            ensemble.combine(method, live, weights), ensemble.combine(method, logits, weights)
        )
    got = ensemble.predict(texts, sources, weights, method="soft", batch_size=48)
    assert got == [data.ID2LABEL[int(i)] for i in ensemble.combine("soft", logits, weights)]
    assert len(loads) == 2 * len(SOURCES)


def test_predict_refuses_bad_input_before_loading(toy_models, tmp_path, monkeypatch):
    models_dir, base = toy_models
    sources = {loc: models.source_path(loc, models_dir) for loc in ("fr-FR", "de-DE")}
    odd = _perturbed(base, tmp_path / "odd", seed=9)
    cfg = paths.read_json(odd / "config.json")
    cfg["num_hidden_layers"] = 1
    paths.write_json(odd / "config.json", cfg)
    monkeypatch.setattr(models, "load_classifier", lambda p: pytest.fail("loaded a model"))
    with pytest.raises(ValueError, match="unknown ensemble method"):
        ensemble.predict(["x"], sources, {"fr-FR": 0.5, "de-DE": 0.5}, method="mean")
    with pytest.raises(ValueError, match="different sources"):
        ensemble.predict(["x"], sources, {"fr-FR": 1.0})
    with pytest.raises(ValueError, match="at least one text"):
        ensemble.predict([], sources, {"fr-FR": 0.5, "de-DE": 0.5})
    # its config says 1 layer, its weights hold 2: refused by the weights-vs-config check, naming the folder
    with pytest.raises(
        ValueError,
        match=r"odd: weights do not match the config .*unexpected tensors "
        r"\['roberta\.encoder\.layer\.1\.",
    ):
        ensemble.predict(["x"], {**sources, "it-IT": odd}, {"fr-FR": 0.4, "de-DE": 0.4, "it-IT": 0.2})


@pytest.mark.slow
def test_notebook_runs_offline_and_records_every_method_and_mode(toy_models, cached, tmp_path):
    import papermill

    models_dir, base = toy_models
    dirs = {loc: models.source_path(loc, models_dir) for loc in SOURCES + [TARGET]}
    evaluate.nxn(dirs, data="toy", profile="ens-test")  # own N×N path: reports/02_training/ens-test/
    evaluate.nxn(dirs, data="toy", profile="ens-test", split="dev")  # what transfer ranks by
    params = dict(
        profile="ens-test",
        target_lang=TARGET,
        models_dir=str(models_dir),
        base_model=str(base),
        num_languages=2,
        max_k=2,
        max_seq_length=128,
    )
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3", progress_bar=False
    )
    record = paths.read_json(report.record_path("04_ensembling", TARGET, "ensembles"))
    methods, modes = list(ensemble.METHODS), ["similarity", "average", "transfer"]
    expected = ensemble_eval.table(
        TARGET,
        methods=methods,
        modes=modes,
        models_dir=models_dir,
        data="toy",
        num_languages=2,
        nxn=evaluate.nxn_path("ens-test", "dev"),
    )
    assert [r["system"] for r in record["rows"]] == list(expected["system"])
    for row, (_, want) in zip(record["rows"], expected.iterrows()):
        assert row["family"] == "ensemble" and row["target"] == TARGET and TARGET not in row["sources"]
        assert row["accuracy"] == pytest.approx(want["accuracy"]) and row["sources"] == pytest.approx(want["sources"])
    vs_k = pd.DataFrame(record["results"]["accuracy_vs_k"])
    assert sorted(set(vs_k["k"])) == [1, 2] and "merge/linear/similarity" in set(vs_k["system"])
    assert record["params"]["max_k"] == 2 and record["params"]["profile"] == "ens-test"
    assert {"nxn", "oracle_nxn", *(f"logits/{loc}" for loc in SOURCES)} <= set(record["inputs"])
    for png in ("methods_x_modes.png", "accuracy_vs_k.png", "distillation.png"):
        assert paths.reports_dir("04_ensembling", TARGET, png).is_file()
    distilled = paths.read_json(report.record_path("04_ensembling", TARGET, "distilled"))
    teacher = distilled["results"]["teacher"]  # the best ensemble on the tuning targets' dev splits
    init = distilled["results"]["init"]  # the toy profile's distill_inits: linear or iso_c, on the same dev splits
    assert init in ("linear", "iso_c")
    assert [(r["system"], r["family"], r["n"], r["teacher"], r["init"]) for r in distilled["rows"]] == [
        (
            f"adapted/{distill.name(teacher['method'], init=init)}/{teacher['mode']}",
            "adapted",
            record["rows"][0]["n"],
            f"ensemble/{teacher['method']}/{teacher['mode']}",
            f"merge/{init}/{teacher['mode']}",
        )
    ]
    chosen = protocol.load("ens-test")
    assert (
        chosen["04.distill.teacher"]["chosen_by"] == "tuning-targets"
        and chosen["04.distill.lr"]["value"] == distilled["results"]["lr"]
    )
    assert (chosen["04.distill.init"]["value"], chosen["04.distill.init"]["chosen_by"]) == (init, "tuning-targets")
    assert set(distilled["results"]["cost_s"]) == {distilled["rows"][0]["system"], f"merge/{init}/{teacher['mode']}"}
