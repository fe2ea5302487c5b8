"""Shared fixtures. Every test session writes under a temporary MU_ROOT, never into the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def mu_root(tmp_path_factory) -> Path:
    """Point mu.paths.root() at a per-session temporary folder."""
    root = tmp_path_factory.mktemp("mu_root")
    old = os.environ.get("MU_ROOT")
    os.environ["MU_ROOT"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MU_ROOT", None)
    else:
        os.environ["MU_ROOT"] = old
