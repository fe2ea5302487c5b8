"""Validation of a merge's numbers: every input tensor finite (checked as it is read, so a
streaming merge reads nothing twice), and the output matching the architecture and finite
before anything is written. ``mu.merge.run.merge_models`` calls ``checked_inputs`` where it
opens the inputs and ``check_output`` before it saves."""

from __future__ import annotations

from typing import Iterator, Mapping

import torch

from mu.merge import lazy


class FiniteStateDict(Mapping[str, torch.Tensor]):
    """A read-only view of a (lazy) state dict whose tensors are checked finite on access."""

    def __init__(self, name: str, state_dict: Mapping[str, torch.Tensor]):
        self.name, self._sd = name, state_dict

    def __getitem__(self, key: str) -> torch.Tensor:
        tensor = self._sd[key]
        check_finite(tensor, f"merge input {self.name}", key)
        return tensor

    def __contains__(self, key: object) -> bool:
        return key in self._sd

    def __iter__(self) -> Iterator[str]:
        return iter(self._sd)

    def __len__(self) -> int:
        return len(self._sd)

    def meta(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return lazy.meta(self._sd)


def check_finite(tensor: torch.Tensor, where: str, key: str) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = tensor.numel() - int(torch.isfinite(tensor).sum())
        raise ValueError(f"{where}: tensor {key} has {bad} non-finite value(s) (NaN or inf) of {tensor.numel()}")


def checked_inputs(state_dicts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, FiniteStateDict]:
    """``{name: state dict}`` wrapped so that reading a non-finite tensor is a ValueError naming
    the input (source locale or ``<base>``) and the tensor."""
    return {name: FiniteStateDict(name, sd) for name, sd in state_dicts.items()}


def check_output(config, merged: Mapping[str, torch.Tensor], where: str) -> None:
    """The merged tensors must be exactly the architecture's (``mu.models.check_architecture``, the
    check model loading uses) and finite."""
    from mu import models

    models.check_architecture(config, {k: tuple(v.shape) for k, v in merged.items()}, where)
    for key, tensor in merged.items():
        check_finite(tensor, where, key)
