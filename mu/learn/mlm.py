"""What the small encoder is pretrained on and against: the train text as token ids and translation
pairs, the initial token embeddings, BERT masking and the loss of each objective term
(``mu.learn.pretrain`` runs the steps).

Objective terms (``mu.learn.pretrain.OBJECTIVES`` combines them; the steps cycle through the terms,
one batch each, so every term gets the same share):

* ``mlm``: masked-LM on monolingual utterances (as XLM-R);
* ``tlm``: translation-LM (as XLM): the same MASSIVE ``id`` in two locales, concatenated
  (``<s> a </s></s> b </s>``) and masked jointly;
* ``align``: a contrastive term on those translation pairs: in-batch InfoNCE over mean-pooled
  sentence embeddings (symmetric, temperature ``ALIGN_TEMPERATURE``).

Embedding initialisation ``parallel-svd`` (``parallel_embeddings``): the token embeddings start as
cross-lingual vectors read off MASSIVE's parallel train text ("inverted indexing", Søgaard et al.
2015): a token × MASSIVE-id matrix (log counts, idf over ids; an id is one utterance and its
translations in every locale) factorised by truncated SVD, so tokens that occur in translations of
the same utterances start close, whatever their script. Train text only, no labels.

Fast on a CPU: the LM head runs on the masked positions only, batches are padded to their longest
sequence. Each step's batch and masking are drawn from ``(seed, step)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import XLMRobertaForMaskedLM

from mu.corpus import data as mu_data

EMBED_NORM = 1.0  # L2 norm of an SVD-initialised token embedding (random init: about 0.02 * sqrt(hidden))
MASK_PROB = 0.15
ALIGN_TEMPERATURE = 0.05
N_SPECIAL = 5  # <s> <pad> </s> <unk> <mask>: ids 0..4 (mu.learn.bases.train_tokenizer)
PAD, BOS, EOS, MASK = 1, 0, 2, 4


class Corpus:
    """Token ids (no special tokens) of every train utterance, and the translation pairs by MASSIVE id."""

    def __init__(self, texts: dict[str, tuple[list[str], list[str]]], tok: Any, max_len: int):
        self.max_len = max_len
        self.sentences: list[list[int]] = []
        by_id: dict[str, list[int]] = {}
        for _loc, (ids, utts) in tqdm(texts.items(), desc="tokenize", unit="locale", leave=False):
            enc = tok(utts, add_special_tokens=False, truncation=True, max_length=max_len - 2)["input_ids"]
            for uid, e in zip(ids, enc, strict=True):
                by_id.setdefault(uid, []).append(len(self.sentences))
                self.sentences.append(e or [3])  # an utterance the tokenizer empties becomes <unk>
        self.groups = [g for g in by_id.values() if len(g) >= 2]  # ids with at least two locales

    def mono(self, rng: np.random.Generator, n: int) -> list[list[int]]:
        return [[BOS, *self.sentences[i], EOS] for i in rng.integers(len(self.sentences), size=n)]

    def pairs(self, rng: np.random.Generator, n: int) -> tuple[list[list[int]], list[list[int]]]:
        """``n`` translation pairs: a random id, two distinct locales of it."""
        a, b = [], []
        for g in rng.integers(len(self.groups), size=n):
            i, j = rng.choice(self.groups[g], size=2, replace=False)
            a.append(self.sentences[i])
            b.append(self.sentences[j])
        return a, b

    def tlm(self, rng: np.random.Generator, n: int) -> list[list[int]]:
        half = (self.max_len - 4) // 2
        return [[BOS, *x[:half], EOS, EOS, *y[:half], EOS] for x, y in zip(*self.pairs(rng, n))]


def parallel_embeddings(corpus: Corpus, vocab_size: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(vectors, seen): ``dim``-dimensional cross-lingual token vectors from the translation groups of
    ``corpus``: rows of U·sqrt(S) of the truncated SVD of the token × id matrix (log(1 + count), times
    the token's idf over ids), scaled to norm ``EMBED_NORM``; ``seen`` marks the tokens that occur in
    some group (the others keep their random initialisation)."""
    import scipy.sparse as sp
    from sklearn.utils.extmath import randomized_svd

    if not corpus.groups:
        raise ValueError("parallel-svd needs translation pairs (the same id in two locales); the corpus has none")
    rows = [t for g in corpus.groups for i in g for t in corpus.sentences[i]]
    cols = [k for k, g in enumerate(corpus.groups) for i in g for _ in corpus.sentences[i]]
    counts = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(vocab_size, len(corpus.groups)))
    counts.sum_duplicates()
    counts.data = np.log1p(counts.data)
    df = np.asarray((counts > 0).sum(axis=1)).ravel()
    idf = np.log(len(corpus.groups) / (1.0 + df)).clip(min=0.0)
    k = min(dim, min(counts.shape) - 1)
    u, s, _ = randomized_svd(sp.diags(idf.astype(np.float32)) @ counts, n_components=k, random_state=seed)
    vectors = np.zeros((vocab_size, dim), np.float32)
    vectors[:, :k] = u * np.sqrt(s)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    seen = (df > 0) & (norms[:, 0] > 0)
    vectors[seen] *= EMBED_NORM / norms[seen]
    return torch.from_numpy(vectors), torch.from_numpy(seen)


