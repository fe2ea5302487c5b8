"""mu.sts (STS pairs: toy by construction, local files, hub) and mu.evaluate.sts (mean-pooled cosine vs gold)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mu import evaluate, models, sts, toy


def test_toy_sts_is_graded_by_construction():
    pairs = sts.load_pairs("toy", "sw-KE")
    assert pairs["score"].value_counts().to_dict() == {s: 40 for s, _ in sts.TOY_LEVELS}
    words = set(w for ks in toy.toy_lexicon("sw-KE")["keywords"] for w in ks) | set(toy.toy_lexicon("sw-KE")["fillers"])
    for _, p in pairs.iterrows():
        a, b = p["sentence1"].split(), p["sentence2"].split()
        assert set(a) | set(b) <= words and len(a) == len(b) == 5
        shared = len(set(a) & set(b))
        assert shared == {5.0: 5, 4.0: 3, 3.0: 0, 2.0: 3, 0.0: 0}[p["score"]], p.to_dict()
        if p["score"] == 5.0:
            assert a != b
    # deterministic, per language, and not rewritten when it exists
    file = sts.make_toy_sts("sw-KE")
    mtime = file.stat().st_mtime_ns
    assert sts.load_pairs("toy", "sw-KE").equals(pairs) and file.stat().st_mtime_ns == mtime
    assert not sts.load_pairs("toy", "de-DE")["sentence1"].isin(pairs["sentence1"]).any()
    with pytest.raises(ValueError, match="unknown toy locale 'xx-XX'"):
        sts.load_pairs("toy", "xx-XX")


def test_local_tsv_and_jsonl_read_the_same(tmp_path):
    rows = [("a cat sits", "a cat is sitting", 4.5), ("a dog", "the stock market fell", 0.0)]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in rows))
    expected = pd.DataFrame(rows, columns=["sentence1", "sentence2", "score"])
    pd.testing.assert_frame_equal(sts.load_pairs(tsv), expected)
    pd.testing.assert_frame_equal(sts.load_pairs(jsonl), expected)


@pytest.mark.parametrize(
    "name,text,error",
    [
        (
            "missing.jsonl",
            '{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "a", "score": 1}\n',
            r"missing.jsonl:2: missing column\(s\) \['sentence2'\]",
        ),
        (
            "header.tsv",
            "sentence1\tscore\na\t1\n",
            r"header.tsv:1: header \['sentence1', 'score'\] lacks column\(s\) "
            r"\['sentence2'\]",
        ),
        (
            "range.tsv",
            "sentence1\tsentence2\tscore\na\tb\t1\nc\td\t5.5\n",
            r"range.tsv:3: score 5.5 is outside the declared range \[0.0, 5.0\]",
        ),
        (
            "nan.jsonl",
            '{"sentence1": "a", "sentence2": "b", "score": "high"}\n',
            r"nan.jsonl:1: score 'high' is not a number",
        ),
        (
            "blank.jsonl",
            '{"sentence1": " ", "sentence2": "b", "score": 1}\n',
            r"blank.jsonl:1: 'sentence1' must be a non-empty",
        ),
        ("empty.tsv", "", r"empty.tsv: no STS pairs"),
        ("empty.jsonl", "\n\n", r"empty.jsonl: no STS pairs"),
        ("fields.tsv", "sentence1\tsentence2\tscore\na\tb\n", r"fields.tsv:2: 2 fields, the header has 3"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, name, text, error):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=error):
        sts.load_pairs(tmp_path / name)


def test_declared_range_other_sources_and_languages(tmp_path):
    f = tmp_path / "unit.jsonl"
    f.write_text('{"sentence1": "a", "sentence2": "b", "score": 0.8}\n')
    assert sts.load_pairs(f, score_range=(0, 1))["score"].tolist() == [0.8]
    with pytest.raises(ValueError, match="outside the declared range"):
        sts.load_pairs(f, score_range=(2, 5))
    with pytest.raises(ValueError, match="does not exist"):
        sts.load_pairs(tmp_path / "nowhere.tsv")
    with pytest.raises(ValueError, match=r"no hub STS set for 'sw-KE': PhilipMay/stsb_multi_mt has \['de', 'en'"):
        sts.load_pairs("hub", "sw-KE")


def test_mean_pooling_masks_padding(toy_base):
    model, tokenizer = models.load_classifier(toy_base)
    short, long_ = "kuloke zimi", "kuloke zimi labon rabure kelo reride purerun kabulo kude"
    alone = evaluate.embed(model, tokenizer, [short])
    padded = evaluate.embed(model, tokenizer, [short, long_], batch_size=2)  # short is padded to long_'s length
    np.testing.assert_allclose(padded[0], alone[0], rtol=1e-5, atol=1e-6)
    assert padded.shape == (2, model.config.hidden_size)


def test_sts_spearman_of_cosine_against_gold(toy_base, toy_sources):
    pairs = sts.load_pairs("toy", "de-DE")
    model, tokenizer = models.load_classifier(toy_base)
    a, b = (
        evaluate.embed(model, tokenizer, list(pairs["sentence1"])),
        evaluate.embed(model, tokenizer, list(pairs["sentence2"])),
    )
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    # gold = the cosine itself: perfect rank agreement, and reversed: perfect disagreement
    assert evaluate.sts(toy_base, pairs.assign(score=cosine))["spearman"] == pytest.approx(1.0)
    assert evaluate.sts(toy_base, pairs.assign(score=-cosine))["spearman"] == pytest.approx(-1.0)
    base, native = evaluate.sts(toy_base, pairs), evaluate.sts(toy_sources["de-DE"], pairs)
    assert base["n"] == native["n"] == len(pairs) and -1 <= base["spearman"] <= 1
    # fine-tuning on de-DE intents brings an intent's keywords ("synonyms") together
    assert native["spearman"] > base["spearman"]
    with pytest.raises(ValueError, match=r"missing \['score'\]"):
        evaluate.sts(toy_base, pairs.drop(columns="score"))


def test_score_range_is_for_local_files_only():
    """A declared range that the built-in sources would not use is refused, never silently ignored."""
    with pytest.raises(ValueError, match=r"applies to local STS files only; 'toy'"):
        sts.load_pairs("toy", "sw-KE", score_range=(0.0, 1.0))
    assert len(sts.load_pairs("toy", "sw-KE", score_range=[0.0, 5.0])) > 0
