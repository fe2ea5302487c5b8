"""What a method needs computed before it merges: each source's data statistics (Fisher diagonals for
``fisher_dataset``, Gram matrices for ``regmean``; the catalog's ``Method.statistics`` names the kind).

One function, shared by ``merge_models`` (which caches the result per source) and iterative training
(which computes it for every cycle's sources), so both compute the same statistics the same way.
"""

from __future__ import annotations

from typing import Any

import torch

from mu.merge.fisher import fisher_diagonal
from mu.merge.regmean import regmean_grams

COMPUTE = {"fishers": fisher_diagonal, "grams": regmean_grams}


def statistics(
    kind: str,
    model: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    num_examples: int,
    batch_size: int,
    max_seq_length: int,
    seed: int,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """``kind`` statistics of one fine-tuned ``model`` on its own labeled ``dataset`` (seeded sample)."""
    if kind not in COMPUTE:
        raise ValueError(f"unknown statistics {kind!r}; valid: {sorted(COMPUTE)}")
    return COMPUTE[kind](
        model,
        tokenizer,
        dataset,
        num_examples=num_examples,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        seed=seed,
        device=device,
    )