def pad(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) padded to the longest sequence of the batch."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, (ids != PAD).long()


def mask_tokens(ids: torch.Tensor, vocab_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ``MASK_PROB`` of the non-special tokens (80% <mask>, 10% random, 10% kept);
    labels are -100 elsewhere. At least one token per batch is masked."""
    candidates = ids >= N_SPECIAL
    chosen = (torch.rand(ids.shape, generator=gen) < MASK_PROB) & candidates
    if not chosen.any():
        chosen.view(-1)[candidates.view(-1).nonzero()[0]] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    draw = torch.rand(ids.shape, generator=gen)
    out = ids.clone()
    out[chosen & (draw < 0.8)] = MASK
    rand = chosen & (draw >= 0.8) & (draw < 0.9)
    out[rand] = torch.randint(N_SPECIAL, vocab_size, (int(rand.sum()),), generator=gen)
    return out, labels


def mlm_loss(model: XLMRobertaForMaskedLM, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(mean cross-entropy over the masked positions, their number): the LM head sees only those."""
    hidden = model.roberta(input_ids=ids, attention_mask=(ids != PAD).long()).last_hidden_state
    where = labels != -100
    logits = model.lm_head(hidden[where])
    return F.cross_entropy(logits, labels[where]), int(where.sum())


def sentence_embeddings(model: XLMRobertaForMaskedLM, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Mean-pooled last hidden states over the real tokens, L2-normalised."""
    ids, att = pad(seqs)
    hidden = model.roberta(input_ids=ids, attention_mask=att).last_hidden_state
    from mu.learn.evaluate import mean_pool

    return F.normalize(mean_pool(hidden, att), dim=-1)


def align_loss(model: XLMRobertaForMaskedLM, a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> torch.Tensor:
    """Symmetric InfoNCE: each sentence's translation is its positive, the batch's others the negatives."""
    ea = sentence_embeddings(model, [[BOS, *x, EOS] for x in a])
    eb = sentence_embeddings(model, [[BOS, *y, EOS] for y in b])
    sim = ea @ eb.T / ALIGN_TEMPERATURE
    target = torch.arange(len(a))
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2


def step_loss(
    model: XLMRobertaForMaskedLM, corpus: Corpus, term: str, batch_size: int, seed: int, step: int
) -> torch.Tensor:
    """The loss of one step's batch for one objective term, drawn from ``(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    vocab = model.config.vocab_size
    if term == "align":
        return align_loss(model, *corpus.pairs(rng, batch_size))
    seqs = corpus.mono(rng, batch_size) if term == "mlm" else corpus.tlm(rng, batch_size)
    return mlm_loss(model, *mask_tokens(pad(seqs)[0], vocab, gen))[0]


def dev_loss(
    model: XLMRobertaForMaskedLM,
    tok: Any,
    locales: Sequence[str],
    source: str | os.PathLike,
    n_per_locale: int,
    max_len: int,
    seed: int,
    batch_size: int = 128,
) -> dict[str, float]:
    """Masked-LM loss per locale on (the first ``n_per_locale`` of) its dev utterances, fixed masks."""
    out = {}
    model.eval()
    with torch.inference_mode():
        for loc in locales:
            texts = list(mu_data.load_split(loc, "dev", source)["text"])[:n_per_locale]
            enc = tok(texts, truncation=True, max_length=max_len)["input_ids"]
            gen = torch.Generator().manual_seed(seed)
            total, count = 0.0, 0
            for start in range(0, len(enc), batch_size):
                loss, n = mlm_loss(
                    model, *mask_tokens(pad(enc[start : start + batch_size])[0], model.config.vocab_size, gen)
                )
                total += float(loss) * n
                count += n
            out[loc] = total / count
    model.train()
    return out
