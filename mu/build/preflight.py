"""Checks before a merge reads any weight, the base model of task-vector methods, and a memory estimate.

``check_sources`` reads only configs, tokenizer files and safetensors headers: the sources must
share labels (the same names in the same order), a tokenizer with the same vocabulary, and the
architecture and tensor shapes (``mu.learn.models.check_compatible`` on the configs, then
``mu.learn.models.check_architecture`` of each header against its config). A bad source is a ValueError
naming it, before anything is downloaded beyond those small files or merged.

The base. Task-vector methods subtract a pretrained base. Fine-tuned classifiers usually start
from an encoder checkpoint (``xlm-roberta-base``) that has no classification head: its tensors
cover the sources' encoder (under the same names, or without the ``roberta.`` prefix) but not
``classifier.*``. ``base_fit`` says which case holds; ``write_adapted_base`` then writes a base
folder with the encoder from the checkpoint and, for the head, the weighted mean of the sources'
heads: the head's task vectors are then deviations from that mean, so under task arithmetic the
head is the linear merge for any λ, and TIES / DARE trim deviations from it. A base with another
tokenizer vocabulary than the sources is refused (``check_base_vocab``); whether it needs adapting
is decided from its config and header (``configs_agree``, ``same_as_sources``), before its weights
are downloaded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from mu.core import paths
from mu.langs.similarity import check_weights
from mu.learn import models
from mu.merge import catalog, chunks, lazy

Header = dict[str, tuple[tuple[int, ...], str]]  # {tensor: (shape, safetensors dtype)}
FLOAT_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
BYTES = {**FLOAT_DTYPES, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def header(folder: str | os.PathLike) -> Header:
    """The tensors of a model folder's safetensors file(s), from their headers (no tensor read)."""
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() and not (folder / "model.safetensors.index.json").is_file():
        raise ValueError(
            f"model {folder} has no model.safetensors (nor a sharded index): only safetensors "
            "weights are merged (their headers are checked before anything is read)"
        )
    sd = lazy.open_model(folder)
    return {k: (tuple(shape), _dtype_name(dtype)) for k, (shape, dtype) in lazy.meta(sd).items()}


def remote_header(repo_id: str) -> Header:
    """A hub model's tensors from its safetensors header(s), fetched without the weights."""
    from huggingface_hub import get_safetensors_metadata

    try:
        meta = get_safetensors_metadata(repo_id)
    except Exception as e:  # offline, not found, no safetensors: huggingface_hub raises many types
        raise ValueError(
            f"cannot read the safetensors header of {repo_id} from the hub: {type(e).__name__}: {e}"
        ) from e
    return {
        name: (tuple(info.shape), info.dtype)
        for file in meta.files_metadata.values()
        for name, info in file.tensors.items()
    }


def _dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in lazy.DTYPES.items()}[dtype]


def num_bytes(head: Header) -> int:
    return sum(math.prod(shape) * BYTES.get(dt, 4) for shape, dt in head.values())


def has_tokenizer(folder: str | os.PathLike) -> bool:
    return models.vocab_fingerprint(folder) is not None


def _labels(config: Any) -> list[str]:
    return [config.id2label[i] for i in sorted(int(k) for k in config.id2label)] if config.id2label else []


def check_labels(configs: Mapping[str, Any]) -> list[str]:
    """The sources' labels (``id2label`` in id order) must be the same; returns them."""
    ref_name, ref = next(iter(configs.items()))
    ref_labels = _labels(ref)
    for name, config in configs.items():
        labels = _labels(config)
        if labels == ref_labels:
            continue
        only, missing = sorted(set(labels) - set(ref_labels)), sorted(set(ref_labels) - set(labels))
        detail = (
            f"labels only in {name}: {only[:10]}, only in {ref_name}: {missing[:10]}"
            if only or missing
            else "the same names in a different order (their ids differ)"
        )
        raise ValueError(
            f"sources have different label sets: {name} has {len(labels)} labels, {ref_name} has "
            f"{len(ref_labels)}; {detail}. A merge needs one label space: give sources fine-tuned "
            "on the same labels"
        )
    return ref_labels


