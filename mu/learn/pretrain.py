"""A small XLM-R-architecture encoder pretrained here, without labels, standing in for xlm-roberta-base.

``tokenizer(...)`` trains a unigram tokenizer (``mu.learn.bases.train_tokenizer``) on the *train-split*
utterances of the locales; ``pretrain(...)`` trains ``XLMRobertaForMaskedLM`` on the same text with
one of ``OBJECTIVES``; ``ensure(...)`` does both and saves the profile's base
(``mu.learn.bases.prepare_base``: the 60-label head initialised once with ``seed``). Dev and test text
are never seen; labels are never read.

Objectives (``mu.learn.mlm`` holds the corpus, the masking and each term's loss; the steps cycle
through the terms, one batch each, so every term gets the same share):

* ``mlm``: masked-LM on monolingual utterances (as XLM-R);
* ``mlm+tlm``: plus translation-LM (as XLM): the same MASSIVE ``id`` in two locales, masked jointly;
* ``mlm+tlm+align``: plus a contrastive term on those translation pairs (in-batch InfoNCE).

Embedding initialisation (``EMBEDDING_INITS``): ``random`` (as XLM-R), or ``parallel-svd``: the
token embeddings start as cross-lingual vectors read off MASSIVE's parallel train text
(``mu.learn.mlm.parallel_embeddings``).

Deterministic from ``seed`` (each step's batch and masking are drawn from ``(seed, step)``; the
torch RNG is checkpointed). Resumable: ``checkpoint.pt`` (tensors and plain
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
from tqdm.auto import tqdm
from transformers import AutoTokenizer, XLMRobertaForMaskedLM

from mu.core import checkpoint, paths, report, threads
from mu.corpus import data as mu_data
from mu.langs import locales as mu_locales
from mu.learn import bases, mlm, models

OBJECTIVES = ("mlm", "mlm+tlm", "mlm+tlm+align")
EMBEDDING_INITS = ("random", "parallel-svd")


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
    tok = bases.train_tokenizer(texts, vocab_size)
    with paths.atomic_path(out) as tmp:
        tok.save_pretrained(tmp)
        paths.write_json(tmp / "tokenizer_args.json", args)
    return AutoTokenizer.from_pretrained(out)


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
    corpus = mlm.Corpus(texts, tok, max_len)
    torch.manual_seed(seed)
    config = bases.encoder_config(
        len(tok),
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        pad_token_id=mlm.PAD,
        bos_token_id=mlm.BOS,
        eos_token_id=mlm.EOS,
        architectures=["XLMRobertaForMaskedLM"],
    )
    model = XLMRobertaForMaskedLM(config)
    if embedding_init == "parallel-svd":
        vectors, seen = mlm.parallel_embeddings(corpus, len(tok), hidden_size, seed)
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
        loss = mlm.step_loss(model, corpus, term, batch_size, seed, step)
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
    dev = mlm.dev_loss(model, tok, locales, source, dev_per_locale, max_len, seed)
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
    once with ``seed`` (``mu.learn.bases.prepare_base``)."""
    name = objective.replace("+", "-")
    encoder = pretrain(
        paths.models_dir(profile, "pretrained", name),
        objective=objective,
        tokenizer_dir=tokenizer_dir or paths.models_dir(profile, "tokenizer"),
        seed=seed,
        **kwargs,
    )
    return bases.prepare_base(str(encoder), base_model or paths.models_dir(profile, "base"), seed=seed)


def steps_for(minutes: float, examples_per_second: float, batch_size: int) -> int:
    """Steps that fit ``minutes`` at a measured speed (to size ``steps`` so the schedule ends in time)."""
    return max(1, math.floor(minutes * 60 * examples_per_second / batch_size))
