"""Merging tiny XLM-R classifiers: every method end to end, merge_models on disk, statistics, bad inputs."""

from __future__ import annotations

import weakref

import pytest
import torch
from transformers import AutoModelForSequenceClassification, XLMRobertaConfig, XLMRobertaForSequenceClassification

from mu import data, models, paths
from mu import merge as mm
from mu.merge import lazy

LOCALES = ["de-DE", "nl-NL", "en-US"]


def _tiny_config(**over) -> XLMRobertaConfig:
    kw = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        num_labels=60,
        id2label=dict(data.ID2LABEL),
        label2id=dict(data.LABEL2ID),
    )
    kw.update(over)
    return XLMRobertaConfig(**kw)


def _finetuned(base: dict, seed: int, scale: float = 0.02) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in base.items()}


@pytest.fixture(scope="module")
def in_memory():
    torch.manual_seed(0)
    config = _tiny_config()
    base = XLMRobertaForSequenceClassification(config).state_dict()
    sources = {loc: _finetuned(base, i + 1) for i, loc in enumerate(LOCALES)}
    return config, base, sources


def _stats_for(method: str, config, sources: dict) -> dict:
    g = torch.Generator().manual_seed(7)
    if method == "fisher_dataset":
        return {
            "fishers": {
                loc: {k: torch.rand(v.shape, generator=g) for k, v in sd.items()} for loc, sd in sources.items()
            }
        }
    if method == "regmean":
        linears = [
            n for n, m in XLMRobertaForSequenceClassification(config).named_modules() if isinstance(m, torch.nn.Linear)
        ]
        grams = {}
        for loc, sd in sources.items():
            grams[loc] = {}
            for n in linears:
                x = torch.randn(200, sd[f"{n}.weight"].shape[1], generator=g)
                grams[loc][f"{n}.weight"] = x.T @ x / 200
        return {"grams": grams}
    if method == "adamerging":  # coefficients as mu.merge.adamerging.fit returns them: {locale: {tensor: λ}}
        return {"coefficients": {loc: {k: 0.2 + 0.1 * i for k in sd} for i, (loc, sd) in enumerate(sources.items())}}
    return {}


@pytest.mark.parametrize("method", sorted(mm.METHODS))
def test_every_method_merges_tiny_xlmr_and_loads_strict(method, in_memory):
    config, base, sources = in_memory
    if method in mm.PAIRWISE:
        sources = {k: sources[k] for k in LOCALES[:2]}
    weights = dict(zip(sources, [0.5, 0.3, 0.2][: len(sources)]))
    merged = mm.merge(method, sources, weights, base, **_stats_for(method, config, sources))
    model = XLMRobertaForSequenceClassification(config)
    model.load_state_dict(merged, strict=True)
    logits = model.eval()(input_ids=torch.tensor([[0, 5, 6, 7, 2]])).logits
    assert logits.shape == (1, 60) and torch.isfinite(logits).all()
    changed = [k for k in merged if not torch.equal(merged[k], sources[LOCALES[0]][k])]
    assert changed, f"{method} returned the first source unchanged"


def test_merge_streams_bounded_chunks(in_memory, tmp_path, monkeypatch):
    """With lazily read inputs, linear reads every chunk into reused buffers (never a whole tensor); TIES also
    holds the base tensor and one source's tensor (for its magnitude threshold); the result equals the in-memory
    merge."""
    from safetensors.torch import save_file

    from mu.merge import chunks

    config, base, sources = in_memory
    files = {}
    for name, sd in {**sources, "base": base}.items():
        files[name] = tmp_path / f"{name}.safetensors"
        save_file(sd, str(files[name]))
    live = {"now": 0, "max": 0}

    def track(t):
        live["now"] += t.numel()
        live["max"] = max(live["max"], live["now"])
        weakref.finalize(t, lambda n=t.numel(): live.__setitem__("now", live["now"] - n))
        return t

    class Counting(lazy.LazyStateDict):
        def read(self, key, start=None, stop=None, *, out=None):
            t = super().read(key, start, stop, out=out)
            return t if out is not None else track(t)  # reads into a reused buffer allocate nothing

    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 1000)
    lazies = {name: Counting.from_file(f) for name, f in files.items()}
    largest = max(v.numel() for v in base.values())
    w = {k: 1.0 for k in sources}
    for method, bound in (("linear", 0), ("ties", 2 * largest)):
        live["max"] = live["now"] = 0
        merged = mm.merge(method, {k: lazies[k] for k in sources}, w, lazies["base"], device="cpu")
        assert live["max"] <= bound, (method, live["max"], bound)
        expected = mm.merge(method, sources, w, base, device="cpu")
        assert set(merged) == set(base)
        for key in base:
            assert torch.equal(merged[key], expected[key]), key


