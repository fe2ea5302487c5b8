"""Seeded, tokenised batches of a source's own training data, for Fisher / RegMean statistics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from datasets import Dataset


def sample(dataset: Dataset, num_examples: int, seed: int) -> Dataset:
    """``num_examples`` examples drawn with ``seed`` (all of them if the split is smaller)."""
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    if len(dataset) == 0:
        raise ValueError("cannot compute merge statistics on an empty dataset")
    return dataset.shuffle(seed=seed).select(range(min(num_examples, len(dataset))))


def batches(
    dataset: Dataset, tokenizer: Any, *, batch_size: int, max_seq_length: int, device: torch.device | str = "cpu"
) -> Iterator[dict[str, torch.Tensor]]:
    """Padded model inputs (``input_ids``, ``attention_mask``, ``labels``) of ``batch_size`` examples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        enc = tokenizer(rows["text"], truncation=True, max_length=max_seq_length, padding=True, return_tensors="pt")
        yield {
            "input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device),
            "labels": torch.as_tensor(rows["label"], device=device),
        }
