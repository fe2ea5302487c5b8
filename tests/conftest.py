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
    import mu.models

    return mu.models.build_toy_base("models/toy/base", seed=TOY_TRAIN["seed"])


@pytest.fixture(scope="session")
def toy_sources(toy_base, toy_train_args) -> dict[str, Path]:
    """{locale: model folder} for de-DE, nl-NL, fr-FR, es-ES, fine-tuned once per session from ``toy_base``."""
    import mu.train

    return {loc: mu.train.train_locale(loc, **toy_train_args) for loc in TOY_SOURCE_LOCALES}
