"""``python -m mu weights`` / ``python -m mu merge`` (mu.build.cli), in process on tiny XLM-R sources: the URIEL weights
for languages outside MASSIVE, the merged folder (loaded by transformers' pipeline, equal to mu.merge.merge_models),
mergekit.yaml replayed by mergekit, the model card, bad inputs (nothing written), and hub ids resolved through a
Hugging Face cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mu import codes, similarity
from mu import merge as mm
from mu.__main__ import main
from mu.build import export
from mu.langs.locales import LOCALES

SOURCES = ["de-DE", "nl-NL", "fr-FR", "es-ES"]
TEXTS = ["wake me up at nine", "play some jazz", "what is the weather", "turn the lights off"]


@pytest.fixture(scope="module")
def sources(perturbed_sources, toy_base, mu_root) -> dict[str, Path]:
    """{locale: folder} named after mu's pattern, each recording (as mu's training does) its locale and base."""
    dirs = perturbed_sources(SOURCES, "models/cli", seed=11)
    for loc, d in dirs.items():
        (d / "training_args.json").write_text(json.dumps({"params": {"locale": loc, "base_model": str(toy_base)}}))
    return dirs


@pytest.fixture
def pattern(sources) -> str:
    return str(next(iter(sources.values())).parent / "xlm-roberta-base_massive_k_{locale}")


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:].split("\n---", 1)[0])


def pipeline_predictions(folder: Path) -> list:
    from transformers import pipeline

    return pipeline("text-classification", model=str(folder), device="cpu")(TEXTS)


def same_tensors(a: Path, b: Path, atol: float = 0.0) -> None:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert set(x) == set(y)
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=atol, msg=k)


# --- weights ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code,name", [("yor", "Yoruba"), ("eus", "Basque"), ("quy", None)])
def test_weights_for_languages_outside_massive(capsys, code, name):
    rc, out, _ = run(capsys, "weights", code, "--format", "json")
    assert rc == 0
    got = json.loads(out)
    assert got["target"] == {"label": code, "code": code, "locale": None, "name": name}
    assert got["feature_set"] == similarity.DEFAULT_FEATURE_SET and got["similarity"] == "cosine"
    assert len(got["sources"]) == 51 and {r["source"] for r in got["sources"]} == set(LOCALES)
    assert len(got["weights"]) == 5 and set(got["weights"]) <= set(LOCALES)
    assert sum(got["weights"].values()) == pytest.approx(1.0)
    for r in got["sources"]:
        assert r["distance"] == pytest.approx(1 - r["similarity"])
        assert (r["weight"] > 0) == (r["source"] in got["weights"])


def test_weights_table_names_feature_set_and_distance(capsys):
    rc, out, _ = run(capsys, "weights", "Yoruba", "--num-languages", "3", "--top-k", "10")
    assert rc == 0
    assert "target: yor (Yoruba)" in out and "cosine of lang2vec 'syntax_knn+phonology_knn+inventory_knn'" in out
    assert "distance = 1 - cosine" in out and "top-K 10" in out and "weights {source: weight}:" in out
    assert len(out.split("weights {source: weight}:")[1].strip().splitlines()) == 3


def test_weights_of_a_massive_target_leave_it_out_and_equal_mu_similarity(capsys):
    rc, out, err = run(capsys, "weights", "sw-ke", "--format", "json")
    got = json.loads(out)
    assert rc == 0 and got["excluded"] == ["sw-KE"] and "sw-KE" not in {r["source"] for r in got["sources"]}
    assert "left out as the target's own language: sw-KE" in err
    ref = similarity.weights("sw-KE", LOCALES, similarity_source="dense")
    assert list(got["weights"]) == list(ref)
    assert got["weights"] == pytest.approx(ref, rel=1e-12)


def test_code_resolution():
    assert codes.resolve("yo").code == "yor" and codes.resolve("yo-NG").code == "yor"
    assert codes.resolve("Basque").code == "eus" and codes.resolve("SW-KE").label == "sw-KE"
    assert codes.resolve("zh-TW").code == "cmn" and codes.resolve("de-DE").iso639_1 == "de"


def test_unknown_code_names_the_nearest_codes(capsys, tmp_path):
    rc, _, err = run(capsys, "weights", "yorb")
    assert rc == 2 and "unknown language 'yorb'" in err and "yor (Yoruba)" in err
    rc, _, err = run(capsys, "weights", "Quechua")
    assert rc == 2 and "'que'" in err and "quy" in err
    rc, _, err = run(capsys, "merge", "--target", "yorb", "--out", tmp_path / "x" / "out")
    assert rc == 2 and "yor (Yoruba)" in err and not (tmp_path / "x").exists()


def test_a_folder_source_gets_its_language_from_its_card_or_the_flag(capsys, sources, tmp_path):
    anon = tmp_path / "some-model"
    shutil.copytree(sources["de-DE"], anon)
    (anon / "training_args.json").unlink()
    rc, _, err = run(capsys, "weights", "af-ZA", "--sources", anon, "nl-NL")
    assert rc == 2 and "--source-lang" in err and str(anon) in err
    rc, out, _ = run(
        capsys, "weights", "af-ZA", "--sources", anon, "nl-NL", "--source-lang", f"{anon}=deu", "--format", "json"
    )
    assert rc == 0 and set(json.loads(out)["weights"]) == {"deu", "nl-NL"}
    (anon / "README.md").write_text("---\nlanguage: [de]\nlibrary_name: transformers\n---\n# a model\n")
    rc, out, _ = run(capsys, "weights", "af-ZA", "--sources", anon, "nl-NL", "--format", "json")
    assert rc == 0 and set(json.loads(out)["weights"]) == {"deu", "nl-NL"}


# --- merge -----------------------------------------------------------------------------------------------


def test_merge_end_to_end_equals_the_library_merge(capsys, sources, pattern, toy_base, tmp_path):
    """The sources' pattern, URIEL weights, TIES on the base the sources declare: the folder loads in transformers'
    pipeline and predicts what mu.merge.merge_models' own merge predicts (same tensors); the card has every field."""
    out = tmp_path / "af"
    argv = [
        "merge",
        "--target",
        "af-ZA",
        "--out",
        out,
        "--source-pattern",
        pattern,
        "--num-languages",
        "3",
        "--method",
        "ties",
        "--set",
        "density=0.3",
    ]
    rc, stdout, err = run(capsys, *argv)
    assert rc == 0, err
    assert f"wrote {out}" in stdout
    weights = similarity.weights("af-ZA", SOURCES, num_languages=3, similarity_source="dense")
    lib = mm.merge_models(
        "ties", {k: sources[k] for k in weights}, weights, tmp_path / "lib", base_model=toy_base, density=0.3
    )
    same_tensors(out, lib)
    assert pipeline_predictions(out) == pipeline_predictions(lib)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label[0] == "datetime_query" and model.config.label2id["datetime_query"] == 0
    details = json.loads((out / "merge_details.json").read_text())
    assert details["weights"] == pytest.approx(weights) and details["knobs"]["density"] == 0.3

    meta = front_matter(out / "README.md")
    assert meta["library_name"] == "transformers" and {"merge", "mu", "ties"} <= set(meta["tags"])
    assert meta["base_model"] == [str(sources[k]) for k in weights] and meta["language"] == ["af"]
    card = (out / "README.md").read_text()
    import mu

    for needle in [
        "Afrikaans (af-ZA)",
        "syntax_knn+phonology_knn+inventory_knn",
        "distance = 1 − similarity",
        "`ties`",
        "density=0.3",
        str(toy_base),
        "declared by the sources",
        f"mu {mu.__version__}",
        "python -m mu " + " ".join(str(a) for a in argv[:4]),
        'pipeline("text-classification"',
        "mergekit.yaml",
    ]:
        assert needle in card, needle
    for loc, w in weights.items():
        sim = similarity.compute_matrix(["af-ZA", loc]).loc["af-ZA", loc]
        assert f"| {loc} | `{sources[loc]}` |" in card and f"{w:.6f}" in card and f"{sim:.4f}" in card


