"""Faults and bad input reproduced, each asserting the new behaviour (caches are caches,
validated numbers, no orphans, fewer sources than asked is recorded). Data-file cases: test_data.py;
concurrent runners and the HTML reports: test_site.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from mu import ensemble, evaluate, models, notes, paths, report, similarity
from mu import merge as mm
from mu.merge import checks
from mu.merge import run as merge_run


@pytest.fixture(autouse=True)
def _fresh_notes():
    """Each test starts and ends with no recorded warnings (they are kept per process)."""
    notes.clear()
    yield
    notes.clear()


def _copy_model(src, dst, edit_tensors=None, edit_config=None):
    """A copy of a model folder with its tensors and/or config changed."""
    shutil.copytree(src, dst)
    if edit_tensors:
        sd = load_file(str(dst / models.WEIGHTS_FILE))
        edit_tensors(sd)
        save_file(sd, str(dst / models.WEIGHTS_FILE), metadata={"format": "pt"})
    if edit_config:
        cfg = json.loads((dst / models.CONFIG_FILE).read_text())
        edit_config(cfg)
        (dst / models.CONFIG_FILE).write_text(json.dumps(cfg))
    return dst


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- 2. caches are caches ---------------------------------------------------------------------------


def test_truncated_logits_cache_is_named_deleted_and_recomputed(toy_sources):
    model = toy_sources["es-ES"]
    first, labels = evaluate.logits(model, "it-IT", "dev", data="toy", max_seq_length=64)
    entry = evaluate.cache_path(model, evaluate.mu_data.load_split("it-IT", "dev", "toy"), "it-IT", "dev", 64)
    _truncate(entry)
    # read-only path: a warning naming the file, the entry deleted, then "not cached" (no zipfile error)
    with pytest.warns(notes.MuWarning, match=rf"corrupt logits cache entry {entry}.*BadZipFile"):
        with pytest.raises(FileNotFoundError, match="no cached logits"):
            ensemble.source_logits(
                "it-IT", ["es-ES"], models_dir=model.parent, data="toy", split="dev", max_seq_length=64
            )
    assert not entry.exists()
    # compute=True recomputes a truncated entry, with the same numbers
    _ = evaluate.logits(model, "it-IT", "dev", data="toy", max_seq_length=64)
    _truncate(entry, keep=0.9)
    before = evaluate.forward_calls()
    with pytest.warns(notes.MuWarning, match=r"corrupt logits cache entry"):
        again, _ = ensemble.source_logits(
            "it-IT", ["es-ES"], models_dir=model.parent, data="toy", split="dev", max_seq_length=64, compute=True
        )
    assert evaluate.forward_calls() > before
    # (equal up to float rounding: an earlier test may have cached this entry with other batch padding)
    assert np.allclose(again["es-ES"], first, rtol=0, atol=1e-5) and entry.is_file()
    assert any(str(entry) in w for w in notes.noted())


def test_corrupt_sha256_memo_is_recomputed(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x" * 1000)
    digest = report.file_sha256(f)
    memos = [p for p in paths.cache_dir("sha256").rglob("*") if p.is_file() and p.read_text() == digest]
    assert len(memos) == 1
    memos[0].write_text("\x00garbage")
    with pytest.warns(notes.MuWarning, match=rf"corrupt sha256 memo {memos[0]}"):
        assert report.file_sha256(f) == digest
    assert memos[0].read_text() == digest


def test_a_bug_in_a_cache_reader_is_not_taken_for_a_corrupt_entry(tmp_path):
    """Only what a damaged file raises means "corrupt": a reader's own bug propagates, and the
    entry is kept (never deleted and recomputed forever behind a warning)."""
    from mu import cache

    entry = tmp_path / "entry.json"
    entry.write_text("{}")

    def buggy(path):
        raise TypeError("reader bug")

    with pytest.raises(TypeError, match="reader bug"):
        cache.read(entry, buggy)
    assert entry.is_file()
    with pytest.warns(notes.MuWarning, match="corrupt cache entry"):
        assert cache.read(entry, lambda p: json.loads("{bad")) is None
    assert not entry.exists()


def test_truncated_statistics_cache_is_recomputed(toy_sources):
    kw = dict(num_examples=8, batch_size=4, max_seq_length=32, seed=0)
    file, _ = merge_run.statistics("grams", "de-DE", toy_sources["de-DE"], "0" * 64, "toy", **kw)
    good = {k: v.clone() for k, v in load_file(str(file)).items()}
    _truncate(file, keep=0.7)
    with pytest.warns(notes.MuWarning, match=rf"corrupt statistics cache entry {file}"):
        again, _ = merge_run.statistics("grams", "de-DE", toy_sources["de-DE"], "0" * 64, "toy", **kw)
    assert again == file
    recomputed = load_file(str(file))
    assert recomputed.keys() == good.keys() and all(torch.equal(recomputed[k], good[k]) for k in good)


# --- 3. validated numbers -----------------------------------------------------------------------------


def test_merge_refuses_a_non_finite_input_naming_source_and_tensor(toy_sources, tmp_path):
    def one_nan(sd):
        sd["roberta.encoder.layer.0.output.dense.weight"][0, 0] = float("nan")

    bad = _copy_model(toy_sources["nl-NL"], tmp_path / "nan-model", edit_tensors=one_nan)
    out = tmp_path / "merged"
    with pytest.raises(
        ValueError,
        match=r"merge input nl-NL: tensor roberta\.encoder\.layer\.0\.output\.dense\.weight"
        r" has 1 non-finite value",
    ):
        mm.merge_models("linear", {"de-DE": toy_sources["de-DE"], "nl-NL": bad}, {"de-DE": 0.5, "nl-NL": 0.5}, out)
    assert not out.exists() and not list(tmp_path.glob(".merged*"))


@pytest.mark.parametrize("method", ["linear", "ties", "fisher_simple"])
def test_merge_in_memory_checks_its_inputs_as_merge_models_does(method, toy_sources):
    """``mu.merge.merge`` on state dicts in memory (a notebook user's call) refuses a NaN source or base,
    naming it and the tensor (the check ``merge_models`` uses), and tensors missing from one input."""
    sds = {loc: models.load_state_dict(toy_sources[loc]) for loc in ("de-DE", "nl-NL")}
    base = models.load_state_dict(toy_sources["fr-FR"])
    weights = {"de-DE": 0.5, "nl-NL": 0.5}
    key = "roberta.encoder.layer.0.output.dense.weight"
    ok = mm.merge(method, sds, weights, base)
    assert set(ok) == set(sds["de-DE"]) and all(bool(torch.isfinite(v).all()) for v in ok.values())
    sds["nl-NL"][key][0, 0] = float("nan")
    with pytest.raises(ValueError, match=rf"merge input nl-NL: tensor {key} has 1 non-finite value"):
        mm.merge(method, sds, weights, base)
    sds["nl-NL"][key][0, 0] = 0.0
    if method in mm.USES_BASE:
        base[key][1, 1] = float("inf")
        with pytest.raises(ValueError, match=rf"merge input <base>: tensor {key} has 1 non-finite value"):
            mm.merge(method, sds, weights, base)
        base[key][1, 1] = 0.0
    del sds["de-DE"]["classifier.dense.bias"]
    with pytest.raises(ValueError, match=r"different tensors: only in .*classifier\.dense\.bias"):
        mm.merge(method, sds, weights, base)


def test_merge_output_is_checked_before_writing(toy_sources):
    config = AutoConfig.from_pretrained(toy_sources["de-DE"])
    merged = models.load_state_dict(toy_sources["de-DE"])
    checks.check_output(config, merged, "merged model for X")  # a real model passes
    merged["classifier.out_proj.bias"] = merged["classifier.out_proj.bias"].clone()
    merged["classifier.out_proj.bias"][3] = float("inf")
    with pytest.raises(ValueError, match=r"merged model for X: tensor classifier\.out_proj\.bias has 1 non-finite"):
        checks.check_output(config, merged, "merged model for X")
    merged["classifier.out_proj.bias"][3] = 3e38  # finite values whose float32 sum overflows still pass
    merged["classifier.out_proj.bias"][4] = 3e38
    checks.check_output(config, merged, "merged model for X")
    del merged["classifier.out_proj.bias"]
    with pytest.raises(
        ValueError,
        match=r"merged model for X: weights do not match.*missing tensors "
        r"\['classifier\.out_proj\.bias'\]",
    ):
        checks.check_output(config, merged, "merged model for X")


def test_a_model_missing_a_tensor_is_refused_everywhere(toy_sources, tmp_path):
    folder = _copy_model(
        toy_sources["fr-FR"],
        models.source_path("it-IT", tmp_path),
        edit_tensors=lambda sd: sd.pop("classifier.dense.bias"),
    )
    message = rf"model {folder}: weights do not match the config .*missing tensors \['classifier\.dense\.bias'\]"
    with pytest.raises(ValueError, match=message):  # evaluation (never zero-filled)
        evaluate.evaluate(folder, "fr-FR", "dev", data="toy", max_seq_length=64)
    shutil.copytree(toy_sources["de-DE"], models.source_path("de-DE", tmp_path))
    with pytest.raises(ValueError, match=message):  # ensembles, even from cached logits
        ensemble.source_logits("fr-FR", ["de-DE", "it-IT"], models_dir=tmp_path, data="toy", max_seq_length=64)
    with pytest.raises(ValueError, match=message):  # merging: the same check
        mm.merge_models(
            "linear", {"de-DE": toy_sources["de-DE"], "it-IT": folder}, {"de-DE": 1, "it-IT": 1}, tmp_path / "merged"
        )


def test_config_sizes_that_disagree_with_the_weights_name_the_model(toy_sources, tmp_path):
    folder = _copy_model(
        toy_sources["fr-FR"],
        tmp_path / "wrong-config",
        edit_config=lambda cfg: cfg.update(intermediate_size=2 * cfg["intermediate_size"]),
    )
    with pytest.raises(
        ValueError,
        match=rf"model {folder}: weights do not match the config .*shapes \(weights vs "
        r"config\) differ for \{'roberta\.encoder\.layer\.0\.intermediate",
    ):
        models.load_classifier(folder)


def test_a_vanished_model_folder_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(
        ValueError,
        match=rf"model {tmp_path / 'gone' / 'merged'} is neither an existing folder "
        r"nor a hub id",
    ):
        models.load_classifier(tmp_path / "gone" / "merged")


# --- 5. no orphans; fewer sources than asked -----------------------------------------------------------


def test_stale_temporaries_of_a_killed_writer_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "model"
    # a writer killed while saving: its temporary (with a partial file) stays behind
    code = (
        "import os, sys\nfrom mu import paths\n"
        "with paths.atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.mkdir(); (tmp / 'model.safetensors').write_bytes(b'0' * 1000)\n"
        "    os._exit(9)\n"
    )
    killed = [sys.executable, "-c", code, str(target)]
    subprocess.run(killed, check=False)
    orphans = list(tmp_path.glob(".model.*.tmp"))
    assert len(orphans) == 1 and (orphans[0] / "out" / "model.safetensors").is_file() and not target.exists()
    # the next write to the same place removes it; a live writer's temporary (this process) is kept
    with paths.atomic_path(target) as live:
        assert not orphans[0].exists()
        live.mkdir()
        (live / "a").write_text("1")
        subprocess.run(killed, check=False)  # another writer killed meanwhile: it left ours alone
        assert live.is_dir()
        [second] = [p for p in tmp_path.glob(".model.*.tmp") if p != live.parent]
        assert paths.remove_stale_temporaries(target) == [second]
        assert live.is_dir() and not second.exists()
    assert not list(tmp_path.glob(".model.*")) and (target / "a").read_text() == "1"


def test_a_killed_writer_not_yet_reaped_is_dead(tmp_path):
    """A writer killed with its parent is adopted, and stays a zombie until reaped: its temporary is stale."""
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = tmp_path / f".model.{paths._OWNER}-{writer.pid}-x.tmp"
        left.mkdir()
        assert paths.remove_stale_temporaries(tmp_path / "model") == []  # running: its owner may still write
        writer.kill()
        deadline = time.time() + 10
        while psutil.Process(writer.pid).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
            time.sleep(0.05)
        assert paths.remove_stale_temporaries(tmp_path / "model") == [left]  # killed, not reaped (no wait yet)
    finally:
        writer.kill()
        writer.wait()


def test_num_languages_above_the_sources_is_a_recorded_warning():
    available = ["de-DE", "nl-NL", "fr-FR"]
    with pytest.warns(notes.MuWarning, match=r"num_languages=5 for af-ZA, but only 3 source\(s\)"):
        w = similarity.select("af-ZA", available, mode="similarity", num_languages=5)
    assert sorted(w) == sorted(available)
    record = paths.read_json(report.save("03_merging", "af-ZA", "t-warn", results={}))
    assert any("num_languages=5 for af-ZA" in m for m in record["warnings"])
