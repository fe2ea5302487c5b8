"""mu.pretrain on the toy data at tiny sizes: objectives, determinism, resume, the base it saves."""

from __future__ import annotations

import pytest
import torch

from mu import bases, mlm, models, notes, paths, pretrain, threads

LOCALES = ["de-DE", "nl-NL", "fr-FR"]
TINY = dict(
    locales=LOCALES,
    source="toy",
    steps=6,
    vocab_size=300,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_len=32,
    batch_size=8,
    warmup_steps=2,
    seed=3,
    checkpoint_every=3,
    dev_per_locale=16,
)


def _weights(folder):
    return models.load_state_dict(folder)


@pytest.mark.parametrize("objective", pretrain.OBJECTIVES)
def test_each_objective_trains_and_records_dev_loss(objective, tmp_path):
    enc = pretrain.pretrain(tmp_path / "run", objective=objective, tokenizer_dir=tmp_path / "tok", **TINY)
    record = paths.read_json(tmp_path / "run" / "pretrain.json")
    assert record["steps_done"] == 6 and record["stopped_by"] == "steps"
    assert set(record["dev_mlm_loss"]) == set(LOCALES) and all(v > 0 for v in record["dev_mlm_loss"].values())
    terms = objective.split("+")
    assert {f"{t}_loss" for t in terms} <= set(record["log"][-1])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert (enc / "model.safetensors").is_file() and (enc / "tokenizer_config.json").is_file()


