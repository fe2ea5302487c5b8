"""Validation of a merge's numbers: every input tensor finite (checked as it is read, through
``LazyStateDict.on_read``, so a chunked merge reads nothing twice), and the output matching the
architecture and finite before anything is written. ``mu.merge.run.merge_models`` calls ``checked_inputs`` where it
opens the inputs and ``check_output`` before it saves."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch

from mu.merge import lazy


def check_finite(tensor: torch.Tensor, where: str, key: str) -> None:
    """A ValueError naming ``where`` and ``key`` when ``tensor`` holds a NaN or inf. Fast path: a finite sum
    means every value is finite (NaN and inf propagate); only a non-finite sum (possibly a finite overflow)
    is checked value by value. (Per 1M float32 on the 2-core VM: ``isfinite(t).all()`` 2.4 ms, the sum
    0.05 ms; with every chunked read checked, ``isfinite`` took 5.8 s of a 12.2 s profiled slerp merge.)"""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
        return
    if not bool(torch.isfinite(tensor).all()):
        bad = tensor.numel() - int(torch.isfinite(tensor).sum())
        raise ValueError(f"{where}: tensor {key} has {bad} non-finite value(s) (NaN or inf) of {tensor.numel()}")


def checked_inputs(state_dicts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Mapping[str, torch.Tensor]]:
    """``{name: state dict}`` checked so that a non-finite tensor is a ValueError naming the input
    (source locale or ``<base>``) and the tensor. A lazy state dict checks each read (whole tensor or
    rows, so chunked merges stay lazy and read nothing twice); one in memory is checked now."""
    for name, sd in state_dicts.items():
        if isinstance(sd, lazy.LazyStateDict):
            sd.on_read = functools.partial(_check_read, f"merge input {name}")
        else:
            for key, tensor in sd.items():
                check_finite(tensor, f"merge input {name}", key)
    return dict(state_dicts)


def _check_read(where: str, key: str, tensor: torch.Tensor) -> None:
    check_finite(tensor, where, key)


def check_output(config, merged: Mapping[str, torch.Tensor], where: str) -> None:
    """The merged tensors must be exactly the architecture's (``mu.learn.models.check_architecture``, the
    check model loading uses) and finite."""
    from mu.learn import models

    models.check_architecture(config, {k: tuple(v.shape) for k, v in merged.items()}, where)
    for key, tensor in merged.items():
        check_finite(tensor, where, key)
