import itertools
import json
import shutil
from pathlib import Path

import pytest

import mu.corpus.data as data
from mu import paths
from mu.corpus import massive, toy


def test_intents_are_the_60_massive_intents_in_classlabel_order():
    assert len(data.INTENTS) == 60
    assert len(set(data.INTENTS)) == 60
    assert data.INTENTS[:5] == [
        "datetime_query",
        "iot_hue_lightchange",
        "transport_ticket",
        "takeaway_query",
        "qa_stock",
    ]
    assert data.INTENTS[-1] == "lists_query"
    assert all(data.LABEL2ID[data.ID2LABEL[i]] == i for i in range(60))


def test_toy_splits_have_expected_columns_and_sizes():
    folder = toy.make_toy()
    args = json.loads((folder / "toy_args.json").read_text())
    for split, per_intent in (
        ("train", args["train_per_intent"]),
        ("dev", args["dev_per_intent"]),
        ("test", args["test_per_intent"]),
    ):
        ds = data.load_split("sw-KE", split, "toy")
        assert ds.column_names == ["id", "text", "label"]
        assert len(ds) == per_intent * args["num_intents"]
        assert set(ds["label"]) == set(range(args["num_intents"]))


def test_label_map_identical_across_locales():
    """Toy data is parallel like MASSIVE: the same utterance id has the same label id in every locale."""
    by_locale = {}
    for loc in toy.TOY_LOCALES:
        ds = data.load_split(loc, "test", "toy")
        by_locale[loc] = dict(zip(ds["id"], ds["label"]))
    reference = by_locale[toy.TOY_LOCALES[0]]
    assert all(m == reference for m in by_locale.values())
    # and labels index the one fixed 60-intent space: names round-trip through ID2LABEL/LABEL2ID
    assert all(data.LABEL2ID[data.ID2LABEL[y]] == y for y in reference.values())


def test_make_toy_is_deterministic_and_resumable(tmp_path):
    a = toy.make_toy(tmp_path / "a", seed=3)
    b = toy.make_toy(tmp_path / "b", seed=3)
    for loc in toy.TOY_LOCALES:
        assert (a / f"{loc}.jsonl").read_bytes() == (b / f"{loc}.jsonl").read_bytes()
    mtime = (a / "de-DE.jsonl").stat().st_mtime_ns
    assert toy.make_toy(tmp_path / "a", seed=3) == a
    assert (a / "de-DE.jsonl").stat().st_mtime_ns == mtime  # not rewritten
    c = toy.make_toy(tmp_path / "a", seed=4)  # other arguments: regenerated
    assert (c / "de-DE.jsonl").read_bytes() != (b / "de-DE.jsonl").read_bytes()
    assert not list(tmp_path.glob(".*tmp"))


def test_toy_languages_are_typologically_structured():
    """Languages of one family share more word forms than languages of different families."""
    vocab = {
        loc: {w for t in data.load_split(loc, "train", "toy")["text"] for w in t.split()} for loc in toy.TOY_LOCALES
    }

    def jaccard(a, b):
        return len(vocab[a] & vocab[b]) / len(vocab[a] | vocab[b])

    within = [
        jaccard(a, b)
        for a, b in itertools.combinations(toy.TOY_LOCALES, 2)
        if toy.TOY_FAMILIES[a] == toy.TOY_FAMILIES[b]
    ]
    across = [
        jaccard(a, b)
        for a, b in itertools.combinations(toy.TOY_LOCALES, 2)
        if toy.TOY_FAMILIES[a] != toy.TOY_FAMILIES[b]
    ]
    assert min(within) > 2 * max(across)


def test_local_massive_folder_loads(massive_fixture_dir):
    lines = [json.loads(line) for line in (massive_fixture_dir / "de-DE.jsonl").read_text().splitlines()]
    for split in data.SPLITS:
        expected = [r for r in lines if r["partition"] == split]
        ds = data.load_split("de-DE", split, str(massive_fixture_dir))
        assert list(ds["id"]) == [r["id"] for r in expected]
        assert list(ds["text"]) == [r["utt"] for r in expected]
        assert [data.ID2LABEL[y] for y in ds["label"]] == [r["intent"] for r in expected]


