"""Model sizes the benchmark builds (random init, 60 MASSIVE labels).

``base`` is xlm-roberta-base exactly (278M parameters, 1.11 GB in fp32: hidden 768,
12 layers, vocabulary 250002, 514 positions, one token type). ``eval`` keeps the
real vocabulary/embedding but only 4 layers of width 256 (~1/27 of the base's
per-token compute): forward passes of the base size on 2 shared CPU cores run at
~5 examples/s, too slow for a 2,000-utterance test set (and 5 ensemble sources,
and a naive loop padding to 128) in the 15-minute budget. ``quick`` (merge) / ``quick-eval`` keep the vocabulary but are tiny
elsewhere; ``tiny`` is for the tests.
"""

from __future__ import annotations

from transformers import XLMRobertaConfig

from mu import data

SIZES: dict[str, dict[str, int]] = {
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "vocab_size": 250002,
    },
    "eval": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "vocab_size": 250002,
    },
    "quick": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 250002,
    },
    "quick-eval": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 50000,
    },
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 2000,
    },
}


def check_size(name: str) -> dict[str, int]:
    if name not in SIZES:
        raise ValueError(f"unknown benchmark model size {name!r}; valid: {list(SIZES)}")
    return SIZES[name]


def config(name: str) -> XLMRobertaConfig:
    """The XLM-R sequence-classification config of size ``name`` (xlm-roberta-base's other settings)."""
    return XLMRobertaConfig(
        **check_size(name),
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=len(data.INTENTS),
        id2label=dict(data.ID2LABEL),
        label2id=dict(data.LABEL2ID),
        problem_type="single_label_classification",
        architectures=["XLMRobertaForSequenceClassification"],
    )


def num_parameters(name: str) -> int:
    """Parameter count of size ``name`` without building it."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    with torch.device("meta"):
        model = XLMRobertaForSequenceClassification(config(name))
    return sum(t.numel() for t in model.state_dict().values())