@pytest.mark.parametrize(
    "method,extra",
    [
        ("linear", []),
        ("ties", ["--set", "density=0.6", "--set", "lambda=0.9"]),
        ("slerp", ["--weights", "de-DE=0.3", "nl-NL=0.7"]),
    ],
)
def test_mergekit_yaml_replays_to_the_same_tensors(capsys, sources, toy_base, tmp_path, method, extra):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    out = tmp_path / method
    given = [sources[k] for k in SOURCES[:3]]  # folders; their languages from training_args.json
    rc, _, err = run(
        capsys,
        "merge",
        "--target",
        "yor",
        "--out",
        out,
        "--sources",
        *given,
        "--method",
        method,
        "--base",
        toy_base,
        *extra,
    )
    assert rc == 0, err
    config = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert config["merge_method"] == method
    logging.disable(logging.WARNING)  # mergekit infers the architecture noisily
    try:
        run_merge(
            MergeConfiguration.model_validate(config),
            str(tmp_path / "mk"),
            options=MergeOptions(quiet=True, write_model_card=False),
        )
    finally:
        logging.disable(logging.NOTSET)
    same_tensors(out, tmp_path / "mk", atol=1e-6)


@pytest.mark.parametrize("method", [m for m in export.MERGEKIT_METHODS if m not in export.RANDOM_DROPS])
def test_every_deterministic_mergekit_config_replays_to_mus_merge(sources, toy_base, tmp_path, method):
    """mu.build.export's translation for each method mergekit has (DARE / DELLA draw their masks apart): mergekit
    on the written config gives merge_models' tensors."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    w = {"de-DE": 0.5, "nl-NL": 0.3, "fr-FR": 0.2}
    if method in mm.PAIRWISE:
        w = {"de-DE": 0.35, "nl-NL": 0.65}
    if method == "karcher":
        w = {k: 1 / 3 for k in w}
    base = toy_base if method in mm.USES_BASE else None
    refs = {k: str(sources[k]) for k in w}
    ours = mm.merge_models(method, refs, w, tmp_path / "mu", base_model=base)
    knobs = json.loads((ours / "merge_details.json").read_text())["knobs"]
    config, _ = export.mergekit_config(method, refs, w, knobs, str(base) if base else None)
    logging.disable(logging.WARNING)
    try:
        run_merge(
            MergeConfiguration.model_validate(yaml.safe_load(export.mergekit_yaml(config, "test"))),
            str(tmp_path / "mk"),
            options=MergeOptions(quiet=True, write_model_card=False),
        )
    finally:
        logging.disable(logging.NOTSET)
    same_tensors(ours, tmp_path / "mk", atol=1e-6)


def test_dry_run_prints_the_plan_and_writes_nothing(capsys, pattern, tmp_path):
    out = tmp_path / "plan"
    rc, stdout, _ = run(
        capsys,
        "merge",
        "--target",
        "eus",
        "--out",
        out,
        "--source-pattern",
        pattern,
        "--method",
        "dare_ties",
        "--set",
        "density=0.4",
        "--dry-run",
    )
    assert rc == 0 and not out.exists()
    for needle in [
        "target: eus (Basque)",
        "method: dare_ties",
        "'density': 0.4",
        "memory estimate: peak",
        "base: ",
        "declared by the sources",
        "dry run: nothing written",
    ]:
        assert needle in stdout, needle
    assert sum(line.startswith(tuple(SOURCES)) for line in stdout.splitlines()) == 4


def test_an_encoder_only_base_gets_the_sources_mean_head(capsys, sources, toy_base, tmp_path):
    """A base without a classification head (as xlm-roberta-base for the published models): its encoder, and the
    weighted mean of the sources' heads, so task arithmetic merges the heads linearly; no mergekit equivalent."""
    from transformers import AutoConfig, XLMRobertaForMaskedLM

    config = AutoConfig.from_pretrained(toy_base)
    config.architectures = ["XLMRobertaForMaskedLM"]
    mlm = XLMRobertaForMaskedLM(config)
    base_sd = load_file(str(toy_base / "model.safetensors"))
    mlm.load_state_dict({**mlm.state_dict(), **{k: v for k, v in base_sd.items() if k.startswith("roberta.")}})
    encoder = tmp_path / "encoder"
    mlm.save_pretrained(encoder)
    shutil.copy(toy_base / "tokenizer.json", encoder)
    out = tmp_path / "ta"
    rc, stdout, err = run(
        capsys,
        "merge",
        "--target",
        "yor",
        "--out",
        out,
        "--sources",
        *[sources[k] for k in SOURCES],
        "--weighting",
        "average",
        "--num-languages",
        "2",
        "--method",
        "task_arithmetic",
        "--set",
        "lambda=0.5",
        "--base",
        encoder,
    )
    assert rc == 0, err
    assert "no mergekit.yaml" in stdout and not (out / "mergekit.yaml").exists()
    merged = load_file(str(out / "model.safetensors"))
    chosen = list(json.loads((out / "merge_details.json").read_text())["weights"])
    srcs = {k: load_file(str(sources[k] / "model.safetensors")) for k in chosen}
    for key in merged:
        mean = sum(srcs[k][key] for k in chosen) / len(chosen)
        expected = mean if key.startswith("classifier.") else base_sd[key] + 0.5 * (mean - base_sd[key])
        torch.testing.assert_close(merged[key], expected, rtol=0, atol=1e-6, msg=key)
    assert "weighted mean of the sources' heads" in (out / "README.md").read_text()


