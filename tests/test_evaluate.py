import numpy as np
import pandas as pd
import pytest
import torch

import mu.corpus.data as data
import mu.learn.evaluate as evaluate
import mu.learn.models as models
from mu import paths, report


def test_metrics_accuracy_and_macro_f1():
    labels = np.array([0, 0, 1, 2])
    logits = np.eye(60)[[0, 1, 1, 2]]  # predictions 0, 1, 1, 2
    # class 0: P=1, R=1/2 -> F1=2/3; class 1: P=1/2, R=1 -> 2/3; class 2: 1. Classes absent from gold are ignored.
    expected_f1 = (2 / 3 + 2 / 3 + 1) / 3
    out = evaluate.metrics(logits, labels)
    assert out == {"accuracy": pytest.approx(3 / 4), "macro_f1": pytest.approx(expected_f1), "n": 4}
    assert evaluate.metrics(np.eye(60)[[5, 5]], np.array([0, 1]))["macro_f1"] == 0.0
    with pytest.raises(ValueError, match="equally many"):
        evaluate.metrics(np.eye(60)[[0]], np.array([0, 1]))
    # with the items' ids: which were right, in the ids' order, and their mean is the accuracy
    items = evaluate.metrics(logits, labels, ["a", "b", "c", "d"])["items"]
    assert items == {"ids": ["a", "b", "c", "d"], "correct": "1011"}
    with pytest.raises(ValueError, match="item ids"):
        evaluate.metrics(logits, labels, ["a"])


