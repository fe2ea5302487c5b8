"""Batches of tokenised utterances padded only to their longest member, for fine-tuning and evaluation.

MASSIVE utterances are short and vary several-fold in length (~5-30 tokens), so a batch drawn at random
and padded to its longest member is mostly padding; every matmul of the encoder then works on pad tokens.
Grouping examples of similar length removes most of it without changing what is computed per example
(padding is masked out of attention):

* ``sorted_batches`` (evaluation): every example sorted by length, longest first; the caller writes each
  batch's outputs back at its indices, so results come out in the original order.
* ``bucketed_batches`` (training): the examples shuffled, cut into megabatches of ``MEGABATCH`` batches,
  each sorted by length and cut into batches, and then the batches themselves shuffled, so an epoch still
  sees every example once, in batches whose membership and order are random (the long and the short ones are
  not grouped at one end of the epoch), decided by a seeded generator only.

``encode`` tokenises once into one padded array, so a step only slices it (``collate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

MEGABATCH = 16  # batches per length-sorted megabatch: nearly all the padding saved, the batches still random


def token_ids(tokenizer: Any, texts: Sequence[str], max_seq_length: int) -> list[list[int]]:
    """``tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]``, from a fast tokenizer's
    Rust backend directly: the Python wrapper's conversion of each encoding costs about twice the tokenisation,
    and an N×N matrix tokenises every split once per model. The backend's truncation and padding settings
    are restored after."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None or getattr(tokenizer, "truncation_side", "right") != "right":
        return tokenizer(list(texts), truncation=True, max_length=max_seq_length)["input_ids"]
    truncation, padding = backend.truncation, backend.padding
    backend.enable_truncation(max_seq_length)  # longest_first, stride 0, from the right: the wrapper's
    backend.no_padding()
    try:
        return [e.ids for e in backend.encode_batch_fast(list(texts), add_special_tokens=True)]
    finally:
        backend.no_truncation() if truncation is None else backend.enable_truncation(**truncation)
        backend.no_padding() if padding is None else backend.enable_padding(**padding)


def encode(tokenizer: Any, texts: Sequence[str], max_seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(``input_ids [n, longest]`` int64 padded with the tokenizer's pad id, ``lengths [n]``), truncated to
    ``max_seq_length`` tokens, special tokens included: one tokenizer call for all the texts."""
    enc = token_ids(tokenizer, texts, max_seq_length)
    lengths = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
    ids = np.full((len(enc), int(lengths.max(initial=1))), tokenizer.pad_token_id, dtype=np.int64)
    for row, e in enumerate(enc):
        ids[row, : len(e)] = e
    return ids, lengths


def collate(ids: np.ndarray, lengths: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(``input_ids``, ``attention_mask``) of the examples ``idx``, padded to the longest of them."""
    width = int(lengths[idx].max())
    batch = torch.from_numpy(np.ascontiguousarray(ids[idx, :width]))
    mask = (torch.arange(width) < torch.from_numpy(lengths[idx])[:, None]).long()
    return batch, mask


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices of batches of ``batch_size`` over every example, longest first (ties in index order)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, generator: torch.Generator, megabatch: int = MEGABATCH
) -> list[np.ndarray]:
    """One epoch's batches (indices): every example once, ``ceil(n / batch_size)`` batches, all of
    ``batch_size`` but one when ``batch_size`` does not divide n; drawn from ``generator`` only."""
    n = len(lengths)
    perm = torch.randperm(n, generator=generator).numpy()
    size = batch_size * megabatch
    batches = []
    for start in range(0, n, size):
        chunk = perm[start : start + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
