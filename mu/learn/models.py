"""Source models: where a locale's model lives, checks of a model folder, loading/saving, compatibility.

A locale's fine-tuned model is ``<models_dir>/xlm-roberta-base_massive_k_<locale>``
(HF format, safetensors) or, on the hub, ``haryoaw/xlm-roberta-base_massive_k_<locale>``.
Every model is an ``XLMRobertaForSequenceClassification`` with the 60 MASSIVE
labels of ``mu.corpus.massive.ID2LABEL``.

All sources of a profile fine-tune from one saved base (``models/<profile>/base``,
``mu.learn.bases``) whose classifier head was initialised once, with a fixed seed: merging heads
trained from different random inits is a known failure.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from mu.core import cache, paths, threads
from mu.corpus import massive  # the label space only: loading models needs no datasets import

if TYPE_CHECKING:  # the model classes' module costs ~2 s to import; merging and checking never need it
    from transformers import XLMRobertaForSequenceClassification

NAME_PATTERN = "xlm-roberta-base_massive_k_{locale}"
HUB_ORG = "haryoaw"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# Config fields that must agree between models that are merged or ensembled.
COMPAT_FIELDS = (
    "model_type",
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "vocab_size",
    "num_labels",
    "id2label",
)
TINY_PARAMS = 5_000_000  # below this, a model runs on one CPU thread (see cpu_threads)


def source_path(locale: str, models_dir: str | os.PathLike) -> Path:
    """Folder of ``locale``'s model under ``models_dir`` (relative to the project root)."""
    return paths.resolve(models_dir) / NAME_PATTERN.format(locale=locale)


def hub_id(locale: str) -> str:
    return f"{HUB_ORG}/{NAME_PATTERN.format(locale=locale)}"


def resolve(locale: str, models_dir: str | os.PathLike, allow_hub: bool = False) -> str:
    """Local model folder if present, else the hub id if ``allow_hub``, else ValueError."""
    folder = source_path(locale, models_dir)
    if folder.exists():
        check_model_dir(folder)
        return str(folder)
    if allow_hub:
        return hub_id(locale)
    raise ValueError(
        f"no model for {locale!r}: {folder} does not exist; "
        f"locales with a model in {paths.resolve(models_dir)}: {available_sources(models_dir)}"
    )


def num_parameters(folder: str | os.PathLike) -> int:
    """Number of parameters in a model folder's ``model.safetensors``, read from its header (no tensor loaded)."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / WEIGHTS_FILE), framework="pt") as f:
        return int(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()))


def fit_workers(folder: str | os.PathLike) -> int:
    """Processes to run at once over many models like the one in ``folder``: one per free core
    (``mu.core.threads.count()``, ``OMP_NUM_THREADS`` when set) when it is tiny, since a tiny model runs on one
    thread (``cpu_threads``); else 1, as a larger model uses those cores itself."""
    return threads.count() if num_parameters(paths.resolve(folder)) < TINY_PARAMS else 1


def check_model_dir(folder: str | os.PathLike) -> Path:
    """A model folder must hold a parseable config.json and a model.safetensors whose header and size
    agree (checked without reading the tensors); otherwise ValueError naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model folder {folder} does not exist")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"corrupt model folder {folder}: {name} is missing")
    try:
        json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt model config {folder / CONFIG_FILE}: {e}") from None
    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt"):
            pass
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt files
        raise ValueError(f"corrupt weights file {folder / WEIGHTS_FILE}: {e}") from None
    return folder


def check_architecture(config: PretrainedConfig, tensors: Mapping[str, Sequence[int]], where: str) -> None:
    """The tensors (``{name: shape}``) must be exactly those of ``config``'s architecture: no tensor
    missing, none unexpected, every shape as the config says; otherwise ValueError naming ``where``.
    The one weights-vs-config check: model loading (evaluation, ensembles) and merging (inputs and
    output) all use it, so a model missing a tensor is never loaded zero-filled or random-filled."""
    expected = _expected_tensors(type(config), config.to_json_string(use_diff=False))
    got = {k: tuple(v) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = {k: (got[k], expected[k]) for k in sorted(set(got) & set(expected)) if got[k] != expected[k]}
    if missing or unexpected or shapes:
        parts = (
            ([f"missing tensors {missing[:10]}"] if missing else [])
            + ([f"unexpected tensors {unexpected[:10]}"] if unexpected else [])
            + ([f"shapes (weights vs config) differ for {dict(list(shapes.items())[:5])}"] if shapes else [])
        )
        raise ValueError(
            f"{where}: weights do not match the config ({config.model_type}, hidden_size="
            f"{getattr(config, 'hidden_size', None)}, vocab_size={getattr(config, 'vocab_size', None)},"
            f" num_labels={config.num_labels}): " + "; ".join(parts)
        )


def architecture_file(config_class: type, config_json: str) -> Path:
    """Where the shared cache keeps the expected tensors of a config (per transformers version)."""
    kind = f"{config_class.__module__}.{config_class.__qualname__}"
    key = hashlib.sha256(f"{transformers.__version__}\n{kind}\n{config_json}".encode()).hexdigest()
    return paths.shared_cache_dir("architectures", f"{key}.json")


@functools.lru_cache(maxsize=16)
def _expected_tensors(config_class: type, config_json: str) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the architecture's state dict, built on the meta device (no memory, no init).

    A pure function of the config and the pinned transformers, so it is kept in the shared cache: building
    the model class means importing transformers' modeling code (~2 s per process), which a merge or a
    check of model folders needs for nothing else. A damaged entry is rebuilt (``mu.core.cache.read``)."""
    file = architecture_file(config_class, config_json)
    hit = cache.read(file, lambda p: {k: tuple(v) for k, v in paths.read_json(p)["tensors"].items()}, "architecture")
    if hit is not None:
        return hit
    config = config_class.from_dict(json.loads(config_json))
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    tensors = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    paths.write_json(file, {"transformers": transformers.__version__, "tensors": tensors})
    return tensors


def check_model_weights(folder: str | os.PathLike) -> Path:
    """``check_model_dir`` plus ``check_architecture`` of the weights file's tensors (read from its
    header only) against the folder's config.json."""
    folder = check_model_dir(folder)
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read model config {folder / CONFIG_FILE}: {e}") from e
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    check_architecture(config, shapes, f"model {folder}")
    return folder