def test_evaluate_reports_the_merge_beside_the_best_source(capsys, sources, pattern, tmp_path):
    from mu import data

    dev = data.load_split("af-ZA", "dev", "toy")
    jsonl = tmp_path / "af.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"utt": t, "intent": data.INTENTS[y]}) + "\n" for t, y in zip(dev["text"], dev["label"]))
    )
    for spec, data_arg in ((jsonl, []), ("af-ZA", ["--data", "toy"])):
        out = tmp_path / f"ev-{len(data_arg)}"
        rc, stdout, err = run(
            capsys,
            "merge",
            "--target",
            "af-ZA",
            "--out",
            out,
            "--source-pattern",
            pattern,
            "--num-languages",
            "2",
            "--evaluate",
            spec,
            *data_arg,
        )
        assert rc == 0, err
        ev = json.loads((out / "evaluation.json").read_text())
        assert ev["n"] == len(dev) and set(ev["sources"]) == set(
            json.loads((out / "merge_details.json").read_text())["weights"]
        )
        assert ev["sources"][ev["best_source"]] == max(ev["sources"].values())
        assert f"merge {ev['merged']:.4f}, best single source {ev['best_source']}" in stdout
        assert "## Evaluation" in (out / "README.md").read_text()
    assert ev["data"] == "MASSIVE af-ZA dev (toy)"


