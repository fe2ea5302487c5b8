"""Warnings that belong in the results: issued as Python warnings *and* kept, so that every
``mu.core.report.save`` of the same process records them (a notebook run is one process).

    mu.core.notes.warn("num_languages=9 but only 7 sources are available: using 7")
    mu.core.notes.noted()   # ['num_languages=9 but ...']
"""

from __future__ import annotations

import warnings

_NOTED: list[str] = []


class MuWarning(UserWarning):
    """A warning of this package that is recorded in the result records."""


def warn(message: str, stacklevel: int = 2) -> None:
    """Issue ``message`` as a ``MuWarning`` and keep it for the records (each distinct message once)."""
    warnings.warn(message, MuWarning, stacklevel=stacklevel + 1)
    if message not in _NOTED:
        _NOTED.append(message)


def noted() -> list[str]:
    """The warnings issued so far in this process, in order."""
    return list(_NOTED)


def clear() -> None:
    _NOTED.clear()