def available_sources(models_dir: str | os.PathLike, locales: Sequence[str] | None = None) -> list[str]:
    """Locales (sorted) whose model folder exists under ``models_dir``.

    ``locales`` restricts the candidates; by default every folder named after
    ``NAME_PATTERN``. A folder that exists but is not a loadable model
    (config.json + model.safetensors) is a ValueError, not silently skipped.
    """
    root = paths.resolve(models_dir)
    prefix = NAME_PATTERN.format(locale="")
    if locales is None:
        locales = [p.name[len(prefix) :] for p in root.glob(prefix + "*") if p.is_dir()] if root.is_dir() else []
    found = []
    for loc in locales:
        folder = source_path(loc, root)
        if folder.exists():
            check_model_dir(folder)
            found.append(loc)
    return sorted(found)


def check_labels(config: PretrainedConfig, where: str) -> None:
    """The model must have the 60 MASSIVE labels in ``mu.corpus.massive`` order.

    Generic names (``LABEL_0``..``LABEL_59``, as saved by scripts that did not set
    ``id2label``) are accepted with a warning: the index order is then assumed to
    be the dataset's ClassLabel order.
    """
    if config.num_labels != len(massive.INTENTS):
        raise ValueError(f"{where}: has {config.num_labels} labels; MASSIVE models need {len(massive.INTENTS)}")
    names = {int(k): v for k, v in config.id2label.items()}
    if names == massive.ID2LABEL:
        return
    if names == {i: f"LABEL_{i}" for i in range(len(massive.INTENTS))}:
        warnings.warn(
            f"{where}: unnamed labels LABEL_0..LABEL_59, assumed to be in MASSIVE ClassLabel order", stacklevel=2
        )
        return
    bad = {i: names.get(i) for i in massive.ID2LABEL if names.get(i) != massive.ID2LABEL[i]}
    raise ValueError(
        f"{where}: id2label differs from mu.corpus.massive.ID2LABEL at {len(bad)} ids, e.g. "
        f"{dict(list(bad.items())[:5])}; expected {massive.ID2LABEL}"
    )


def _local_or_id(path_or_id: str | os.PathLike) -> str:
    """A folder (relative paths resolve against the project root) if it exists, else the string as a hub id."""
    local = paths.resolve(path_or_id)
    return str(local) if local.exists() else str(path_or_id)