# --- bad inputs: a clear error, nothing written ----------------------------------------------------------


def _variant(src: Path, where: Path, edit) -> Path:
    shutil.copytree(src, where)
    edit(where)
    return where


def _relabel(folder: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"]["0"] = "wake_up"
    cfg["label2id"] = {v: int(k) for k, v in cfg["id2label"].items()}
    (folder / "config.json").write_text(json.dumps(cfg))


def _no_tokenizer(folder: Path) -> None:
    for f in folder.glob("tokenizer*"):
        f.unlink()


@pytest.mark.parametrize("case", ["labels", "tokenizer", "out_is_file", "non_empty", "knob", "knob_value", "no_base"])
def test_bad_inputs_give_clear_errors_and_write_nothing(capsys, sources, tmp_path, case):
    given = [sources["de-DE"], sources["nl-NL"]]
    out = tmp_path / "out"
    extra: list = []
    if case == "labels":
        given.append(_variant(sources["fr-FR"], tmp_path / "relabelled_fr-FR", _relabel))
        expect = "different label sets"
    elif case == "tokenizer":
        given.append(_variant(sources["fr-FR"], tmp_path / "untokenized_fr-FR", _no_tokenizer))
        expect = "has no tokenizer"
    elif case == "out_is_file":
        out.write_text("x")
        expect = "is a file"
    elif case == "non_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        expect = "not empty; give --force"
    elif case == "knob":
        extra, expect = ["--method", "ties", "--set", "gamma=0.1"], "does not take ['gamma']"
    elif case == "knob_value":
        extra, expect = (
            ["--method", "ties", "--set", "density=1.5"],
            "density=1.5 is not valid; valid: a number > 0 and <= 1",
        )
    else:
        shutil.copytree(sources["es-ES"], tmp_path / "es_undeclared")
        (tmp_path / "es_undeclared" / "training_args.json").unlink()
        given = [tmp_path / "es_undeclared"]
        extra, expect = ["--method", "ties", "--source-lang", f"{given[0]}=es-ES"], "needs the sources' pretrained base"
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, err = run(
        capsys,
        "merge",
        "--target",
        "yor",
        "--out",
        out,
        "--sources",
        *given,
        "--weighting",
        "average",
        "--num-languages",
        "3",
        *extra,
    )
    assert rc == 2 and expect in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out, no temporary left beside it
    if case == "non_empty":
        assert run(capsys, "merge", "--target", "yor", "--out", out, "--sources", *given, "--force")[0] == 0
        assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


# --- the hub path ----------------------------------------------------------------------------------------


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> str:
    """``folder`` as huggingface_hub caches a download of ``repo_id`` (its documented layout): files in
    ``blobs/<hash>``, ``snapshots/<commit>/<file>`` symlinks to them, ``refs/main`` holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    for f in sorted(folder.iterdir()):
        content = f.read_bytes()
        blob = hashlib.sha256(content).hexdigest()
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / blob).write_bytes(content)
        link = repo / "snapshots" / commit / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo / "blobs" / blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_hub_ids_resolve_through_the_huggingface_cache(capsys, sources, toy_base, tmp_path, monkeypatch):
    """Hub ids (the default --source-pattern) go through huggingface_hub's snapshot_download, offline, from a cache
    in huggingface_hub's layout (checked by its own scan_cache_dir): the merge equals the one of the local folders."""
    from huggingface_hub import constants, scan_cache_dir, snapshot_download

    cache = tmp_path / "hub"
    commits = {
        loc: put_in_hub_cache(cache, f"haryoaw/xlm-roberta-base_massive_k_{loc}", sources[loc])
        for loc in ("de-DE", "nl-NL")
    }
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    info = scan_cache_dir(cache)
    assert not info.warnings and {r.repo_id for r in info.repos} == {
        "haryoaw/xlm-roberta-base_massive_k_de-DE",
        "haryoaw/xlm-roberta-base_massive_k_nl-NL",
    }
    assert all(len(r.revisions) == 1 and "main" in next(iter(r.revisions)).refs for r in info.repos)
    snap = Path(snapshot_download("haryoaw/xlm-roberta-base_massive_k_de-DE"))
    assert snap == cache / "models--haryoaw--xlm-roberta-base_massive_k_de-DE" / "snapshots" / commits["de-DE"]
    assert (snap / "model.safetensors").read_bytes() == (sources["de-DE"] / "model.safetensors").read_bytes()

    out = tmp_path / "hub-merge"
    rc, _, err = run(
        capsys,
        "merge",
        "--target",
        "af-ZA",
        "--out",
        out,
        "--sources",
        "de-DE",
        "nl-NL",
        "--weights",
        "de-DE=0.6",
        "nl-NL=0.4",
    )
    assert rc == 0, err
    assert front_matter(out / "README.md")["base_model"] == [
        f"haryoaw/xlm-roberta-base_massive_k_{loc}" for loc in ("de-DE", "nl-NL")
    ]
    lib = mm.merge_models(
        "linear", {k: sources[k] for k in ("de-DE", "nl-NL")}, {"de-DE": 0.6, "nl-NL": 0.4}, tmp_path / "lib"
    )
    same_tensors(out, lib)
    rc, _, err = run(
        capsys,
        "merge",
        "--target",
        "af-ZA",
        "--out",
        tmp_path / "missing",
        "--sources",
        "fr-FR",
        "--weights",
        "fr-FR=1",
    )
    assert rc == 2 and "haryoaw/xlm-roberta-base_massive_k_fr-FR could not be fetched" in err
    assert not (tmp_path / "missing").exists()
