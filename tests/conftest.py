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