def load_classifier(
    path_or_id: str | os.PathLike, shared_tokenizer: bool = False
) -> tuple[XLMRobertaForSequenceClassification, Any]:
    """(model in eval mode, tokenizer) from a folder or hub id; checks the label space. ``shared_tokenizer``:
    a local folder's tokenizer from ``load_tokenizer(role="encode")`` (for callers that only encode)."""
    where = _local_or_id(path_or_id)
    if Path(where).exists():
        check_model_weights(where)
    elif Path(where).is_absolute() or where.startswith(".") or where.count("/") > 1:
        raise ValueError(f"model {where} is neither an existing folder nor a hub id (owner/name)")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(where)
        tokenizer = (
            load_tokenizer(where, "encode")
            if shared_tokenizer and Path(where).exists()
            else AutoTokenizer.from_pretrained(where)
        )
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot load model {where}: {e}") from e
    check_labels(model.config, where)
    model.eval()
    return model, tokenizer


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Weights of a model folder (or a .safetensors file) as a state dict."""
    p = paths.resolve(path)
    file = p if p.is_file() else check_model_dir(p) / WEIGHTS_FILE
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise ValueError(f"corrupt weights file {file}: {e}") from e


def save_classifier(
    model: torch.nn.Module, tokenizer: Any, out_dir: str | os.PathLike, extra_files: Mapping[str, Any] | None = None
) -> Path:
    """Save model (safetensors) + tokenizer (+ JSON ``extra_files``) atomically as one folder."""
    out = paths.resolve(out_dir)
    with paths.atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, obj in (extra_files or {}).items():
            paths.write_json(tmp / name, obj)
    return out


@contextlib.contextmanager
def cpu_threads(model: torch.nn.Module) -> Iterator[None]:
    """Torch threads for running ``model`` on the CPU (nothing changes when there is a GPU): one for a
    tiny model (< ``TINY_PARAMS`` parameters), whose operations are too small to gain from more, else
    ``mu.core.threads.count()``: the free cores this process may use (``OMP_NUM_THREADS`` when set). On a
    busy machine threads beyond the free cores make training several times slower. The previous
    thread count is restored."""
    if torch.cuda.is_available():
        yield
        return
    tiny = sum(p.numel() for p in model.parameters()) < TINY_PARAMS
    with threads.limited(1 if tiny else threads.count()):
        yield


def _config_of(item: str | os.PathLike | PretrainedConfig) -> tuple[PretrainedConfig, str | None]:
    """(config, vocabulary fingerprint or None)."""
    if isinstance(item, PretrainedConfig):
        return item, None
    p = Path(_local_or_id(item))
    if p.exists():
        check_model_weights(p)
        try:
            config = AutoConfig.from_pretrained(p)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read model config {p / CONFIG_FILE}: {e}") from e
        return config, vocab_fingerprint(p)
    return AutoConfig.from_pretrained(str(item)), None


def vocab_fingerprint(folder: str | os.PathLike) -> str | None:
    """sha256 of the tokenizer's vocabulary (tokenizer.json model, or sentencepiece file); None if absent."""
    folder = Path(folder)
    tj = folder / "tokenizer.json"
    if tj.is_file():
        content = tj.read_bytes()
        return cache.memo(("vocab", hashlib.sha256(content).hexdigest()), lambda: _vocab_digest(content, tj))
    sp = folder / "sentencepiece.bpe.model"
    if sp.is_file():
        from mu.core import report

        return report.sha256(sp)
    return None


def _vocab_digest(content: bytes, name: Path) -> str:
    try:
        model = json.loads(content.decode("utf-8"))["model"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as e:
        raise ValueError(f"corrupt tokenizer file {name}: {e}") from None
    return hashlib.sha256(json.dumps(model.get("vocab"), sort_keys=True).encode()).hexdigest()


def load_tokenizer(folder: str | os.PathLike, role: str) -> Any:
    """``AutoTokenizer`` of a local folder, parsed once per process per content of its tokenizer files (~0.5 s)
    and ``role``: ``"encode"`` (a call's truncation state is saved with it) or ``"save"`` (never called)."""
    if role not in ("encode", "save"):
        raise ValueError(f"load_tokenizer: role {role!r}; valid: 'encode', 'save'")
    key = tuple(
        (f.name, hashlib.sha256(f.read_bytes()).hexdigest())
        for f in sorted(Path(folder).iterdir())
        if f.is_file() and f.name.startswith(("tokenizer", "sentencepiece", "special_", "added_", "config"))
    )
    return cache.memo(("tokenizer", role, key), lambda: AutoTokenizer.from_pretrained(folder))


def _field(config: PretrainedConfig, name: str) -> Any:
    value = getattr(config, name, None)
    if name == "id2label" and value is not None:
        return {int(k): v for k, v in value.items()}
    return value


def check_compatible(
    models: Sequence[str | os.PathLike | PretrainedConfig] | Mapping[str, str | os.PathLike | PretrainedConfig],
) -> None:
    """Models to be merged/ensembled must share architecture, sizes, vocabulary and labels (and each
    local model's weights must match its own config: ``check_model_weights``).

    ``models``: paths, hub ids or configs (a mapping names them, e.g. by locale).
    Raises ValueError naming the first differing model and field, with what the
    others have. Vocabularies are compared when the models' tokenizers are on disk.
    """
    named = (
        dict(models)
        if isinstance(models, Mapping)
        else {str(m) if not isinstance(m, PretrainedConfig) else f"config #{i}": m for i, m in enumerate(models)}
    )
    if len(named) < 1:
        raise ValueError("check_compatible: no models given")
    configs = {name: _config_of(item) for name, item in named.items()}
    ref_name, (ref, ref_vocab) = next(iter(configs.items()))
    for name, (config, vocab) in configs.items():
        for field in COMPAT_FIELDS:
            if _field(config, field) != _field(ref, field):
                raise ValueError(
                    f"model {name} is incompatible: {field}={_field(config, field)!r}, "
                    f"but {ref_name} has {field}={_field(ref, field)!r}"
                )
        if vocab is not None and ref_vocab is not None and vocab != ref_vocab:
            raise ValueError(f"model {name} is incompatible: its tokenizer vocabulary differs from {ref_name}'s")