# ----------------------------------------------------------------------------- on disk


@pytest.fixture(scope="module")
def on_disk(toy_base):
    """The toy base (real tokenizer, 60 labels) and three perturbed 'fine-tuned' sources saved beside it."""
    base_dir = toy_base
    model, tokenizer = models.load_classifier(base_dir)
    base_sd = {k: v.clone() for k, v in model.state_dict().items()}
    dirs = {}
    for i, loc in enumerate(LOCALES):
        model.load_state_dict(_finetuned(base_sd, 10 + i))
        dirs[loc] = models.save_classifier(model, tokenizer, paths.models_dir("test_merge", f"src_{loc}"))
    return base_dir, dirs


def _load(folder):
    return AutoModelForSequenceClassification.from_pretrained(folder).state_dict()


def test_merge_models_writes_hf_folder_and_skips_rerun(on_disk):
    base_dir, dirs = on_disk
    weights = {"de-DE": 0.5, "nl-NL": 0.3, "en-US": 0.2}
    out = mm.merge_models(
        "ties", dirs, weights, "models/test_merge/ties", base_model=base_dir, mode="similarity", density=0.4
    )
    assert out == paths.models_dir("test_merge", "ties")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "merge_details.json", "merge_details.txt"):
        assert (out / name).is_file(), name
    details = paths.read_json(out / "merge_details.json")
    assert details["method"] == "ties" and details["mode"] == "similarity"
    assert details["knobs"] == {"density": 0.4, "lambda_": 1.0, "rescale": False}
    assert details["weights"] == pytest.approx(weights) and details["base_used"] is True
    assert set(details["inputs"]) == set(dirs) | {"<base>"} and all(
        len(v["sha256"]) == 64 for v in details["inputs"].values()
    )
    assert "torch" in details["versions"] and "density" in (out / "merge_details.txt").read_text()
    # same as merging the loaded state dicts in memory; loads with strict=True
    expected = mm.merge("ties", {k: _load(d) for k, d in dirs.items()}, weights, _load(base_dir), density=0.4)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    model.load_state_dict(expected, strict=True)
    for k, v in _load(out).items():
        torch.testing.assert_close(v, expected[k])
    # rerun with identical inputs and parameters: nothing is rewritten
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert (
        mm.merge_models(
            "ties", dirs, weights, "models/test_merge/ties", base_model=base_dir, mode="similarity", density=0.4
        )
        == out
    )
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    # a different parameter re-merges (and replaces the folder atomically)
    mm.merge_models("ties", dirs, weights, "models/test_merge/ties", base_model=base_dir, density=0.8)
    assert paths.read_json(out / "merge_details.json")["knobs"]["density"] == 0.8
    # so does a changed input: nl-NL is saved again with other weights
    model, tokenizer = models.load_classifier(dirs["nl-NL"])
    model.load_state_dict(_finetuned(_load(base_dir), 99))
    models.save_classifier(model, tokenizer, dirs["nl-NL"])
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    mm.merge_models("ties", dirs, weights, "models/test_merge/ties", base_model=base_dir, density=0.8)
    assert (out / "model.safetensors").stat().st_mtime_ns != stamp
    new_sha = paths.read_json(out / "merge_details.json")["inputs"]["nl-NL"]["sha256"]
    assert new_sha != details["inputs"]["nl-NL"]["sha256"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("head, embeddings", [("merge", "merge"), ("nl-NL", "de-DE")])
def test_merge_models_head_and_embeddings_choice(on_disk, head, embeddings):
    base_dir, dirs = on_disk
    out = mm.merge_models(
        "linear",
        dirs,
        {k: 1.0 for k in dirs},
        f"models/test_merge/linear-{head}-{embeddings}",
        head=head,
        embeddings=embeddings,
    )
    merged, src = _load(out), {k: _load(d) for k, d in dirs.items()}
    details = paths.read_json(out / "merge_details.json")
    assert (details["head"], details["embeddings"]) == (head, embeddings)
    for key, value in merged.items():
        mean = sum(sd[key] for sd in src.values()) / 3
        owner = (
            head if key.startswith("classifier.") else embeddings if key.startswith("roberta.embeddings.") else "merge"
        )
        torch.testing.assert_close(value, mean if owner == "merge" else src[owner][key])


@pytest.mark.parametrize("method, knob", [("fisher_dataset", {}), ("regmean", {"alpha": 0.5})])
def test_merge_models_with_data_statistics(on_disk, method, knob):
    base_dir, dirs = on_disk
    kw = dict(
        data="toy",
        fisher_num_examples=16,
        fisher_batch_size=4,
        regmean_num_examples=16,
        regmean_batch_size=8,
        max_seq_length=32,
        **knob,
    )
    out = mm.merge_models(method, dirs, {k: 1.0 for k in dirs}, f"models/test_merge/{method}", **kw)
    details = paths.read_json(out / "merge_details.json")
    assert set(details["statistics"]) == set(dirs)
    assert details["statistics_params"]["num_examples"] == 16
    model = AutoModelForSequenceClassification.from_pretrained(out)
    model.load_state_dict(_load(out), strict=True)
    cached = sorted(paths.cache_dir("merge_stats").iterdir())
    # another merge over the same sources reuses the cached statistics
    mm.merge_models(method, dirs, {"de-DE": 0.6, "nl-NL": 0.2, "en-US": 0.2}, f"models/test_merge/{method}-2", **kw)
    assert sorted(paths.cache_dir("merge_stats").iterdir()) == cached


def test_fisher_diagonal_batch_one_is_per_example_empirical_fisher(on_disk):
    base_dir, dirs = on_disk
    model, tokenizer = models.load_classifier(dirs["de-DE"])
    train = data.load_split("de-DE", "train", "toy")
    fisher = mm.fisher_diagonal(
        model, tokenizer, train, num_examples=5, batch_size=1, max_seq_length=32, normalize=False, device="cpu"
    )
    sample = train.shuffle(seed=42).select(range(5))
    params = dict(model.named_parameters())
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    for row in sample:
        enc = tokenizer([row["text"]], truncation=True, max_length=32, return_tensors="pt")
        logp = torch.log_softmax(model(**enc).logits, -1)[0, row["label"]]
        grads = torch.autograd.grad(-logp, list(params.values()), allow_unused=True)
        for (k, _), g in zip(params.items(), grads):
            if g is not None:
                expected[k] += g.square() / 5
    for k in expected:
        torch.testing.assert_close(fisher[k], expected[k], rtol=1e-4, atol=1e-10)
    normed = mm.fisher_diagonal(model, tokenizer, train, num_examples=5, batch_size=1, max_seq_length=32, device="cpu")
    total = sum(v.sum() for v in normed.values()) / sum(v.numel() for v in normed.values())
    assert float(total) == pytest.approx(1.0, rel=1e-4)


def test_regmean_grams_are_input_gram_matrices(on_disk):
    base_dir, dirs = on_disk
    model, tokenizer = models.load_classifier(dirs["en-US"])
    train = data.load_split("en-US", "train", "toy")
    grams = mm.regmean_grams(model, tokenizer, train, num_examples=6, batch_size=4, max_seq_length=32, device="cpu")
    linears = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(grams) == linears
    enc = tokenizer(
        list(train.shuffle(seed=42).select(range(6))["text"]),
        truncation=True,
        max_length=32,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = model.roberta(**enc, output_hidden_states=True).hidden_states
    # layer 0's query sees the embedding output on real (non-padding) tokens
    x = hidden[0][enc["attention_mask"].bool()]
    torch.testing.assert_close(
        grams["roberta.encoder.layer.0.attention.self.query.weight"], x.T @ x / len(x), rtol=1e-4, atol=1e-5
    )
    # the head's dense layer sees the <s> token of the last layer
    cls = hidden[-1][:, 0]
    torch.testing.assert_close(grams["classifier.dense.weight"], cls.T @ cls / len(cls), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(weights={"de-DE": -1.0, "nl-NL": 1.0, "en-US": 1.0}), "non-negative"),
        (dict(weights={"de-DE": float("nan"), "nl-NL": 1.0, "en-US": 1.0}), "finite"),
        (dict(weights={"de-DE": 0.0, "nl-NL": 0.0, "en-US": 0.0}), "sum to zero"),
        (dict(method="ties", base_model=None), "needs the base"),
        (dict(method="fisher_dataset"), "needs data"),
        (dict(method="mean"), "unknown merge method"),
        (dict(density=0.5), r"does not take \['density'\]"),
        (dict(head="fr-FR"), "head='fr-FR'"),
        (dict(incompatible="num_labels"), "incompatible: num_labels"),
        (dict(incompatible="hidden_size"), "incompatible: hidden_size"),
    ],
)
def test_bad_inputs_are_clear_errors_and_write_nothing(on_disk, change, match):
    base_dir, dirs = on_disk
    dirs = dict(dirs)
    bad = change.pop("incompatible", None)
    if bad:
        model, tokenizer = models.load_classifier(dirs["en-US"])
        config = model.config.to_dict()
        if bad == "num_labels":
            config.update(id2label={i: f"x{i}" for i in range(3)}, label2id={f"x{i}": i for i in range(3)})
        else:
            config.update(hidden_size=config["hidden_size"] // 2)
        model = XLMRobertaForSequenceClassification(XLMRobertaConfig(**config))
        dirs["en-US"] = models.save_classifier(model, tokenizer, paths.models_dir("test_merge", f"bad_{bad}"))
    kw = dict(method="linear", weights={k: 1.0 for k in dirs}, base_model=base_dir)
    kw.update(change)
    out = paths.models_dir("test_merge", "never")
    with pytest.raises(ValueError, match=match):
        mm.merge_models(kw.pop("method"), dirs, kw.pop("weights"), out, **kw)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".never")]