def test_unknown_locale_split_or_source(massive_fixture_dir):
    with pytest.raises(ValueError, match="unknown toy locale 'xx-XX'.*de-DE"):
        data.load_split("xx-XX", "test", "toy")
    with pytest.raises(ValueError, match=r"fr-FR.*de-DE.*sw-KE"):
        data.load_split("fr-FR", "test", massive_fixture_dir)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        data.load_split("de-DE", "validation", "toy")
    with pytest.raises(ValueError, match="neither 'toy', 'hub', 'massive' nor an existing folder"):
        data.load_split("de-DE", "test", "no/such/folder")
    with pytest.raises(ValueError, match="unknown toy locale"):
        toy.make_toy(paths.cache_dir("bad_toy"), locales=["de-DE", "zz-ZZ"])


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "bad JSON"),
        ('{"partition": "test", "utt": "x"}', r"missing key\(s\) \['intent'\]"),
        ('{"partition": "test", "intent": "make_coffee", "utt": "x"}', "unknown intent 'make_coffee'"),
        ('{"partition": "valid", "intent": "alarm_set", "utt": "x"}', "unknown partition 'valid'"),
        ('{"partition": "test", "intent": "alarm_set", "utt": ""}', "'utt' must be a non-empty string"),
        ('{"partition": "test", "intent": "alarm_set", "utt": "x", "locale": "sw-KE"}', "line has locale 'sw-KE'"),
        ('["a list"]', "expected a JSON object"),
        # wrong types, null or duplicate ids (never a TypeError without file and line)
        ('{"partition": "test", "intent": ["alarm_set"], "utt": "x"}', r"'intent' must be a string, got list"),
        ('{"partition": "test", "intent": "alarm_set", "utt": 5}', r"'utt' must be a string, got int"),
        ('{"partition": 1, "intent": "alarm_set", "utt": "x"}', r"'partition' must be a string, got int"),
        ('{"id": null, "partition": "test", "intent": "alarm_set", "utt": "x"}', r"'id' must be a non-empty string"),
        ('{"id": ["9"], "partition": "test", "intent": "alarm_set", "utt": "x"}', r"'id' must be a non-empty string"),
        (
            '{"id": "1", "partition": "test", "intent": "alarm_set", "utt": "x"}',
            r"duplicate id '1' \(first on line 1\)",
        ),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, massive_fixture_dir, bad_line, message):
    shutil.copy(massive_fixture_dir / "de-DE.jsonl", tmp_path / "de-DE.jsonl")
    good = (tmp_path / "de-DE.jsonl").read_text().splitlines()
    lines = good[:2] + [bad_line] + good[2:]
    (tmp_path / "de-DE.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"de-DE\.jsonl:3: {message}"):
        data.load_split("de-DE", "train", tmp_path)


def test_invalid_utf8_names_file_line_and_byte(tmp_path, massive_fixture_dir):
    good = (massive_fixture_dir / "de-DE.jsonl").read_bytes().splitlines()
    bad = b'{"partition": "test", "intent": "alarm_set", "utt": "caf\xe9"}'  # latin-1, not UTF-8
    (tmp_path / "de-DE.jsonl").write_bytes(b"\n".join(good[:3] + [bad] + good[3:]) + b"\n")
    with pytest.raises(ValueError, match=r"de-DE\.jsonl:4: invalid UTF-8 \(byte b'\\xe9' at column 57\)"):
        data.load_split("de-DE", "train", tmp_path)


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "de-DE.jsonl").write_text('{"partition": "train", "intent": "alarm_set", "utt": "x"}\n')
    assert len(data.load_split("de-DE", "train", tmp_path)) == 1
    with pytest.raises(ValueError, match=r"de-DE\.jsonl \[test\]: no examples"):
        data.load_split("de-DE", "test", tmp_path)


def test_fingerprint_tracks_content():
    ds = data.load_split("de-DE", "test", "toy")
    assert data.fingerprint(ds) == data.fingerprint(data.load_split("de-DE", "test", "toy"))
    assert data.fingerprint(ds) != data.fingerprint(data.load_split("nl-NL", "test", "toy"))
    changed = ds.map(lambda r, i: {"label": (r["label"] + 1) % 60 if i == 0 else r["label"]}, with_indices=True)
    assert data.fingerprint(changed) != data.fingerprint(ds)


