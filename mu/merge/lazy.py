"""State dicts read lazily from disk, one tensor (or a range of its rows) at a time, for streaming merges.

A :class:`LazyStateDict` is a read-only mapping over a model folder's
``model.safetensors`` (or sharded ``model.safetensors.index.json``): names,
shapes, dtypes and byte offsets come from the file headers; ``sd[key]`` reads
that one tensor and ``sd.read(key, start, stop)`` rows ``start:stop`` of it
(contiguous bytes of the file), straight from the file into a fresh tensor
(``os.preadv``: no memory map, so nothing of the file is counted in this
process's RSS beyond the tensor returned). :func:`rows` slices any state dict
the same way; :func:`select` restricts one to some names without reading it.
Legacy ``pytorch_model.bin`` folders are memory-mapped with ``torch.load``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _header(file: str) -> tuple[dict, int]:
    """The safetensors header of ``file`` and the offset where its data starts."""
    with open(file, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size <= 0 or size > 100 * 2**20:
            raise ValueError(f"{file} is not a safetensors file (header size {size})")
        return json.loads(f.read(size)), 8 + size


class LazyStateDict(Mapping[str, torch.Tensor]):
    """Read-only ``{name: tensor}`` over safetensors files; tensors are read on access."""

    def __init__(self, files: Mapping[str, str | os.PathLike]):
        """``files``: tensor name → the .safetensors file that holds it."""
        self._files = {k: str(v) for k, v in files.items()}
        # called as on_read(key, tensor) after every read (whole tensor or rows): mu.merge.checks sets it
        self.on_read: Callable[[str, torch.Tensor], None] | None = None
        self._meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        for file in sorted(set(self._files.values())):
            header, start = _header(file)
            for key, info in header.items():
                if key == "__metadata__" or self._files.get(key) != file:
                    continue
                if info["dtype"] not in DTYPES:
                    raise ValueError(
                        f"{file}: tensor {key} has dtype {info['dtype']}, which mu cannot "
                        f"merge; supported: {sorted(DTYPES)}"
                    )
                begin, end = info["data_offsets"]
                self._meta[key] = (tuple(info["shape"]), DTYPES[info["dtype"]])
                self._offsets[key] = (start + begin, start + end)
        for file in sorted(set(self._files.values())):  # a truncated file is refused here, not mid-merge
            need = max((end for k, (_, end) in self._offsets.items() if self._files[k] == file), default=0)
            if os.path.getsize(file) < need:
                raise ValueError(f"{file} is truncated: {os.path.getsize(file)} bytes, its tensors need {need}")
        absent = sorted(set(self._files) - set(self._meta))
        if absent:
            raise ValueError(f"tensors {absent[:5]} are listed but not present in their safetensors files")

    @classmethod
    def from_file(cls, file: str | os.PathLike) -> LazyStateDict:
        header, _ = _header(str(file))
        return cls({key: file for key in header if key != "__metadata__"})

    def read(
        self, key: str, start: int | None = None, stop: int | None = None, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tensor ``key``, or its rows ``start:stop`` (first dimension), read from the file
        (into ``out``, a contiguous CPU tensor of its dtype and size, when given)."""
        shape, dtype = self._meta[key]
        begin, end = self._offsets[key]
        if start is not None or stop is not None:
            if not shape:
                raise ValueError(f"tensor {key} is a scalar; it has no rows to read")
            start, stop, _ = slice(start, stop).indices(shape[0])
            stop = max(start, stop)
            row = (end - begin) // shape[0] if shape[0] else 0
            begin, end, shape = begin + start * row, begin + stop * row, (stop - start, *shape[1:])
        if out is None:
            out = torch.empty(shape, dtype=dtype)
        elif out.dtype != dtype or out.numel() != math.prod(shape) or not out.is_contiguous() or out.is_cuda:
            raise ValueError(
                f"cannot read tensor {key} ({dtype}, {shape}) into a {out.dtype} tensor of {out.numel()} elements"
            )
        else:
            out = out.view(shape)
        if end > begin:
            view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
            fd = os.open(self._files[key], os.O_RDONLY)
            try:
                done = 0
                while done < end - begin:
                    got = os.preadv(fd, [view[done:]], begin + done)
                    if got <= 0:
                        raise ValueError(f"{self._files[key]} ends before tensor {key} does")
                    done += got
            finally:
                os.close(fd)
        if self.on_read is not None:
            self.on_read(key, out)
        return out

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.read(key)

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def meta(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return dict(self._meta)

    def spec(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        """(shape, dtype) of one tensor."""
        return self._meta[key]


class Selection(Mapping[str, torch.Tensor]):
    """Some names of a state dict, still unread (what ``mu.merge.merge`` hands a method per tensor)."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], keys: Iterable[str]):
        self.parent, self._keys = state_dict, list(keys)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self.parent[key]

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the tensor
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def select(state_dict: Mapping[str, torch.Tensor], keys: Iterable[str]) -> Selection:
    return Selection(state_dict, keys)


def is_lazy(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether tensors of ``state_dict`` are read fresh from disk on access (never shared with the caller)."""
    while isinstance(state_dict, Selection):
        state_dict = state_dict.parent
    return isinstance(state_dict, LazyStateDict)


def rows(state_dict: Mapping[str, torch.Tensor], key: str, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of tensor ``key`` (elements, for a 1-D tensor), reading only those from disk
    when the state dict is lazy."""
    while isinstance(state_dict, Selection):
        if key not in state_dict:
            raise KeyError(key)
        state_dict = state_dict.parent
    if isinstance(state_dict, LazyStateDict):
        return state_dict.read(key, start, stop)
    return state_dict[key][start:stop]


def meta(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{name: (shape, dtype)} without reading lazy tensors."""
    if isinstance(state_dict, Selection):
        parent = meta(state_dict.parent)
        return {k: parent[k] for k in state_dict}
    if isinstance(state_dict, LazyStateDict):
        return state_dict.meta()
    return {k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}


def open_model(folder: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """A model folder's weights as a lazily read state dict; ValueError naming the folder if it has none."""
    folder = Path(folder)
    single, index, legacy = (
        folder / "model.safetensors",
        folder / "model.safetensors.index.json",
        folder / "pytorch_model.bin",
    )
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
    raise ValueError(
        f"no weights in {folder}: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )
