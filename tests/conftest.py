"""Shared fixtures. Every test session writes under a temporary MU_ROOT (set by the
root conftest.py before collection), never into the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mu_root() -> Path:
    """The temporary project root of this test session (``mu.paths.root()``)."""
    root = Path(os.environ["MU_ROOT"])
    assert REPO not in [root, *root.parents], "tests must not write into the repository"
    return root


# --- toy models shared by the data/models/train/evaluate/merge/ensemble tests --------------------

FIXTURES = REPO / "tests" / "fixtures"
# Toy training parameters (as in params/02_training.yaml): a few seconds per locale on one CPU thread.
TOY_TRAIN = {"epochs": 15, "batch_size": 16, "lr": 2e-3, "max_seq_length": 64, "seed": 42}
TOY_SOURCE_LOCALES = ["de-DE", "nl-NL", "fr-FR", "es-ES"]


@pytest.fixture(scope="session")
def massive_fixture_dir() -> Path:
    """A small hand-written folder in the MASSIVE release layout (de-DE, sw-KE)."""
    return FIXTURES / "massive"


@pytest.fixture(scope="session")
def toy_train_args() -> dict:
    """Keyword arguments for ``mu.train.train_locale`` on the toy profile (without locale)."""
    return {"base_model": "models/toy/base", "data": "toy", "models_dir": "models/toy", **TOY_TRAIN}


@pytest.fixture(scope="session")
def toy_base(mu_root) -> Path:
    """The toy base model (tiny XLM-R + local tokenizer) at ``<MU_ROOT>/models/toy/base``, built with the
    same seed as notebook 02 so the notebooks reuse it (a base with other arguments is an error)."""
    import mu.learn.bases

    return mu.bases.build_toy_base("models/toy/base", seed=TOY_TRAIN["seed"])


@pytest.fixture(scope="session")
def toy_sources(toy_base, toy_train_args) -> dict[str, Path]:
    """{locale: model folder} for de-DE, nl-NL, fr-FR, es-ES, fine-tuned once per session from ``toy_base``."""
    import mu.learn.train

    return {loc: mu.train.train_locale(loc, **toy_train_args) for loc in TOY_SOURCE_LOCALES}


@pytest.fixture(scope="session")
def perturbed_sources(toy_base):
    """A function making 'fine-tuned' sources in a blink: ``(locales, models_dir, seed, scale=0.05)`` ->
    {locale: model folder}, the toy base plus seeded noise (seed ``seed + i`` for the i-th locale),
    saved under ``models_dir`` like trained sources."""
    import torch

    import mu.learn.models

    def make(locales: list[str], models_dir: str, seed: int, scale: float = 0.05) -> dict:
        model, tokenizer = mu.models.load_classifier(toy_base)
        base_sd = {k: v.clone() for k, v in model.state_dict().items()}
        dirs = {}
        for i, loc in enumerate(locales):
            g = torch.Generator().manual_seed(seed + i)
            model.load_state_dict({k: v + scale * torch.randn(v.shape, generator=g) for k, v in base_sd.items()})
            dirs[loc] = mu.models.save_classifier(model, tokenizer, mu.models.source_path(loc, models_dir))
        return dirs

    return make
