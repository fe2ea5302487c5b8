"""URIEL language similarity and the weights derived from it.

Pipeline (the seed's ``similarity_utils.py``, computed here from ``lang2vec``
instead of shipped as a CSV)::

    URIEL vectors (lang2vec, one feature set)  ->  cosine similarity matrix
    -> restricted to the languages of the study (sources that have a model + target)
    -> top-K filter per row (self excluded)     ->  Sinkhorn normalisation
    -> the target's row -> the ``num_languages`` largest, renormalised to sum to 1.

With all 51 MASSIVE locales available (the real setting: every locale has a
model) this is exactly the seed's procedure. With fewer (the toy profile, or a
study of a language subset), top-K and Sinkhorn run over the languages that
can actually be used, so top-K never selects languages that have no model.

Feature set. The seed used a matrix called "unified" without saying how it was
built. Our default, ``syntax_knn+phonology_knn+inventory_knn``, concatenates the
three kNN-imputed typological sets of URIEL: complete (no missing values) for
all 51 MASSIVE locales, and the combination behind lang2vec's syntactic,
phonological and inventory distances. Any lang2vec set or ``+``-combination is
accepted (``fam``, ``geo``, ``syntax_wals``, ...). Raw sets have missing values
(``--``): cosine is then taken over the dimensions both languages have, and a
language with no value at all is an error, never a zero vector.

Modes of :func:`select` (the seed's ``--mode``), all returning ``{locale: weight}``
summing to 1 over available sources, target excluded:

* ``similarity``: the URIEL weights above;
* ``average``: the *same* sources as ``similarity``, equal weights (isolates the
  effect of the weighting itself);
* ``transfer``: sources ranked by their mean zero-shot accuracy on the *other*
  targets of the N×N matrix ``nxn`` (leave-target-out: no data of the target is used),
  weights proportional to that score. The study passes notebook 02's N×N on the *dev* split
  (``mu.analysis.aggregate.nxn_path(profile, "dev")``): MASSIVE is parallel, so the other
  targets' items are translations of the target's, and a test N×N would rank sources by
  translations of the very test items the weighted system is scored on;
* ``oracle``: ranked by accuracy on the target's own column of ``oracle_nxn`` (default
  ``nxn``; the study passes the test N×N): uses target labels, an upper bound for source
  selection, not a zero-shot method.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mu.core import notes, paths
from mu.langs.locales import LOCALES, URIEL_CODES, check_locale, check_locales
from mu.langs.uriel import DEFAULT_FEATURE_SET, FEATURE_SETS, check_feature_set, cosine, feature_sets, uriel_vectors

__all__ = ["DEFAULT_FEATURE_SET", "FEATURE_SETS", "check_feature_set", "cosine", "feature_sets", "uriel_vectors"]

MODES = ("similarity", "average", "transfer", "oracle")
SIMILARITY_SOURCES = ("sparse", "dense")


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def compute_matrix(locales: Sequence[str] = LOCALES, feature_set: str = DEFAULT_FEATURE_SET) -> pd.DataFrame:
    """The cosine similarity matrix over ``locales`` (dense: computed now from lang2vec)."""
    return cosine(uriel_vectors(locales, feature_set))


def matrix_path(feature_set: str = DEFAULT_FEATURE_SET) -> Path:
    check_feature_set(feature_set)
    return paths.cache_dir("similarity", f"uriel_{feature_set.replace('+', '-')}.csv")


def save_matrix(
    feature_set: str = DEFAULT_FEATURE_SET, locales: Sequence[str] = LOCALES, path: str | os.PathLike | None = None
) -> Path:
    """Compute the matrix and write it (CSV, full precision) with a JSON sidecar; skip if present."""
    path = Path(path) if path else matrix_path(feature_set)
    meta_path = path.with_suffix(".json")
    meta = {
        "feature_set": feature_set,
        "locales": list(locales),
        "uriel_codes": {loc: URIEL_CODES[loc] for loc in locales},
    }
    if path.exists() and meta_path.exists() and _same_meta(meta_path, meta):
        return path
    frame = compute_matrix(locales, feature_set)
    paths.write_text(path, frame.to_csv(float_format="%.17g"))
    from mu.core.report import versions

    paths.write_json(meta_path, {**meta, "versions": versions(["lang2vec", "numpy", "pandas"])})
    return path


def _same_meta(meta_path: Path, meta: dict) -> bool:
    old = paths.read_json(meta_path)
    return all(old.get(k) == v for k, v in meta.items())


def load_matrix(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"similarity matrix {path} does not exist; create it with mu.langs.similarity.save_matrix()"
        )
    frame = pd.read_csv(path, index_col=0)
    if list(frame.index) != list(frame.columns):
        raise ValueError(f"{path}: rows and columns of a similarity matrix must name the same locales")
    return frame


def top_k_filter(matrix: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """Keep, in every row, the ``top_k`` most similar *other* languages; zero the rest.

    Ties are broken by locale name so the result is deterministic.
    """
    top_k = _check_positive("top_k", top_k)
    out = pd.DataFrame(0.0, index=matrix.index, columns=matrix.columns)
    for row in matrix.index:
        s = matrix.loc[row].drop(row)
        order = sorted(s.index, key=lambda loc: (-s[loc], loc))[:top_k]
        out.loc[row, order] = s[order]
    return out


def sinkhorn(matrix: pd.DataFrame, iters: int = 20) -> pd.DataFrame:
    """Sinkhorn-Knopp: alternately normalise columns and rows, ending on rows (each row sums to 1).

    A column that is zero (a language in nobody's top-K) stays zero, so after a
    top-K filter the matrix is row-stochastic and, where its support allows it,
    close to doubly stochastic.
    """
    iters = _check_positive("sinkhorn_iters", iters)
    m = matrix.to_numpy(dtype=float).copy()
    if np.isnan(m).any() or (m < 0).any():
        raise ValueError("Sinkhorn needs a finite non-negative matrix (got negative or NaN similarities)")
    for _ in range(iters):
        col = m.sum(axis=0, keepdims=True)
        m = np.divide(m, col, out=np.zeros_like(m), where=col > 0)
        row = m.sum(axis=1, keepdims=True)
        m = np.divide(m, row, out=np.zeros_like(m), where=row > 0)
    return pd.DataFrame(m, index=matrix.index, columns=matrix.columns)


def similarity_matrix(
    feature_set: str = DEFAULT_FEATURE_SET,
    similarity_source: str = "sparse",
    matrix_file: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The raw cosine matrix: from the precomputed file (``sparse``) or computed now (``dense``)."""
    if similarity_source not in SIMILARITY_SOURCES:
        raise ValueError(f"unknown similarity_source {similarity_source!r}; valid: {list(SIMILARITY_SOURCES)}")
    if similarity_source == "dense":
        return compute_matrix(LOCALES, feature_set)
    return load_matrix(matrix_file or save_matrix(feature_set))


def ranking(
    target: str,
    *,
    universe: Iterable[str] | None = None,
    top_k: int = 20,
    sinkhorn_iters: int = 20,
    feature_set: str = DEFAULT_FEATURE_SET,
    similarity_source: str = "sparse",
    matrix_file: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Every other locale of ``universe`` (default: all) ranked for ``target``:
    cosine, kept by top-K or not, Sinkhorn weight."""
    check_locale(target)
    _check_positive("top_k", top_k)
    sim = similarity_matrix(feature_set, similarity_source, matrix_file)
    langs = sorted(set(check_locales(list(universe))) | {target}) if universe is not None else list(sim.index)
    missing = [loc for loc in langs if loc not in sim.index]
    if missing:
        raise ValueError(f"{missing} not in the similarity matrix; it has: {', '.join(sim.index)}")
    sim = sim.loc[langs, langs]
    norm = sinkhorn(top_k_filter(sim, top_k), sinkhorn_iters)
    frame = pd.DataFrame({"cosine": sim.loc[target], "sinkhorn": norm.loc[target]}).drop(target)
    frame["in_top_k"] = frame["sinkhorn"] > 0
    frame = frame.sort_values(["sinkhorn", "cosine"], ascending=False, kind="mergesort")
    frame.index.name = "source"
    return frame


def weights(
    target: str,
    available_sources: Iterable[str],
    *,
    top_k: int = 20,
    num_languages: int = 5,
    sinkhorn_iters: int = 20,
    feature_set: str = DEFAULT_FEATURE_SET,
    similarity_source: str = "sparse",
    matrix_file: str | os.PathLike | None = None,
) -> dict[str, float]:
    """URIEL weights ``{locale: weight}`` for ``target`` over sources that have a model.

    The matrix is restricted to the available sources and the target; top-K and
    Sinkhorn run over it; the ``num_languages`` sources with the largest Sinkhorn
    weight in the target's row are chosen and renormalised to sum to 1. The
    target itself is never a source.
    """
    check_locale(target)
    available = [s for s in check_locales(list(available_sources)) if s != target]
    num_languages = _check_positive("num_languages", num_languages)
    if not available:
        raise ValueError(f"no source model is available for target {target} (the target itself is excluded)")
    rank = ranking(
        target,
        universe=available,
        top_k=top_k,
        sinkhorn_iters=sinkhorn_iters,
        feature_set=feature_set,
        similarity_source=similarity_source,
        matrix_file=matrix_file,
    )
    chosen = rank.loc[rank["in_top_k"], "sinkhorn"].iloc[:num_languages]
    _warn_fewer(target, num_languages, len(chosen), f"in the top-{top_k} of {len(available)} available")
    return _normalise(chosen.to_dict())


def _warn_fewer(target: str, asked: int, got: int, among: str) -> None:
    """``num_languages`` above what is there is a warning recorded in the results, not silent."""
    if got < asked:
        notes.warn(f"num_languages={asked} for {target}, but only {got} source(s) {among}: using {got}", stacklevel=3)


def check_weights(weights: Mapping[str, float], sources: Iterable[str] | None = None) -> dict[str, float]:
    """Validate ``{locale: weight}`` and return it normalised to sum to 1.

    The one check every consumer (merging, ensembling, iterative training) applies:
    ValueError if it is empty, names other sources than ``sources`` (when given), or
    has a negative / NaN / infinite weight, or its weights sum to zero.
    """
    if not weights:
        raise ValueError("no sources: the weights are empty")
    if sources is not None:
        sources = list(sources)
        if set(weights) != set(sources):
            raise ValueError(
                f"the weights and the sources name different sources: weights are for {sorted(weights)}, "
                f"the sources are {sorted(sources)}; missing weights: {sorted(set(sources) - set(weights))}, "
                f"weights without a source: {sorted(set(weights) - set(sources))}"
            )
    bad = {}
    for k, v in weights.items():
        try:
            if isinstance(v, bool) or not np.isfinite(float(v)) or float(v) < 0:
                bad[k] = v
        except (TypeError, ValueError):
            bad[k] = v
    if bad:
        raise ValueError(f"weights must be finite and non-negative; bad: {bad}")
    total = float(sum(float(v) for v in weights.values()))
    if total <= 0:
        raise ValueError(f"weights sum to zero (need a positive sum): {dict(weights)}")
    return {k: float(weights[k]) / total for k in (sources if sources is not None else weights)}


def _normalise(scores: Mapping[str, float]) -> dict[str, float]:
    return check_weights(scores)


def transfer_scores(target: str, nxn: pd.DataFrame | str | os.PathLike, *, leave_target_out: bool = True) -> pd.Series:
    """Score each source model by zero-shot transfer in the N×N matrix (rows = source, columns = target).

    ``leave_target_out=True``: mean accuracy of the source on every *other* target
    (its own locale and ``target`` excluded). ``False``: its accuracy on ``target``.
    """
    frame = nxn if isinstance(nxn, pd.DataFrame) else pd.read_csv(nxn, index_col=0)
    if target not in frame.columns and not leave_target_out:
        raise ValueError(f"target {target!r} has no column in the N×N matrix; columns: {list(frame.columns)}")
    scores = {}
    for src in frame.index:
        if src == target:
            continue
        if leave_target_out:
            cols = [c for c in frame.columns if c not in (src, target)]
            if not cols:
                raise ValueError(f"the N×N matrix has no target other than {src} and {target} to score {src} on")
            scores[src] = float(frame.loc[src, cols].mean())
        else:
            scores[src] = float(frame.loc[src, target])
    return pd.Series(scores, dtype=float).sort_values(ascending=False, kind="mergesort")


def select(
    target: str,
    available: Iterable[str],
    *,
    mode: str = "similarity",
    num_languages: int = 5,
    top_k: int = 20,
    sinkhorn_iters: int = 20,
    feature_set: str = DEFAULT_FEATURE_SET,
    similarity_source: str = "sparse",
    nxn: pd.DataFrame | str | os.PathLike | None = None,
    oracle_nxn: pd.DataFrame | str | os.PathLike | None = None,
) -> dict[str, float]:
    """Sources and weights for ``target`` under a weighting ``mode`` (see module docstring): ``transfer`` ranks
    by ``nxn``, ``oracle`` by ``oracle_nxn`` (None: ``nxn``)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {list(MODES)}")
    check_locale(target)
    available = [s for s in check_locales(list(available)) if s != target]
    if not available:
        raise ValueError(f"no source model is available for target {target} (the target itself is excluded)")
    if mode in ("similarity", "average"):
        w = weights(
            target,
            available,
            top_k=top_k,
            num_languages=num_languages,
            sinkhorn_iters=sinkhorn_iters,
            feature_set=feature_set,
            similarity_source=similarity_source,
        )
        return w if mode == "similarity" else {k: 1.0 / len(w) for k in w}
    matrix = oracle_nxn if mode == "oracle" and oracle_nxn is not None else nxn
    if matrix is None:
        raise ValueError(f"mode {mode!r} needs the N×N transfer matrix (nxn=path or DataFrame)")
    num_languages = _check_positive("num_languages", num_languages)
    scores = transfer_scores(target, matrix, leave_target_out=(mode == "transfer"))
    scores = scores[scores.index.isin(available)].iloc[:num_languages]
    if scores.empty:
        raise ValueError(f"none of the available sources {sorted(available)} is in the N×N matrix")
    _warn_fewer(target, num_languages, len(scores), "available in the N×N matrix")
    return _normalise(scores.to_dict())


def select_modes(target: str, available: Iterable[str], modes: Sequence[str], **kwargs) -> dict[str, dict[str, float]]:
    """``{mode: select(target, available, mode=mode, **kwargs)}`` for each of ``modes`` (in order, no repeats)."""
    modes = list(modes)
    if len(set(modes)) != len(modes):
        raise ValueError(f"modes repeat: {modes}")
    return {m: select(target, available, mode=m, **kwargs) for m in modes}