def test_logits_cache_hit_runs_no_forward(toy_sources):
    model = toy_sources["nl-NL"]
    with pytest.raises(FileNotFoundError, match="no cached logits .*af-ZA/dev"):
        evaluate.cached_logits(model, "af-ZA", "dev", data="toy", max_seq_length=64)
    before = evaluate.forward_calls()
    first, labels = evaluate.logits(model, "af-ZA", "dev", data="toy", batch_size=16, max_seq_length=64)
    n = len(data.load_split("af-ZA", "dev", "toy"))
    assert evaluate.forward_calls() - before == -(-n // 16)
    assert first.shape == (n, 60) and first.dtype == np.float32
    assert np.array_equal(labels, data.load_split("af-ZA", "dev", "toy")["label"])
    middle = evaluate.forward_calls()
    again, labels_again = evaluate.logits(model, "af-ZA", "dev", data="toy", batch_size=16, max_seq_length=64)
    cached, _ = evaluate.cached_logits(model, "af-ZA", "dev", data="toy", max_seq_length=64)
    metrics = evaluate.evaluate(model, "af-ZA", "dev", data="toy", max_seq_length=64)
    assert evaluate.forward_calls() == middle  # cache hits: zero forwards
    assert np.array_equal(first, again) and np.array_equal(first, cached) and np.array_equal(labels, labels_again)
    assert metrics == evaluate.metrics(first, labels)
    assert not list(paths.cache_dir("logits").glob(".*"))  # no temporaries left


def test_cache_is_keyed_by_model_data_and_length(toy_sources):
    ds = data.load_split("de-DE", "test", "toy")
    key = evaluate.cache_path(toy_sources["de-DE"], ds, "de-DE", "test", 64)
    assert key != evaluate.cache_path(toy_sources["nl-NL"], ds, "de-DE", "test", 64)
    assert key != evaluate.cache_path(toy_sources["de-DE"], ds, "de-DE", "test", 32)
    assert key != evaluate.cache_path(toy_sources["de-DE"], ds.select(range(10)), "de-DE", "test", 64)
    assert key == evaluate.cache_path(str(toy_sources["de-DE"]), ds, "de-DE", "test", 64)


def test_length_sorted_batches_keep_example_order(toy_sources):
    model_dir = toy_sources["es-ES"]
    batched, _ = evaluate.logits(model_dir, "it-IT", "dev", data="toy", batch_size=7, max_seq_length=64)
    model, tokenizer = models.load_classifier(model_dir)
    texts = data.load_split("it-IT", "dev", "toy")["text"]
    with torch.inference_mode():
        single = np.stack([model(**tokenizer(t, return_tensors="pt")).logits[0].numpy() for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_nxn_has_one_row_and_column_per_available_model(toy_sources):
    available = {loc: models.source_path(loc, "models/toy") for loc in models.available_sources("models/toy")}
    frame = evaluate.nxn(available, data="toy", profile="toy", max_seq_length=64)
    path = evaluate.nxn_path("toy")
    assert path == paths.reports_dir("02_training", "toy", "evaluation_matrix.csv")
    saved = pd.read_csv(path, index_col=0)
    assert list(saved.index) == list(available) and list(saved.columns) == list(available)
    assert path.with_suffix(".png").stat().st_size > 0
    np.testing.assert_allclose(saved.to_numpy(), frame.to_numpy())
    assert ((saved >= 0) & (saved <= 1)).all().all()
    for loc in available:
        assert saved.loc[loc, loc] == pytest.approx(
            evaluate.evaluate(available[loc], loc, data="toy", max_seq_length=64)["accuracy"]
        )
    before, mtime = evaluate.forward_calls(), path.stat().st_mtime_ns
    again = evaluate.nxn(available, data="toy", profile="toy", max_seq_length=64)
    assert evaluate.forward_calls() == before and path.stat().st_mtime_ns == mtime  # nothing recomputed or rewritten
    pd.testing.assert_frame_equal(evaluate.read_nxn("toy"), again, check_names=False)
    per_item = paths.read_json(evaluate.nxn_items_path(path))  # each cell's items, for 06's zero-shot rows
    for s in available:
        for t in available:
            bits = per_item["correct"][s][t]
            assert len(bits) == len(per_item["ids"][t]) and bits.count("1") / len(bits) == pytest.approx(saved.at[s, t])


def test_nxn_on_more_targets_than_sources(toy_sources):
    frame = evaluate.nxn(
        {"fr-FR": toy_sources["fr-FR"]}, ["fr-FR", "sw-KE"], data="toy", profile="toy-partial", max_seq_length=64
    )
    assert frame.shape == (1, 2)
    with pytest.raises(ValueError, match="at least one model"):
        evaluate.nxn({}, data="toy", profile="toy-partial")


def test_native_rows_are_report_rows(toy_sources):
    rows = evaluate.native_rows({"de-DE": toy_sources["de-DE"]}, data="toy", max_seq_length=64)
    assert rows[0]["system"] == "native" and rows[0]["family"] == "native" and rows[0]["target"] == "de-DE"
    assert rows[0]["sources"] == {"de-DE": 1.0}
    assert rows[0]["n"] == len(data.load_split("de-DE", "test", "toy"))
    # every row carries its items: the split's ids in order, one 0/1 per item, whose mean is the accuracy
    items = rows[0]["items"]
    assert items["ids"] == list(data.load_split("de-DE", "test", "toy")["id"])
    assert items["correct"].count("1") / len(items["correct"]) == pytest.approx(rows[0]["accuracy"], abs=1e-12)
    path = report.save("02_training", "toy-items", "training", rows=rows)
    stored = paths.read_json(path)
    assert report.row_items(stored["rows"][0], stored["item_ids"]) == (items["ids"], items["correct"])


def test_nxn_on_two_processes_gives_the_same_matrix(toy_sources):
    import shutil

    sources = {loc: toy_sources[loc] for loc in ("de-DE", "fr-FR", "es-ES")}
    one = evaluate.nxn(sources, ["de-DE", "nl-NL"], data="toy", profile="toy-one", max_seq_length=64, workers=1)
    shutil.rmtree(paths.cache_dir("logits"))  # the workers compute every logit again
    two = evaluate.nxn(sources, ["de-DE", "nl-NL"], data="toy", profile="toy-two", max_seq_length=64, workers=2)
    pd.testing.assert_frame_equal(one, two)
    assert len(list(paths.cache_dir("logits").glob("*.npz"))) == 6  # written by the workers, reused afterwards
