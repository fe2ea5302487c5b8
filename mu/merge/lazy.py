"""State dicts read lazily from disk, one tensor at a time (for streaming merges).

A :class:`LazyStateDict` is a read-only mapping over a model folder's
``model.safetensors`` (or sharded ``model.safetensors.index.json``): keys,
shapes and dtypes come from the file headers; ``sd[key]`` reads that one tensor
(and closes the file again, so no mapping of the whole file stays resident).
Legacy ``pytorch_model.bin`` folders are memory-mapped with ``torch.load``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Mapping

import torch
from safetensors import safe_open

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class LazyStateDict(Mapping[str, torch.Tensor]):
    """Read-only ``{name: tensor}`` over safetensors files; tensors are read on access."""

    def __init__(self, files: Mapping[str, str | os.PathLike]):
        """``files``: tensor name → the .safetensors file that holds it."""
        self._files = {k: str(v) for k, v in files.items()}
        self._meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for file in sorted(set(self._files.values())):
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    if key in self._files and self._files[key] == file:
                        sl = f.get_slice(key)
                        if sl.get_dtype() not in DTYPES:
                            raise ValueError(f"{file}: tensor {key} has dtype {sl.get_dtype()}, which mu cannot "
                                             f"merge; supported: {sorted(DTYPES)}")
                        self._meta[key] = (tuple(sl.get_shape()), DTYPES[sl.get_dtype()])
        absent = sorted(set(self._files) - set(self._meta))
        if absent:
            raise ValueError(f"tensors {absent[:5]} are listed but not present in their safetensors files")

    @classmethod
    def from_file(cls, file: str | os.PathLike) -> "LazyStateDict":
        with safe_open(str(file), framework="pt") as f:
            return cls({key: file for key in f.keys()})

    def __getitem__(self, key: str) -> torch.Tensor:
        with safe_open(self._files[key], framework="pt") as f:
            return f.get_tensor(key)

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def meta(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return dict(self._meta)


def meta(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{name: (shape, dtype)} without reading lazy tensors."""
    if callable(getattr(state_dict, "meta", None)):  # LazyStateDict, or a wrapper of one (mu.merge.checks)
        return state_dict.meta()
    return {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}


def open_model(folder: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """A model folder's weights as a lazily read state dict; ValueError naming the folder if it has none."""
    folder = Path(folder)
    single, index, legacy = (folder / "model.safetensors", folder / "model.safetensors.index.json",
                             folder / "pytorch_model.bin")
    try:
        if single.is_file():
            return LazyStateDict.from_file(single)
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return LazyStateDict({k: folder / v for k, v in weight_map.items()})
        if legacy.is_file():
            return torch.load(legacy, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # safetensors / torch raise their own types for corrupt files
        raise ValueError(f"cannot read the weights in {folder}: {e}") from e
    raise ValueError(f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json "
                     "or pytorch_model.bin")
