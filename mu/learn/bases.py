"""The base model every source of a profile fine-tunes from, built once: the tiny offline XLM-R with a
tokenizer trained here (``toy``), ``xlm-roberta-base`` with a 60-label head (``massive``), or the encoder
pretrained here (``mini``, ``mu.learn.pretrain``).

Every base's classifier head is initialised once, with a fixed seed, and the base is saved: merging
heads trained from different random inits is a known failure. A base is kept when it exists with the
same arguments (``base_args.json``) and refused when it was built with others.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaTokenizer,
)

from mu.core import paths
from mu.corpus import data, toy
from mu.learn import models as mu_models

HEAD_NOTE = (
    "all sources fine-tune from the one saved base model, whose classifier head was initialised "
    "once with a fixed seed (merging heads trained from different random inits is a known failure)"
)


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> XLMRobertaTokenizer:
    """A small unigram tokenizer (sentencepiece-style) with XLM-R's special tokens and ids.

    The same in every process: the trainer's piece scores vary in their last bits from one process to the
    next (its float sums run in varying order), which reorders near-tied pieces and so their ids; scores are
    rounded to 1e-9 and the pieces sorted by (score, piece) after training."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4; pad=1 as XLM-R expects
    tok.train_from_iterator(
        list(texts),
        trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False),
    )
    trained = json.loads(tok.to_str())["model"]
    pieces = sorted(((p, round(s, 9)) for p, s in trained["vocab"][len(specials) :]), key=lambda x: (-x[1], x[0]))
    tok.model = models.Unigram(
        [tuple(v) for v in trained["vocab"][: len(specials)]] + pieces, unk_id=trained["unk_id"], byte_fallback=False
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return XLMRobertaTokenizer(tokenizer_object=tok, model_max_length=512)


def encoder_config(
    vocab_size: int, hidden_size: int, num_hidden_layers: int, num_attention_heads: int, intermediate_size: int, **extra
) -> XLMRobertaConfig:
    """An XLM-R-architecture config of this size (XLM-R's 512 positions after its padding offset, one token
    type): the one shape the toy base and the encoder pretrained here share; ``extra``: the rest."""
    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=514,
        type_vocab_size=1,
        **extra,
    )


def build_toy_base(
    out_dir: str | os.PathLike = "models/toy/base",
    texts: Sequence[str] | None = None,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 1000,
    initializer_range: float = 0.05,
) -> Path:
    """Tiny XLM-R classifier (60 MASSIVE labels) + a tokenizer trained locally on ``texts``.

    ``texts`` default: the train utterances of every toy locale. The classifier
    head (and encoder) is initialised once with ``seed``; every toy source
    fine-tunes from this folder. The defaults (hidden 64, init std 0.05) learn the
    toy data reliably in a few hundred steps from scratch; hidden 32 with XLM-R's
    std 0.02 sits at chance for many epochs. Idempotent: an existing base built
    with the same arguments is kept (``base_args.json``); one built with other
    arguments is an error (rebuilding it would orphan every model fine-tuned from it).
    """
    out = paths.resolve(out_dir)
    if texts is None:
        texts = data.load_texts(toy.TOY_LOCALES, "train", "toy")
    args = {
        "kind": "toy",
        "seed": seed,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "initializer_range": initializer_range,
        "texts_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
        "classifier_head": HEAD_NOTE,
    }
    if _existing_base(out, args):
        return out
    tokenizer = train_tokenizer(texts, vocab_size)
    config = encoder_config(
        len(tokenizer),
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        initializer_range=initializer_range,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=len(data.INTENTS),
        id2label=dict(data.ID2LABEL),
        label2id=dict(data.LABEL2ID),
        problem_type="single_label_classification",
        architectures=["XLMRobertaForSequenceClassification"],
    )
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(config)
    return mu_models.save_classifier(model, tokenizer, out, extra_files={"base_args.json": args})


def _existing_base(out: Path, args: dict) -> bool:
    """True if ``out`` holds a base built with ``args``; False if there is none; ValueError if it differs."""
    stamp = out / "base_args.json"
    if not stamp.is_file():
        return False
    old = paths.read_json(stamp)
    if old != args:
        diff = {k: (old.get(k), args.get(k)) for k in sorted(set(old) | set(args)) if old.get(k) != args.get(k)}
        raise ValueError(
            f"the base model {out} exists but was built with other arguments (existing, requested): {diff}; "
            "rebuilding it would orphan every source fine-tuned from it. Delete the folder to rebuild, "
            "or give another base_model path"
        )
    mu_models.check_model_dir(out)
    return True


def ensure_base(profile: str, base_model: str | os.PathLike, seed: int) -> Path:
    """The profile's shared base model, built once: the tiny offline XLM-R (``toy``),
    ``xlm-roberta-base`` with a fixed-seed 60-label head (``massive``), or the encoder pretrained
    here (``mini``: built by ``python -m mu pretrain --profile mini``, ``mu.learn.pretrain.ensure``)."""
    if profile == "toy":
        return build_toy_base(base_model, seed=seed)
    if profile == "massive":
        return prepare_base("xlm-roberta-base", base_model, seed=seed)
    if profile == "mini":
        out = paths.resolve(base_model)
        if not (out / "base_args.json").is_file():
            raise ValueError(
                f"no pretrained base at {out}: the mini profile's base is pretrained here; run "
                "`python -m mu pretrain --profile mini` (or `make study`, which does) first"
            )
        return mu_models.check_model_dir(out)
    raise ValueError(f"unknown profile {profile!r}; valid: ['toy', 'massive', 'mini']")


def prepare_base(
    model_name: str = "xlm-roberta-base", out_dir: str | os.PathLike = "models/massive/base", seed: int = 42
) -> Path:
    """The massive profile's base: ``model_name`` from the hub with a 60-label head initialised once
    with ``seed``, saved locally so every source fine-tunes from the same head. Needs network."""
    out = paths.resolve(out_dir)
    args = {"kind": "pretrained", "model_name": model_name, "seed": seed, "classifier_head": HEAD_NOTE}
    if _existing_base(out, args):
        return out
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_name,
        num_labels=len(data.INTENTS),
        id2label=dict(data.ID2LABEL),
        label2id=dict(data.LABEL2ID),
        problem_type="single_label_classification",
    )
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    return mu_models.save_classifier(model, tokenizer, out, extra_files={"base_args.json": args})
