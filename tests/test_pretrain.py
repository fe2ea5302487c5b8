"""mu.pretrain on the toy data at tiny sizes: objectives, determinism, resume, the base it saves."""

from __future__ import annotations

import pytest
import torch

from mu import models, paths, pretrain

LOCALES = ["de-DE", "nl-NL", "fr-FR"]
TINY = dict(locales=LOCALES, source="toy", steps=6, vocab_size=300, hidden_size=32, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=64, max_len=32, batch_size=8, warmup_steps=2, seed=3,
            checkpoint_every=3, dev_per_locale=16)


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
    real = pretrain.step_loss

    def crash_at_4(model, corpus, term, batch_size, seed, step):
        if step == 4:
            raise KeyboardInterrupt("interrupted")
        return real(model, corpus, term, batch_size, seed, step)

    monkeypatch.setattr(pretrain, "step_loss", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain(tmp_path / "b", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok", **TINY)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["step"] == 3
    monkeypatch.setattr(pretrain, "step_loss", real)
    b = pretrain.pretrain(tmp_path / "b", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok", **TINY)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    mtime = (b / "model.safetensors").stat().st_mtime_ns
    assert pretrain.pretrain(tmp_path / "b", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok", **TINY) == b
    assert (b / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match=r"other arguments.*'seed': \(3, 4\)"):
        pretrain.pretrain(tmp_path / "b", objective="mlm+tlm+align", tokenizer_dir=tmp_path / "tok",
                          **{**TINY, "seed": 4})


def test_unknown_objective_and_masking():
    with pytest.raises(ValueError, match=r"unknown pretraining objective 'clm'.*'mlm\+tlm\+align'"):
        pretrain.check_objective("clm")
    ids = torch.randint(pretrain.N_SPECIAL, 300, (64, 20))
    ids[:, 0], ids[:, -1] = pretrain.BOS, pretrain.EOS
    masked, labels = pretrain.mask_tokens(ids, 300, torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # special tokens are never masked
    assert 0.10 < chosen.float().mean() < 0.20 and torch.equal(labels[chosen], ids[chosen])
    assert (masked[chosen] == pretrain.MASK).float().mean() > 0.6


def test_ensure_saves_the_profile_base_with_a_fixed_head(mu_root):
    kw = {k: v for k, v in TINY.items() if k != "seed"}
    base = pretrain.ensure("pretrain-test", objective="mlm", seed=5, **kw)
    assert base == paths.models_dir("pretrain-test", "base")
    model, tok = models.load_classifier(base)
    enc = models.load_state_dict(paths.models_dir("pretrain-test", "pretrained", "mlm", "encoder"))
    sd = model.state_dict()
    assert torch.equal(sd["roberta.embeddings.word_embeddings.weight"], enc["roberta.embeddings.word_embeddings.weight"])
    assert model.config.num_labels == 60 and paths.read_json(base / "base_args.json")["seed"] == 5
    assert pretrain.ensure("pretrain-test", objective="mlm", seed=5, **kw) == base  # kept
    assert models.ensure_base("mini", base, seed=5) == base  # the mini profile uses the base pretrained here
    with pytest.raises(ValueError, match=r"no pretrained base at .*python -m mu pretrain --profile mini"):
        models.ensure_base("mini", paths.models_dir("pretrain-test", "nothing"), seed=5)


def test_parallel_svd_init_puts_translations_close_and_is_recorded(tmp_path):
    from transformers import AutoTokenizer

    texts = pretrain.train_texts(LOCALES, "toy")
    tok = pretrain.tokenizer(tmp_path / "tok", [t for _, u in texts.values() for t in u], 300)
    corpus = pretrain.Corpus(texts, tok, 32)
    vectors, seen = pretrain.parallel_embeddings(corpus, len(tok), 16, seed=0)
    assert vectors.shape == (len(tok), 16) and seen.any() and not seen[:pretrain.N_SPECIAL].all()
    assert torch.allclose(vectors[seen].norm(dim=1), torch.full((int(seen.sum()),), pretrain.EMBED_NORM), atol=1e-4)
    # a sentence and its translation share more of this space than two unrelated sentences
    g = corpus.groups
    emb = lambda i: torch.nn.functional.normalize(vectors[corpus.sentences[i]].mean(0), dim=0)
    same = torch.stack([emb(a) @ emb(b) for a, b, *_ in g[:50]]).mean()
    other = torch.stack([emb(g[k][0]) @ emb(g[k + 1][1]) for k in range(50)]).mean()
    assert same > other + 0.1, (float(same), float(other))
    enc = pretrain.pretrain(tmp_path / "run", objective="mlm", tokenizer_dir=tmp_path / "tok",
                            embedding_init="parallel-svd", **TINY)
    assert paths.read_json(tmp_path / "run" / "pretrain.json")["args"]["embedding_init"] == "parallel-svd"
    assert AutoTokenizer.from_pretrained(enc) is not None
    with pytest.raises(ValueError, match="unknown embedding_init 'glove'.*parallel-svd"):
        pretrain.pretrain(tmp_path / "x", objective="mlm", tokenizer_dir=tmp_path / "tok", embedding_init="glove", **TINY)