def check_sources(folders: Mapping[str, str | os.PathLike], headers: Mapping[str, Header]) -> dict[str, Any]:
    """Everything a merge needs of its sources, from configs, tokenizer files and headers (no weights).

    ``folders``: {label: local folder with config.json and tokenizer files}; ``headers``: {label:
    safetensors header} (local or fetched from the hub). Returns the first source's config and facts
    for the plan (labels, parameters, bytes). ValueError naming the first bad source otherwise.
    """
    from transformers import AutoConfig

    configs = {}
    for name, folder in folders.items():
        folder = Path(folder)
        if not (folder / models.CONFIG_FILE).is_file():
            raise ValueError(f"source {name} ({folder}) has no {models.CONFIG_FILE}")
        try:
            configs[name] = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise ValueError(f"source {name}: cannot read {folder / models.CONFIG_FILE}: {e}") from e
        if not has_tokenizer(folder):
            raise ValueError(
                f"source {name} ({folder}) has no tokenizer (tokenizer.json or "
                "sentencepiece.bpe.model): the merged model needs one, and the sources' vocabularies "
                "must be compared before merging"
            )
    labels = check_labels(configs)
    models.check_compatible(configs)
    vocab = {name: models.vocab_fingerprint(folder) for name, folder in folders.items()}
    ref = next(iter(vocab))
    for name, fp in vocab.items():
        if fp != vocab[ref]:
            raise ValueError(f"source {name} is incompatible: its tokenizer vocabulary differs from {ref}'s")
    for name, head in headers.items():
        models.check_architecture(configs[name], {k: v[0] for k, v in head.items()}, f"source {name}")
        bad = sorted(k for k, (_, dt) in head.items() if dt not in FLOAT_DTYPES)
        if bad:
            raise ValueError(f"source {name}: tensors {bad[:5]} are not floating point; only those can be merged")
    first = headers[next(iter(headers))]
    return {
        "config": configs[next(iter(configs))],
        "labels": labels,
        "num_parameters": sum(math.prod(s) for s, _ in first.values()),
        "largest_tensor": max(math.prod(s) for s, _ in first.values()),
        "bytes_per_source": num_bytes(first),
    }


# --- the base -------------------------------------------------------------------------------------------


def front_matter(folder: str | os.PathLike) -> dict:
    """The YAML front matter of a folder's README.md (a model card), {} when there is none."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    block = text[3:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(block)
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def declared_base(folder: str | os.PathLike) -> str | None:
    """The pretrained model a source says it was fine-tuned from: mu's ``training_args.json``, the model
    card's ``base_model``, or a ``_name_or_path`` left in config.json; None when it says nothing."""
    folder = Path(folder)
    stamp = folder / "training_args.json"
    if stamp.is_file():
        base = (paths.read_json(stamp).get("params") or {}).get("base_model")
        if base:
            return str(paths.resolve(base)) if paths.resolve(base).is_dir() else str(base)
    card = front_matter(folder).get("base_model")
    if isinstance(card, list) and len(card) == 1:
        card = card[0]
    if isinstance(card, str) and card:
        return card
    try:
        raw = json.loads((folder / models.CONFIG_FILE).read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, json.JSONDecodeError):
        raw = None
    if isinstance(raw, str) and raw and Path(raw).resolve() != folder.resolve() and not Path(raw).is_absolute():
        return raw
    return None


def check_base_vocab(base: Path, source: Path) -> None:
    """A base whose tokenizer differs from the sources' has other tokens behind the same embedding rows: its
    task vectors would be meaningless. Compared where both keep the vocabulary in the same kind of file."""
    if (base / "tokenizer.json").is_file() != (source / "tokenizer.json").is_file():
        return
    vocab = models.vocab_fingerprint(base)
    if vocab is not None and vocab != models.vocab_fingerprint(source):
        raise ValueError(
            f"the base {base} has another tokenizer vocabulary than the sources: pass the base they were "
            "fine-tuned from (--base)"
        )


def configs_agree(base: Path, source: Path) -> bool:
    """The base's config is the sources' (read from the small files: a hub base's weights may not be here yet)."""
    from transformers import AutoConfig

    try:
        configs = {"source": AutoConfig.from_pretrained(source), "base": AutoConfig.from_pretrained(base)}
        models.check_compatible(configs)
    except (ValueError, OSError):
        return False
    return True