def test_missing_model_folder_or_unreachable_hub_id_is_a_value_error(on_disk):
    base_dir, dirs = on_disk
    w = {"de-DE": 1.0, "xx": 1.0}
    with pytest.raises(ValueError, match="neither an existing folder nor a hub id"):
        mm.merge_models("linear", {"de-DE": dirs["de-DE"], "xx": "models/none/here"}, w, "models/test_merge/n1")
    with pytest.raises(ValueError, match="could not be fetched from the hub"):  # HF_HUB_OFFLINE=1 in tests
        mm.merge_models("linear", {"de-DE": dirs["de-DE"], "xx": "nobody/no-such-model"}, w, "models/test_merge/n2")
    assert not paths.models_dir("test_merge", "n1").exists() and not paths.models_dir("test_merge", "n2").exists()


def test_evaluate_merges_refuses_the_target_as_a_source(on_disk):
    with pytest.raises(ValueError, match="target de-DE among its sources"):
        mm.evaluate_merges(
            "linear", "de-DE", {"similarity": {"de-DE": 0.5, "nl-NL": 0.5}}, models_dir="models/test_merge", data="toy"
        )


def test_with_average_names_the_baseline_by_its_sources():
    from mu.merge import with_average

    w = {"de-DE": 0.7, "nl-NL": 0.3}
    assert with_average("similarity", w) == {"similarity": w, "average": {"de-DE": 0.5, "nl-NL": 0.5}}
    assert with_average("transfer", w) == {"transfer": w, "average-of-transfer": {"de-DE": 0.5, "nl-NL": 0.5}}
    assert with_average("average", w) == {"average": {"de-DE": 0.5, "nl-NL": 0.5}}
    other = {"fr-FR": 1.0}
    assert with_average("similarity", w, compare={"transfer": other})["transfer"] == other
    with pytest.raises(ValueError, match="repeat the main weighting"):
        with_average("similarity", w, compare={"average": other})


def test_a_plan_checked_where_it_entered_is_not_checked_again(on_disk, monkeypatch):
    # python -m mu merge makes the plan before any weight is read; merge_models takes it as checked
    from mu.merge import catalog, plan

    base_dir, dirs = on_disk
    weights = {k: 1.0 for k in dirs}
    p = plan.make("ties", weights, {"density": 0.4}, sources=list(dirs), base=True, device="cpu", seed=7)
    by_name = mm.merge_models(
        "ties",
        dirs,
        weights,
        paths.models_dir("test_merge", "by_name"),
        base_model=base_dir,
        device="cpu",
        seed=7,
        density=0.4,
    )

    def refuse(*args, **kwargs):
        raise AssertionError("the plan was checked again")

    monkeypatch.setattr(catalog, "resolve", refuse)
    monkeypatch.setattr(plan, "make", refuse)
    by_plan = mm.merge_models(
        p, dirs, p.weights, paths.models_dir("test_merge", "by_plan"), base_model=base_dir, seed=7
    )
    a, b = _load(by_name), _load(by_plan)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="the plan's"):
        mm.merge_models(p, dirs, p.weights, paths.models_dir("test_merge", "x"), base_model=base_dir, density=0.3)
