"""Random-init checkpoints for the benchmark, generated once into ``cache/bench/models/<size>/``.

One random ``base`` model, then N "fine-tuned" sources derived cheaply from it:
source i = base + scale_i · roll(noise, shift_i), with one seeded Gaussian noise
tensor per parameter drawn once (drawing fresh noise for each of 10 base-size
sources costs ~5 s each on 2 cores; a roll is a copy). The deltas differ in every
entry and in sign between sources, which is what TIES' sign election and
magnitude pruning work on. Sources are named like the project's models
(``xlm-roberta-base_massive_k_<locale>``) with real MASSIVE locales, each folder
holds ``config.json``, ``model.safetensors`` and a small tokenizer trained on the
benchmark's utterances (``mu.merge.merge_models`` and mergekit copy it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import AutoTokenizer, XLMRobertaForSequenceClassification

from bench import sizes, utterances
from mu import bases, locales, models, paths

SOURCE_LOCALES = [
    "de-DE",
    "nl-NL",
    "af-ZA",
    "da-DK",
    "sv-SE",
    "nb-NO",
    "is-IS",
    "fr-FR",
    "es-ES",
    "it-IT",
    "pt-PT",
    "ro-RO",
]
STAMP = "bench_args.json"
TOKENIZER_VOCAB = 4000


def models_dir(size: str) -> Path:
    return paths.cache_dir("bench", "models", size)


def _args(size: str, role: str, seed: int, delta: float) -> dict:
    return {"size": size, "dims": sizes.check_size(size), "role": role, "seed": seed, "delta": delta, "version": 1}


def _done(folder: Path, args: dict) -> bool:
    return (
        (folder / STAMP).is_file()
        and paths.read_json(folder / STAMP) == args
        and (folder / models.WEIGHTS_FILE).is_file()
    )


def _write(folder: Path, state: dict[str, torch.Tensor], config, tokenizer, args: dict) -> None:
    with paths.atomic_path(folder) as tmp:
        tmp.mkdir()
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(state, str(tmp / models.WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / STAMP).write_text(json.dumps(args, indent=2) + "\n", encoding="utf-8")


def build(size: str, n: int, *, seed: int = 0, delta: float = 0.002) -> tuple[Path, dict[str, Path]]:
    """(base folder, {locale: source folder}) for ``n`` sources of ``size``; existing ones are kept."""
    if not 1 <= n <= len(SOURCE_LOCALES):
        raise ValueError(f"n must be in [1, {len(SOURCE_LOCALES)}] sources, got {n}")
    for loc in SOURCE_LOCALES:
        locales.check_locale(loc)
    root = models_dir(size)
    base_dir = root / "base"
    base_args = _args(size, "base", seed, delta)
    wanted = {
        loc: (models.source_path(loc, root), _args(size, f"source {i}", seed, delta))
        for i, loc in enumerate(SOURCE_LOCALES[:n])
    }
    todo = [loc for loc, (folder, args) in wanted.items() if not _done(folder, args)]
    if _done(base_dir, base_args) and not todo:
        return base_dir, {loc: folder for loc, (folder, _) in wanted.items()}

    config = sizes.config(size)
    if _done(base_dir, base_args):
        base = models.load_state_dict(base_dir)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
    else:
        tokenizer = bases.train_tokenizer(utterances.texts(5000, seed), min(TOKENIZER_VOCAB, config.vocab_size))
        torch.manual_seed(seed)
        base = {k: v.contiguous() for k, v in XLMRobertaForSequenceClassification(config).state_dict().items()}
        _write(base_dir, base, config, tokenizer, base_args)
    g = torch.Generator().manual_seed(seed + 1)
    noise = {k: torch.randn(v.shape, generator=g) for k, v in base.items()}
    for loc in tqdm(todo, desc=f"bench checkpoints ({size})", unit="model"):
        i = SOURCE_LOCALES.index(loc)
        scale = delta * (1.0 + 0.1 * i)
        state = {
            k: v + scale * torch.roll(noise[k].reshape(-1), 7919 * (i + 1)).reshape(v.shape) for k, v in base.items()
        }
        _write(wanted[loc][0], state, config, tokenizer, wanted[loc][1])
        del state
    return base_dir, {loc: folder for loc, (folder, _) in wanted.items()}