def test_load_texts_covers_all_locales():
    texts = data.load_texts(["de-DE", "fr-FR"], "dev", "toy")
    assert len(texts) == len(data.load_split("de-DE", "dev", "toy")) + len(data.load_split("fr-FR", "dev", "toy"))


def test_gzipped_folder_loads_like_plain(tmp_path, massive_fixture_dir):
    """``<locale>.jsonl.gz`` (as in ../shared/massive/1.1) reads exactly like ``<locale>.jsonl``."""
    import gzip

    with gzip.open(tmp_path / "de-DE.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write((massive_fixture_dir / "de-DE.jsonl").read_text(encoding="utf-8"))
    for split in data.SPLITS:
        plain, packed = data.load_split("de-DE", split, massive_fixture_dir), data.load_split("de-DE", split, tmp_path)
        assert data.fingerprint(plain) == data.fingerprint(packed)
    assert massive.locale_file(tmp_path, "de-DE").name == "de-DE.jsonl.gz"
    with pytest.raises(ValueError, match=r"neither sw-KE\.jsonl nor sw-KE\.jsonl\.gz.*\['de-DE'\]"):
        data.load_split("sw-KE", "test", tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "corrupt"])
def test_damaged_gzip_is_a_value_error_naming_the_file(damage, tmp_path, massive_fixture_dir):
    """A truncated ``.jsonl.gz`` (EOFError inside gzip), one that is not gzip (BadGzipFile) or has damaged
    deflate data (zlib.error) is a ValueError naming the file, never the raw gzip exception."""
    import gzip

    text = (massive_fixture_dir / "de-DE.jsonl").read_text(encoding="utf-8")
    packed = gzip.compress(text.encode())
    body = {
        "truncated": packed[: len(packed) // 2],
        "not-gzip": text.encode(),
        "corrupt": packed[:12] + bytes(b ^ 0x5A for b in packed[12:-8]) + packed[-8:],
    }[damage]
    (tmp_path / "de-DE.jsonl.gz").write_bytes(body)
    what = {
        "truncated": "truncated or damaged gzip",
        "not-gzip": "not a gzip file",
        "corrupt": "truncated or damaged gzip",
    }[damage]
    with pytest.raises(ValueError, match=rf"de-DE\.jsonl\.gz: {what}"):
        data.load_split("de-DE", "train", tmp_path)


def test_massive_source_is_the_env_folder_or_shared_beside_the_checkout(tmp_path, monkeypatch, massive_fixture_dir):
    monkeypatch.delenv(massive.MASSIVE_ENV, raising=False)
    checkout = Path(massive.__file__).resolve().parents[2]
    assert massive.massive_dir() == checkout.parent / "shared" / "massive" / "1.1"
    monkeypatch.setenv(massive.MASSIVE_ENV, str(massive_fixture_dir))
    assert massive.massive_dir() == massive_fixture_dir.resolve()
    assert len(data.load_split("sw-KE", "test", "massive")) > 0
    monkeypatch.setenv(massive.MASSIVE_ENV, str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=r"data source 'massive'.*absent.*MU_MASSIVE_DIR"):
        data.load_split("sw-KE", "test", "massive")


@pytest.mark.skipif(
    not massive.massive_dir().is_dir(),
    reason=f"real MASSIVE 1.1 not found at {massive.massive_dir()} (set MU_MASSIVE_DIR or put it in "
    "../shared/massive/1.1 beside the checkout)",
)
def test_real_massive_splits_are_parallel_and_complete():
    sizes = {}
    for loc in ("sw-KE", "de-DE"):
        splits = {s: data.load_split(loc, s, "massive") for s in data.SPLITS}
        sizes[loc] = {s: len(d) for s, d in splits.items()}
        assert set(splits["test"]["label"]) <= set(range(60)) and len(set(splits["train"]["label"])) == 60
    assert sizes["sw-KE"] == sizes["de-DE"] == {"train": 11514, "dev": 2033, "test": 2974}  # the README's sizes
    assert data.load_split("sw-KE", "test", "massive")["id"] == data.load_split("de-DE", "test", "massive")["id"]
