"""URIEL vectors from lang2vec, and their cosine: what ``mu.langs.similarity`` builds its matrix from.

lang2vec is imported only to read vectors not yet kept (its import alone takes seconds: it reads its
language lists from compressed arrays). Feature-set names are declared here; the vectors of a feature set
and a list of codes, a pure function of the installed lang2vec's data, are kept in the per-user shared
cache (``mu.core.paths.shared_cache_dir``) and read back bit for bit.

May import: core.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pandas as pd

from mu.core import cache, paths
from mu.langs.locales import URIEL_CODES, check_locales

DEFAULT_FEATURE_SET = "syntax_knn+phonology_knn+inventory_knn"


@lru_cache(maxsize=1)
def _l2v():
    """Import ``lang2vec.lang2vec``.

    lang2vec also installs a *script* ``bin/lang2vec.py``; when a console script
    in that ``bin/`` is running (``.venv/bin/pytest``), ``bin/`` is first on
    ``sys.path`` and the script shadows the package. Import with it removed.
    """
    import importlib
    import sys

    shadow = [p for p in sys.path if p and os.path.isfile(os.path.join(p, "lang2vec.py"))]
    mod = sys.modules.get("lang2vec")
    if mod is not None and not hasattr(mod, "__path__"):
        del sys.modules["lang2vec"]
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in shadow]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lang2vec imports the deprecated pkg_resources
            return importlib.import_module("lang2vec.lang2vec")
    finally:
        sys.path[:] = saved


# lang2vec 1.1.2's FEATURE_SETS (the pinned version), in its order: naming a set must not cost lang2vec's
# import (seconds: it reads its language lists from compressed arrays), since most callers only check a name
# and then read the cached matrix. tests/test_similarity.py pins this copy to lang2vec's own list.
FEATURE_SETS = (
    "syntax_wals",
    "phonology_wals",
    "syntax_sswl",
    "syntax_ethnologue",
    "phonology_ethnologue",
    "inventory_ethnologue",
    "inventory_phoible_aa",
    "inventory_phoible_gm",
    "inventory_phoible_saphon",
    "inventory_phoible_spa",
    "inventory_phoible_ph",
    "inventory_phoible_ra",
    "inventory_phoible_upsid",
    "syntax_knn",
    "phonology_knn",
    "inventory_knn",
    "syntax_average",
    "phonology_average",
    "inventory_average",
    "fam",
    "id",
    "geo",
    "learned",
)


def feature_sets() -> list[str]:
    """The single lang2vec feature sets; combine them with ``+``."""
    return list(FEATURE_SETS)


def check_feature_set(feature_set: str) -> str:
    valid = feature_sets()
    parts = feature_set.split("+") if isinstance(feature_set, str) else [feature_set]
    bad = [p for p in parts if p not in valid]
    if bad or not parts:
        raise ValueError(
            f"unknown URIEL feature set {bad[0] if bad else feature_set!r} in {feature_set!r}; "
            f"valid: {', '.join(valid)} (combine with '+', e.g. {DEFAULT_FEATURE_SET!r})"
        )
    return feature_set


def vectors_path(codes: Sequence[str], feature_set: str) -> Path:
    """Where lang2vec's ``feature_set`` vectors of ``codes`` are kept (``paths.shared_cache_dir``): a pure
    function of the installed lang2vec's data, so every project root reuses them instead of importing
    lang2vec (seconds per process) to read them again."""
    import hashlib
    import json
    from importlib.metadata import version

    spec = json.dumps({"lang2vec": version("lang2vec"), "feature_set": feature_set, "codes": list(codes)})
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    return paths.shared_cache_dir("uriel", f"{feature_set.replace('+', '-')}-{key}.csv")


def _read_vectors(codes: tuple[str, ...], path: Path) -> pd.DataFrame:
    """The kept vectors of ``codes``; a ValueError when the file does not hold one row for each (damaged)."""
    frame = pd.read_csv(path, index_col=0, keep_default_na=False, na_values=[""])
    if list(frame.index) != list(codes):
        raise ValueError(f"rows {list(frame.index)[:5]}..., not the {len(codes)} codes asked for")
    frame.columns = range(frame.shape[1])
    return frame


@lru_cache(maxsize=16)
def _vectors(codes: tuple[str, ...], feature_set: str) -> pd.DataFrame:
    path = vectors_path(codes, feature_set)
    hit = cache.read(path, partial(_read_vectors, codes), "URIEL vectors")
    if hit is not None:
        return hit
    l2v = _l2v()
    try:
        feats = l2v.get_features(list(codes), feature_set)
    except Exception as e:  # lang2vec raises a bare Exception for unknown codes
        raise ValueError(f"lang2vec could not give {feature_set!r} features for {list(codes)}: {e}") from e
    rows = {c: [np.nan if v == "--" else float(v) for v in feats[c]] for c in codes}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    paths.write_text(path, frame.to_csv(float_format="%.17g"))
    return frame


def uriel_vectors(locales: Sequence[str], feature_set: str = DEFAULT_FEATURE_SET) -> pd.DataFrame:
    """One row per locale (NaN where URIEL has no value). A locale with no value at all is an error."""
    locales = check_locales(locales)
    check_feature_set(feature_set)
    codes = tuple(sorted({URIEL_CODES[loc] for loc in locales}))
    vec = _vectors(codes, feature_set)
    empty = [loc for loc in locales if vec.loc[URIEL_CODES[loc]].isna().all()]
    if empty:
        raise ValueError(
            f"no URIEL {feature_set!r} features for {', '.join(f'{loc} ({URIEL_CODES[loc]})' for loc in empty)}; "
            f"choose a feature set that covers them, e.g. {DEFAULT_FEATURE_SET!r}"
        )
    out = vec.loc[[URIEL_CODES[loc] for loc in locales]].copy()
    out.index = list(locales)
    return out


def cosine(vectors: pd.DataFrame) -> pd.DataFrame:
    """Pairwise cosine similarity over the dimensions both rows have (NaN = missing)."""
    x = vectors.to_numpy(dtype=float)
    mask = ~np.isnan(x)
    x = np.where(mask, x, 0.0)
    dot = x @ x.T
    # norms restricted to the dimensions the other language also has
    sq = (x**2) @ mask.T.astype(float)  # sq[i, j] = sum over dims present in j of x_i^2
    denom = np.sqrt(sq * sq.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.where(denom > 0, dot / denom, 0.0)
    np.fill_diagonal(sim, 1.0)
    return pd.DataFrame(sim, index=vectors.index, columns=vectors.index)
