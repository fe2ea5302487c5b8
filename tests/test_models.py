import json
import shutil

import pytest
import torch
from transformers import AutoConfig

import mu.corpus.data as data
import mu.learn.bases as bases
import mu.learn.models as models
from mu import paths


def test_toy_base_has_massive_labels_and_xlmr_tokens(toy_base):
    model, tokenizer = models.load_classifier(toy_base)
    assert not model.training
    assert type(model).__name__ == "XLMRobertaForSequenceClassification"
    assert model.config.num_labels == 60
    assert {int(k): v for k, v in model.config.id2label.items()} == data.ID2LABEL
    assert model.config.vocab_size == len(tokenizer)
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert tokenizer.pad_token_id == model.config.pad_token_id
    ids = tokenizer("anna tokyo")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    record = paths.read_json(toy_base / "base_args.json")
    assert "classifier_head" in record and record["seed"] == 42


def test_build_toy_base_is_seeded_and_resumable(toy_base, tmp_path):
    mtime = (toy_base / models.WEIGHTS_FILE).stat().st_mtime_ns
    assert bases.build_toy_base("models/toy/base", seed=42) == toy_base
    assert (toy_base / models.WEIGHTS_FILE).stat().st_mtime_ns == mtime  # same arguments: kept
    again = bases.build_toy_base(tmp_path / "again", seed=42)
    other = bases.build_toy_base(tmp_path / "other", seed=1)
    a, b, c = (models.load_state_dict(p) for p in (toy_base, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same initial head and encoder
    assert not torch.equal(a["classifier.out_proj.weight"], c["classifier.out_proj.weight"])
    # a base built with other arguments is never silently rebuilt over (its sources would be orphaned)
    with pytest.raises(ValueError, match=r"exists but was built with other arguments.*'seed': \(1, 2\)"):
        bases.build_toy_base(tmp_path / "other", seed=2)
    assert bases.ensure_base("toy", tmp_path / "other", seed=1) == tmp_path / "other"
    with pytest.raises(ValueError, match="unknown profile 'tiny'"):
        bases.ensure_base("tiny", tmp_path / "other", seed=1)


def test_resolve_and_available_sources(toy_sources, tmp_path):
    assert models.available_sources("models/toy") == sorted(toy_sources)
    assert models.available_sources("models/toy", locales=["de-DE", "sw-KE"]) == ["de-DE"]
    assert models.available_sources(tmp_path / "empty") == []
    assert models.resolve("de-DE", "models/toy") == str(toy_sources["de-DE"])
    assert models.resolve("sw-KE", "models/toy", allow_hub=True) == "haryoaw/xlm-roberta-base_massive_k_sw-KE"
    with pytest.raises(ValueError, match=r"no model for 'sw-KE'.*\['de-DE', 'es-ES', 'fr-FR', 'nl-NL'\]"):
        models.resolve("sw-KE", "models/toy")


def test_corrupt_or_missing_model_folder_is_named(toy_sources, tmp_path):
    broken = models.source_path("it-IT", tmp_path)
    shutil.copytree(toy_sources["fr-FR"], broken)
    (broken / models.WEIGHTS_FILE).unlink()
    with pytest.raises(ValueError, match=r"xlm-roberta-base_massive_k_it-IT.*model\.safetensors is missing"):
        models.available_sources(tmp_path)
    shutil.copy(toy_sources["fr-FR"] / models.WEIGHTS_FILE, broken / models.WEIGHTS_FILE)
    (broken / "config.json").write_text("{ truncated")
    with pytest.raises(ValueError, match=r"corrupt model config .*k_it-IT/config\.json"):
        models.load_classifier(broken)
    shutil.copy(toy_sources["fr-FR"] / "config.json", broken / "config.json")
    (broken / models.WEIGHTS_FILE).write_bytes((broken / models.WEIGHTS_FILE).read_bytes()[:100])
    for load in (models.load_state_dict, models.load_classifier, models.available_sources):
        with pytest.raises(ValueError, match=r"corrupt weights file .*k_it-IT/model\.safetensors"):
            load(broken if load is not models.available_sources else tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        models.load_state_dict(tmp_path / "nothing")


def test_load_state_dict_matches_model(toy_sources):
    state = models.load_state_dict(toy_sources["de-DE"])
    model, _ = models.load_classifier(toy_sources["de-DE"])
    expected = model.state_dict()
    assert set(state) <= set(expected)
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert "classifier.out_proj.weight" in state


def test_check_compatible_accepts_sources_and_names_differences(toy_sources, tmp_path):
    models.check_compatible(toy_sources)
    models.check_compatible(list(toy_sources.values()))
    good = AutoConfig.from_pretrained(toy_sources["de-DE"])
    for field, value in (("num_labels", 12), ("hidden_size", 32), ("vocab_size", 7), ("model_type", "bert")):
        bad = AutoConfig.from_pretrained(toy_sources["de-DE"])
        setattr(bad, field, value)
        with pytest.raises(ValueError, match=rf"model odd is incompatible: {field}=.*de-DE has {field}="):
            models.check_compatible({"de-DE": good, "odd": bad})
    swapped = AutoConfig.from_pretrained(toy_sources["de-DE"])
    swapped.id2label = {**swapped.id2label, 0: swapped.id2label[1], 1: swapped.id2label[0]}
    with pytest.raises(ValueError, match="id2label"):
        models.check_compatible({"de-DE": good, "odd": swapped})
    # same config, other vocabulary
    odd = tmp_path / "odd"
    shutil.copytree(toy_sources["nl-NL"], odd)
    tok = json.loads((odd / "tokenizer.json").read_text())
    tok["model"]["vocab"][5][0] = "▁zzz"
    (odd / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="tokenizer vocabulary differs"):
        models.check_compatible({"de-DE": toy_sources["de-DE"], "odd": odd})


def test_check_labels_refuses_other_label_maps(toy_sources):
    config = AutoConfig.from_pretrained(toy_sources["de-DE"])
    models.check_labels(config, "ok")
    config.id2label = {i: f"LABEL_{i}" for i in range(60)}
    with pytest.warns(UserWarning, match="unnamed labels"):
        models.check_labels(config, "generic")
    config.id2label = {i: data.INTENTS[(i + 1) % 60] for i in range(60)}
    with pytest.raises(ValueError, match="shifted: id2label differs"):
        models.check_labels(config, "shifted")
    config.id2label = {i: f"LABEL_{i}" for i in range(12)}
    with pytest.raises(ValueError, match="has 12 labels"):
        models.check_labels(config, "small")


def test_save_classifier_is_atomic(toy_base, tmp_path):
    model, tokenizer = models.load_classifier(toy_base)

    class Broken:
        def save_pretrained(self, path):
            raise RuntimeError("disk full")

    out = tmp_path / "model"
    with pytest.raises(RuntimeError, match="disk full"):
        models.save_classifier(model, Broken(), out)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary left
    models.save_classifier(model, tokenizer, out, extra_files={"note.json": {"a": 1}})
    assert paths.read_json(out / "note.json") == {"a": 1}
    assert models.load_classifier(out)[0].config.num_labels == 60


def test_train_tokenizer_gives_the_same_vocabulary_in_every_process(mu_root):
    """The HF unigram trainer's scores differ in their last bits between processes (ids of near-tied
    pieces swapped in 4 of 6 processes before the scores were rounded and the pieces sorted)."""
    import subprocess
    import sys

    code = (
        "import json, sys; from mu import bases, data; texts = [t for loc in ('de-DE', 'nl-NL', 'sw-KE') "
        "for t in data.load_split(loc, 'train', 'toy')['text']]; "
        "print(json.dumps(sorted(bases.train_tokenizer(texts, 400).get_vocab().items())))"
    )
    texts = [t for loc in ("de-DE", "nl-NL", "sw-KE") for t in data.load_split(loc, "train", "toy")["text"]]
    here = json.dumps(sorted(bases.train_tokenizer(texts, 400).get_vocab().items()))
    vocabs = {here} | {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    }  # three processes: this one and two fresh ones
    assert len(vocabs) == 1 and len(json.loads(vocabs.pop())) > 200
    tok = bases.train_tokenizer(["anna tokyo", "tokyo anna"] * 20, 60)
    assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]


def test_tokenizer_is_parsed_once_per_content(toy_sources, tmp_path):
    """A target's merges carry their first source's tokenizer: parsed once per process, keyed by the files'
    content (not the folder), so an edited tokenizer is parsed again and a corrupt one is still named."""
    from transformers import AutoTokenizer

    copy = tmp_path / "copy"
    shutil.copytree(toy_sources["de-DE"], copy)
    first = models.load_tokenizer(toy_sources["de-DE"], "encode")
    assert models.load_tokenizer(copy, "encode") is first
    assert models.load_tokenizer(copy, "save") is not first  # an encoder's saved tokenizer.json holds its last call
    text = ["hallo wereld, wie geht es"]
    assert first(text)["input_ids"] == AutoTokenizer.from_pretrained(copy)(text)["input_ids"]
    tok = json.loads((copy / "tokenizer.json").read_text())
    tok["model"]["vocab"][5][0] = "▁zzz"
    (copy / "tokenizer.json").write_text(json.dumps(tok))
    assert models.load_tokenizer(copy, "encode") is not first
    assert models.vocab_fingerprint(copy) != models.vocab_fingerprint(toy_sources["de-DE"])
    (copy / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"corrupt tokenizer file .*copy/tokenizer.json"):
        models.vocab_fingerprint(copy)
    with pytest.raises(ValueError, match="role 'other'; valid: 'encode', 'save'"):
        models.load_tokenizer(toy_sources["de-DE"], "other")


def test_the_architecture_check_is_kept_in_the_shared_cache_so_checking_imports_no_modeling_code(toy_base):
    """The expected tensors of a config are cached per transformers version and config: a process that only
    checks model folders (a merge) never imports transformers' modeling code (~2 s); an unreadable cache
    file is rebuilt, never trusted."""
    import subprocess
    import sys

    config = AutoConfig.from_pretrained(toy_base)
    args = (type(config), config.to_json_string(use_diff=False))
    models._expected_tensors.cache_clear()
    got = models._expected_tensors(*args)
    expected = {k: list(v) for k, v in got.items()}
    mine = [models.architecture_file(*args)]
    assert paths.read_json(mine[0])["tensors"] == expected
    code = (
        f"import sys; from mu import models; models.check_model_weights({str(toy_base)!r}); "
        "print('transformers.modeling_utils' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    mine[0].write_text("{not json")
    models._expected_tensors.cache_clear()
    assert models._expected_tensors(*args) == got
    assert paths.read_json(mine[0])["tensors"] == expected
