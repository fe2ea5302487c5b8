"""A small XLM-R-architecture encoder pretrained here, without labels, standing in for xlm-roberta-base.

``tokenizer(...)`` trains a unigram tokenizer (``mu.learn.models.train_tokenizer``) on the *train-split*
utterances of the locales; ``pretrain(...)`` trains ``XLMRobertaForMaskedLM`` on the same text with
one of ``OBJECTIVES``; ``ensure(...)`` does both and saves the profile's base
(``mu.learn.models.prepare_base``: the 60-label head initialised once with ``seed``). Dev and test text
are never seen; labels are never read.

Objectives (the steps cycle through the terms, one batch each, so every term gets the same share):

* ``mlm``: masked-LM on monolingual utterances (as XLM-R);
* ``mlm+tlm``: plus translation-LM (as XLM): the same MASSIVE ``id`` in two locales, concatenated
  (``<s> a </s></s> b </s>``) and masked jointly;
* ``mlm+tlm+align``: plus a contrastive term on those translation pairs: in-batch InfoNCE over
  mean-pooled sentence embeddings (symmetric, temperature ``ALIGN_TEMPERATURE``).

Embedding initialisation (``EMBEDDING_INITS``): ``random`` (as XLM-R), or ``parallel-svd``: the
token embeddings start as cross-lingual vectors read off MASSIVE's parallel train text ("inverted
indexing", Søgaard et al. 2015): a token × MASSIVE-id matrix (log counts, idf over ids; an id is one
utterance and its translations in every locale) factorised by truncated SVD, so tokens that occur
in translations of the same utterances start close, whatever their script. Train text only, no labels.

Fast on a CPU: the LM head runs on the masked positions only, batches are padded to their
longest sequence. Deterministic from ``seed`` (each step's batch and masking are drawn from
``(seed, step)``; the torch RNG is checkpointed). Resumable: ``checkpoint.pt`` (tensors and plain
data only, ``mu.core.checkpoint``; the one before kept as ``checkpoint.prev.pt``) is written atomically
every ``checkpoint_every`` steps and picked up by a rerun with the same arguments; a damaged one
(truncated, or a pickle that would run code: never loaded) is named in a warning and the previous
one, else a fresh start, is used. A finished run (``pretrain.json`` with the same arguments) is not
repeated.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForMaskedLM

from mu.core import checkpoint, paths, report, threads
from mu.corpus import data as mu_data
from mu.langs import locales as mu_locales
from mu.learn import models

OBJECTIVES = ("mlm", "mlm+tlm", "mlm+tlm+align")
EMBEDDING_INITS = ("random", "parallel-svd")
EMBED_NORM = 1.0  # L2 norm of an SVD-initialised token embedding (random init: about 0.02 * sqrt(hidden))
MASK_PROB = 0.15
ALIGN_TEMPERATURE = 0.05
N_SPECIAL = 5  # <s> <pad> </s> <unk> <mask>: ids 0..4 (mu.learn.models.train_tokenizer)
PAD, BOS, EOS, MASK = 1, 0, 2, 4


def check_objective(objective: str) -> list[str]:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown pretraining objective {objective!r}; valid: {list(OBJECTIVES)}")
    return objective.split("+")


def check_embedding_init(embedding_init: str) -> str:
    if embedding_init not in EMBEDDING_INITS:
        raise ValueError(f"unknown embedding_init {embedding_init!r}; valid: {list(EMBEDDING_INITS)}")
    return embedding_init


def _texts_sha256(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def train_texts(locales: Sequence[str], source: str | os.PathLike) -> dict[str, tuple[list[str], list[str]]]:
    """``{locale: (ids, utterances)}`` of each locale's *train* split (the only text pretraining sees)."""
    mu_locales.check_locales(locales)
    out = {}
    for loc in tqdm(list(locales), desc="read train text", unit="locale", leave=False):
        ds = mu_data.load_split(loc, "train", source)
        out[loc] = (list(ds["id"]), list(ds["text"]))
    return out