def base_fit(base: Header, source: Header) -> dict[str, str | None]:
    """``{source tensor: base tensor, or None for the head}``: each source tensor found in the base under
    its own name or without its first prefix (``roberta.``), with the same shape. Tensors outside the
    encoder (those not under the prefix most tensors share: the classification head) may be absent (None).
    ValueError when an encoder tensor is absent or shaped otherwise."""
    prefix = max({k.split(".")[0] for k in source}, key=lambda p: sum(k.startswith(p + ".") for k in source))
    fit: dict[str, str | None] = {}
    missing, shapes = [], {}
    for key, (shape, _) in source.items():
        for cand in (key, *([key[len(prefix) + 1 :]] if key.startswith(prefix + ".") else [])):
            if cand in base:
                if base[cand][0] != shape:
                    shapes[key] = (base[cand][0], shape)
                fit[key] = cand
                break
        else:
            if key.startswith(prefix + "."):
                missing.append(key)
            fit[key] = None
    if missing or shapes:
        raise ValueError(
            "the base does not fit the sources: "
            + "; ".join(
                ([f"encoder tensors missing from it: {missing[:5]}"] if missing else [])
                + ([f"shapes differ (base vs sources): {dict(list(shapes.items())[:5])}"] if shapes else [])
            )
        )
    return fit


def same_as_sources(fit: Mapping[str, str | None], base: Header, source: Header) -> bool:
    """The base can be used as it is: it has exactly the sources' tensors, under the same names."""
    return set(base) == set(source) and all(fit[k] == k for k in source)


def write_adapted_base(
    base_dir: str | os.PathLike,
    fit: Mapping[str, str | None],
    sources: Mapping[str, str | os.PathLike],
    weights: Mapping[str, float],
    out_dir: str | os.PathLike,
) -> Path:
    """A base folder shaped like the sources: config and tokenizer of the first source, the encoder from
    ``base_dir``, each tensor without a counterpart there the ``weights``-weighted mean of the sources'."""
    from safetensors.torch import save_file
    from transformers import AutoConfig

    w = check_weights(weights, list(sources))
    base = lazy.open_model(base_dir)
    opened = {name: lazy.open_model(folder) for name, folder in sources.items()}
    first = next(iter(sources))
    tensors = {}
    for key, src in fit.items():
        dtype = lazy.meta(opened[first])[key][1]
        if src is not None:
            tensors[key] = base[src].to(dtype).contiguous()
        else:
            tensors[key] = sum(w[n] * opened[n][key].to(torch.float32) for n in sources).to(dtype).contiguous()
    out = Path(out_dir)
    out.mkdir(parents=True)
    AutoConfig.from_pretrained(sources[first]).save_pretrained(out)
    models.load_tokenizer(sources[first], "save").save_pretrained(out)
    save_file(tensors, str(out / models.WEIGHTS_FILE), metadata={"format": "pt"})
    return out


# --- memory ---------------------------------------------------------------------------------------------

# Scratch beyond the float32 output and one chunk per input, in units of 4T (T: the largest tensor's
# elements), as measured in mu.merge.run's table (N: sources).
_SCRATCH_4T = {
    "ties": lambda n: 2,
    "breadcrumbs": lambda n: 2,
    "breadcrumbs_ties": lambda n: 2,
    "dare_ties": lambda n: 1 + n / 4,
    "dare_linear": lambda n: 1 + n / 4,
    "della": lambda n: 2 + n / 4,
    "della_linear": lambda n: 2 + n / 4,
    "sce": lambda n: 2.25,
    "multislerp": lambda n: 1,
    "model_stock": lambda n: 1,
    "tsv_m": lambda n: 2,
    "iso_c": lambda n: 2,
    "iso_cts": lambda n: 2,
}


def memory_estimate(
    method: str, num_parameters: int, largest: int, num_sources: int, with_base: bool
) -> dict[str, int]:
    """Rough peak bytes of ``merge_models`` (its documented table): the float32 output, one chunk per
    input, and the method's scratch; methods that are not streamed hold one float32 tensor per input."""
    out = 4 * num_parameters
    inputs = num_sources + int(with_base)
    if catalog.get(method).reads in ("chunks", "matrices"):
        scratch = inputs * 4 * min(chunks.CHUNK_ELEMENTS, largest) + int(
            4 * largest * _SCRATCH_4T.get(method, lambda n: 0)(num_sources)
        )
    else:
        scratch = (inputs + 2) * 4 * largest
    return {"output": out, "scratch": scratch, "peak": out + scratch}


def gib(n: int | float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"