def test_deterministic_resumable_and_not_repeated(tmp_path, monkeypatch):
    a = pretrain.pretrain(tmp_path / "a", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok", **TINY)
    real = mlm.step_loss

    def crash_at_4(model, corpus, term, batch_size, seed, step):
        if step == 4:
            raise KeyboardInterrupt("interrupted")
        return real(model, corpus, term, batch_size, seed, step)

    monkeypatch.setattr(mlm, "step_loss", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain(tmp_path / "b", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok", **TINY)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 3
    monkeypatch.setattr(mlm, "step_loss", real)
    b = pretrain.pretrain(tmp_path / "b", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok", **TINY)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    mtime = (b / "model.safetensors").stat().st_mtime_ns
    assert pretrain.pretrain(tmp_path / "b", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok", **TINY) == b
    assert (b / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match=r"other arguments.*'seed': \(3, 4\)"):
        pretrain.pretrain(
            tmp_path / "b", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok", **{**TINY, "seed": 4}
        )


def _interrupted(tmp_path, monkeypatch, run, at_step, **kw):
    """Run ``run`` until the step ``at_step`` raises (a kill): checkpoints are left as a killed run leaves them."""
    real = mlm.step_loss

    def crash(model, corpus, term, batch_size, seed, step):
        if step == at_step:
            raise KeyboardInterrupt("killed")
        return real(model, corpus, term, batch_size, seed, step)

    monkeypatch.setattr(mlm, "step_loss", crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain(tmp_path / run, objective="mlm", tokenizer_dir=tmp_path / "tok", **{**TINY, **kw})
    monkeypatch.setattr(mlm, "step_loss", real)
    return tmp_path / run


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoints_hold_plain_data_and_a_damaged_one_falls_back(tmp_path, monkeypatch):
    """Checkpoints load with ``weights_only=True``; a truncated one is named in a warning and the run
    resumes from the previous checkpoint (kept), or from scratch when none is readable: either way it ends
    with the weights of an uninterrupted run."""
    kw = {"checkpoint_every": 1}
    ref = pretrain.pretrain(tmp_path / "ref", objective="mlm", tokenizer_dir=tmp_path / "tok", **{**TINY, **kw})
    run = _interrupted(tmp_path, monkeypatch, "cut", 4, **kw)
    ckpt, prev = run / "checkpoint.pt", run / "checkpoint.prev.pt"
    assert torch.load(ckpt, weights_only=True)["step"] == 4 and torch.load(prev, weights_only=True)["step"] == 3
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # a write cut short (disk full, copy)
    steps_done = []
    real = mlm.step_loss
    monkeypatch.setattr(mlm, "step_loss", lambda *a: steps_done.append(a[-1]) or real(*a))
    with pytest.warns(notes.MuWarning) as caught:
        enc = pretrain.pretrain(run, objective="mlm", tokenizer_dir=tmp_path / "tok", **{**TINY, **kw})
    messages = [str(w.message) for w in caught]
    assert any(f"corrupt checkpoint {ckpt}" in m for m in messages), messages
    assert any(f"resuming from the previous checkpoint {prev}" in m for m in messages), messages
    assert steps_done == [3, 4, 5]  # from the previous checkpoint's step 3
    assert _same_weights(ref, enc) and not ckpt.exists() and not prev.exists()

    run = _interrupted(tmp_path, monkeypatch, "both", 4, **kw)  # both damaged: from scratch
    for f in (run / "checkpoint.pt", run / "checkpoint.prev.pt"):
        f.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.warns(notes.MuWarning, match="no readable checkpoint left .* restarts from scratch"):
        enc = pretrain.pretrain(run, objective="mlm", tokenizer_dir=tmp_path / "tok", **{**TINY, **kw})
    assert _same_weights(ref, enc)


class _Planted:
    """A pickle that runs code on loading: creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_checkpoint_never_runs(tmp_path, monkeypatch):
    """A ``checkpoint.pt`` whose pickle would run code on loading is refused (``weights_only=True``): the
    code does not run, the file is named as corrupt and deleted, training starts from scratch."""
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    planted = {"args": {}, "step": 3, "payload": _Planted(marker)}
    torch.save(planted, run / "checkpoint.pt")
    torch.load(run / "checkpoint.pt", weights_only=False)  # the plant is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.warns(
        notes.MuWarning,
        match=rf"corrupt checkpoint {run / 'checkpoint.pt'} .*refused by weights_only=True: loading "
        r"it could run code \(Unsupported global: GLOBAL io\.open",
    ):
        enc = pretrain.pretrain(run, objective="mlm", tokenizer_dir=tmp_path / "tok", **TINY)
    assert not marker.exists()
    ref = pretrain.pretrain(tmp_path / "ref", objective="mlm", tokenizer_dir=tmp_path / "tok", **TINY)
    assert _same_weights(ref, enc)


def test_checkpoint_save_refuses_what_would_need_pickle(tmp_path):
    import numpy as np

    from mu import checkpoint

    checkpoint.save(tmp_path / "c.pt", {"a": [1, 2.5, "x", None, (True,)], "t": torch.ones(2)})
    with pytest.raises(TypeError, match=r"checkpoint\['log'\]\[0\]: float64 is neither a tensor nor plain data"):
        checkpoint.save(tmp_path / "c.pt", {"log": [np.float64(1.0)]})
    with pytest.raises(TypeError, match="pretrain arguments\\['lr'\\]: float32"):
        pretrain.pretrain(
            tmp_path / "x", objective="mlm", tokenizer_dir=tmp_path / "tok", **{**TINY, "lr": np.float32(1e-3)}
        )
    assert torch.load(tmp_path / "c.pt", weights_only=True)["a"] == [1, 2.5, "x", None, (True,)]


def test_pretraining_runs_on_the_chosen_threads(monkeypatch, tmp_path):
    """Pretraining sets torch's threads to ``threads.count()`` while it trains (recorded), and restores them
    (the choice itself: tests/test_threads.py)."""
    seen = []
    real = mlm.step_loss
    monkeypatch.setattr(mlm, "step_loss", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "allowed_cpus", lambda: [0, 1, 2])
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.0)  # one of the 3 cores busy: 2 threads
    before = torch.get_num_threads()
    pretrain.pretrain(tmp_path / "run", objective="mlm", tokenizer_dir=tmp_path / "tok", **TINY)
    assert set(seen) == {2} and len(seen) == TINY["steps"]
    assert paths.read_json(tmp_path / "run" / "pretrain.json")["torch_threads"] == 2
    assert torch.get_num_threads() == before


def test_unknown_objective_and_masking():
    with pytest.raises(ValueError, match=r"unknown pretraining objective 'clm'.*'mlm\+tlm\+align'"):
        pretrain.check_objective("clm")
    ids = torch.randint(mlm.N_SPECIAL, 300, (64, 20))
    ids[:, 0], ids[:, -1] = mlm.BOS, mlm.EOS
    masked, labels = mlm.mask_tokens(ids, 300, torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # special tokens are never masked
    assert 0.10 < chosen.float().mean() < 0.20 and torch.equal(labels[chosen], ids[chosen])
    assert (masked[chosen] == mlm.MASK).float().mean() > 0.6


def test_ensure_saves_the_profile_base_with_a_fixed_head(mu_root):
    kw = {k: v for k, v in TINY.items() if k != "seed"}
    base = pretrain.ensure("pretrain-test", objective="mlm", seed=5, **kw)
    assert base == paths.models_dir("pretrain-test", "base")
    model, tok = models.load_classifier(base)
    enc = models.load_state_dict(paths.models_dir("pretrain-test", "pretrained", "mlm", "encoder"))
    sd = model.state_dict()
    assert torch.equal(
        sd["roberta.embeddings.word_embeddings.weight"], enc["roberta.embeddings.word_embeddings.weight"]
    )
    assert model.config.num_labels == 60 and paths.read_json(base / "base_args.json")["seed"] == 5
    assert pretrain.ensure("pretrain-test", objective="mlm", seed=5, **kw) == base  # kept
    assert bases.ensure_base("mini", base, seed=5) == base  # the mini profile uses the base pretrained here
    with pytest.raises(ValueError, match=r"no pretrained base at .*python -m mu pretrain --profile mini"):
        bases.ensure_base("mini", paths.models_dir("pretrain-test", "nothing"), seed=5)


def test_parallel_svd_init_puts_translations_close_and_is_recorded(tmp_path):
    from transformers import AutoTokenizer

    texts = pretrain.train_texts(LOCALES, "toy")
    tok = pretrain.tokenizer(tmp_path / "tok", [t for _, u in texts.values() for t in u], 300)
    corpus = mlm.Corpus(texts, tok, 32)
    vectors, seen = mlm.parallel_embeddings(corpus, len(tok), 16, seed=0)
    assert vectors.shape == (len(tok), 16) and seen.any() and not seen[: mlm.N_SPECIAL].all()
    assert torch.allclose(vectors[seen].norm(dim=1), torch.full((int(seen.sum()),), mlm.EMBED_NORM), atol=1e-4)
    # a sentence and its translation share more of this space than two unrelated sentences
    g = corpus.groups
    emb = lambda i: torch.nn.functional.normalize(vectors[corpus.sentences[i]].mean(0), dim=0)
    same = torch.stack([emb(a) @ emb(b) for a, b, *_ in g[:50]]).mean()
    other = torch.stack([emb(g[k][0]) @ emb(g[k + 1][1]) for k in range(50)]).mean()
    assert same > other + 0.1, (float(same), float(other))
    enc = pretrain.pretrain(
        tmp_path / "run", objective="mlm", tokenizer_dir=tmp_path / "tok", embedding_init="parallel-svd", **TINY
    )
    assert paths.read_json(tmp_path / "run" / "pretrain.json")["args"]["embedding_init"] == "parallel-svd"
    assert AutoTokenizer.from_pretrained(enc) is not None
    with pytest.raises(ValueError, match="unknown embedding_init 'glove'.*parallel-svd"):
        pretrain.pretrain(
            tmp_path / "x", objective="mlm", tokenizer_dir=tmp_path / "tok", embedding_init="glove", **TINY
        )