def tokenizer(out_dir: str | os.PathLike, texts: Sequence[str], vocab_size: int) -> Any:
    """The shared tokenizer, trained once on ``texts`` and kept at ``out_dir`` (rebuilt only when the
    texts or the vocabulary size change; ``tokenizer_args.json``)."""
    out = paths.resolve(out_dir)
    args = {"vocab_size": vocab_size, "n_texts": len(texts), "texts_sha256": _texts_sha256(texts)}
    stamp = out / "tokenizer_args.json"
    if stamp.is_file() and paths.read_json(stamp) == args:
        return AutoTokenizer.from_pretrained(out)
    tok = models.train_tokenizer(texts, vocab_size)
    with paths.atomic_path(out) as tmp:
        tok.save_pretrained(tmp)
        paths.write_json(tmp / "tokenizer_args.json", args)
    return AutoTokenizer.from_pretrained(out)


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


def _save_checkpoint(path: Path, args: dict, model, optimizer, scheduler, step: int, elapsed: float, log: list) -> None:
    """Tensors and plain data only (``mu.core.checkpoint``): weights, AdamW and LR-schedule state, the torch RNG."""
    checkpoint.save(
        path,
        {
            "args": args,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "elapsed": float(elapsed),
            "log": log,
            "torch_rng": torch.get_rng_state(),
        },
    )


# What a resumable checkpoint must hold (anything else is taken for a damaged one).
CHECKPOINT_ENTRIES = {
    "args": dict,
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "step": int,
    "elapsed": (int, float),
    "log": list,
    "torch_rng": torch.Tensor,
}


@threads.on_free_cores
def pretrain(
    out_dir: str | os.PathLike,
    *,
    locales: Sequence[str],
    source: str | os.PathLike,
    objective: str,
    tokenizer_dir: str | os.PathLike,
    steps: int,
    minutes: float | None = None,
    vocab_size: int = 32000,
    hidden_size: int = 128,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    intermediate_size: int = 512,
    max_len: int = 64,
    batch_size: int = 64,
    lr: float = 5e-4,
    warmup_steps: int = 200,
    seed: int = 0,
    embedding_init: str = "random",
    checkpoint_every: int = 500,
    dev_per_locale: int = 200,
) -> Path:
    """Pretrain the encoder; returns ``<out_dir>/encoder`` (``XLMRobertaForMaskedLM`` + tokenizer).

    Trains ``steps`` optimiser steps (AdamW, linear warmup over ``warmup_steps`` then linear decay
    to 0 at ``steps``), or stops earlier once ``minutes`` of training time (summed over resumed
    runs) have passed; ``pretrain.json`` records which, the loss log, the time, the dev masked-LM
    loss per locale, the torch threads (``mu.core.threads.count()``: the free cores it may use, or
    ``OMP_NUM_THREADS``) and the package versions. Rerunning with the same arguments after a finished
    run does nothing; after an interrupted one it resumes from ``checkpoint.pt``.
    """
    terms = check_objective(objective)
    check_embedding_init(embedding_init)
    if steps < 1 or batch_size < 2:
        raise ValueError(f"pretrain: need steps >= 1 and batch_size >= 2, got {steps} and {batch_size}")
    out = paths.resolve(out_dir)
    texts = train_texts(locales, source)
    flat = [t for _, utts in texts.values() for t in utts]
    args = {
        "objective": objective,
        "locales": list(locales),
        "source": str(source),
        "split": "train",
        "texts_sha256": _texts_sha256(flat),
        "steps": steps,
        "minutes": minutes,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": intermediate_size,
        "max_len": max_len,
        "batch_size": batch_size,
        "lr": lr,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "dev_per_locale": dev_per_locale,
    }
    if embedding_init != "random":  # absent means random: records written before the option stay valid
        args["embedding_init"] = embedding_init
    checkpoint.check_plain(args, "pretrain arguments")  # they go into every checkpoint: refused now, not at its save
    record_path, encoder_dir, ckpt_path = out / "pretrain.json", out / "encoder", out / "checkpoint.pt"
    if record_path.is_file():
        old = paths.read_json(record_path)
        if old["args"] == args and encoder_dir.is_dir():
            return encoder_dir
        diff = {k: (old["args"].get(k), v) for k, v in args.items() if old["args"].get(k) != v}
        raise ValueError(
            f"{out} holds an encoder pretrained with other arguments (existing, requested): {diff}; "
            "delete the folder or choose another out_dir"
        )
    tok = tokenizer(tokenizer_dir, flat, vocab_size)
    corpus = Corpus(texts, tok, max_len)
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        architectures=["XLMRobertaForMaskedLM"],
    )
    model = XLMRobertaForMaskedLM(config)
    if embedding_init == "parallel-svd":
        vectors, seen = parallel_embeddings(corpus, len(tok), hidden_size, seed)
        with torch.no_grad():
            model.roberta.embeddings.word_embeddings.weight[seen] = vectors[seen]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(warmup_steps, 1), max(0.0, (steps - s) / max(steps - warmup_steps, 1)))
    )
    step, elapsed, log = 0, 0.0, []
    ckpt = checkpoint.load(ckpt_path, CHECKPOINT_ENTRIES)  # a damaged one: named, the previous one or scratch
    if ckpt is not None:
        if ckpt["args"] != args:
            raise ValueError(
                f"the checkpoint in {out} belongs to a run with other arguments; delete {ckpt_path.name} "
                f"and {checkpoint.previous(ckpt_path).name} to start afresh"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, elapsed, log = ckpt["step"], ckpt["elapsed"], ckpt["log"]
        torch.set_rng_state(ckpt["torch_rng"])
    model.train()
    stopped = "steps"
    window: dict[str, list[float]] = {t: [] for t in terms}
    bar = tqdm(total=steps, initial=step, desc=f"pretrain {objective}", unit="step")
    start = time.perf_counter() - elapsed
    while step < steps:
        if minutes is not None and time.perf_counter() - start >= 60 * minutes:
            stopped = "minutes"
            break
        term = terms[step % len(terms)]
        loss = step_loss(model, corpus, term, batch_size, seed, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        window[term].append(float(loss.detach()))
        bar.update(1)
        if step % checkpoint_every == 0 or step == steps:
            log.append(
                {
                    "step": step,
                    "seconds": round(time.perf_counter() - start, 1),
                    **{f"{t}_loss": float(np.mean(v)) for t, v in window.items() if v},
                }
            )
            window = {t: [] for t in terms}
            bar.set_postfix(log[-1])
            _save_checkpoint(ckpt_path, args, model, optimizer, scheduler, step, time.perf_counter() - start, log)
    bar.close()
    elapsed = time.perf_counter() - start
    if any(window.values()):  # stopped by the time limit between two log points
        log.append(
            {
                "step": step,
                "seconds": round(elapsed, 1),
                **{f"{t}_loss": float(np.mean(v)) for t, v in window.items() if v},
            }
        )
    dev = dev_loss(model, tok, locales, source, dev_per_locale, max_len, seed)
    model.eval()
    models.save_classifier(model, tok, encoder_dir)
    record = {
        "args": args,
        "steps_done": step,
        "stopped_by": stopped,
        "train_seconds": round(elapsed, 1),
        "examples_per_second": round(step * batch_size / max(elapsed, 1e-9), 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "dev_mlm_loss": dev,
        "dev_mlm_loss_mean": float(np.mean(list(dev.values()))),
        "log": log,
        "saw": "the unlabeled train-split utterances of every locale listed"
        + ("" if terms == ["mlm"] else ", and MASSIVE's translation pairs (same id) among them"),
        "versions": report.versions(),
    }
    paths.write_json(record_path, record)
    checkpoint.discard(ckpt_path)
    return encoder_dir


def ensure(
    profile: str,
    *,
    objective: str,
    base_model: str | os.PathLike | None = None,
    seed: int = 42,
    tokenizer_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Path:
    """Pretrain (if needed) ``models/<profile>/pretrained/<objective>`` with the shared tokenizer
    (``tokenizer_dir``, default ``models/<profile>/tokenizer``), then save the profile's base
    (``base_model``, default ``models/<profile>/base``): the encoder with a 60-label head initialised
    once with ``seed`` (``mu.learn.models.prepare_base``)."""
    name = objective.replace("+", "-")
    encoder = pretrain(
        paths.models_dir(profile, "pretrained", name),
        objective=objective,
        tokenizer_dir=tokenizer_dir or paths.models_dir(profile, "tokenizer"),
        seed=seed,
        **kwargs,
    )
    return models.prepare_base(str(encoder), base_model or paths.models_dir(profile, "base"), seed=seed)


def steps_for(minutes: float, examples_per_second: float, batch_size: int) -> int:
    """Steps that fit ``minutes`` at a measured speed (to size ``steps`` so the schedule ends in time)."""
    return max(1, math.floor(minutes * 60 * examples_per_second / batch_size))
