"""The lexical-overlap baseline: a character n-gram linear classifier trained on one locale's train
split and tested on every target's split, so its N×N matrix says how much zero-shot transfer
surface overlap alone gives (shared scripts, names, numbers, cognates and loanwords).

A pretrained encoder's transfer only shows alignment where it clears this matrix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mu.corpus import data as mu_data

NGRAMS = (1, 4)  # character n-grams within word boundaries (char_wb)


def fit(locale: str, *, data: str | os.PathLike, ngram_range: tuple[int, int] = NGRAMS, c: float = 0.5, seed: int = 0):
    """A ``sklearn`` pipeline (tf-idf over char n-grams of the source's train text, linear SVM) for ``locale``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    ds = mu_data.load_split(locale, "train", data)
    model = make_pipeline(
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=tuple(ngram_range), sublinear_tf=True, min_df=2, lowercase=True
        ),
        LinearSVC(C=c, random_state=seed),
    )
    return model.fit(list(ds["text"]), np.asarray(ds["label"]))


def nxn(
    sources: Sequence[str],
    targets: Sequence[str] | None = None,
    *,
    data: str | os.PathLike,
    split: str = "test",
    ngram_range: tuple[int, int] = NGRAMS,
    c: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy of each source's char n-gram classifier (rows) on each target's split (columns)."""
    targets = list(sources) if targets is None else list(targets)
    if not sources or not targets:
        raise ValueError(f"lexical.nxn needs at least one source and one target, got {list(sources)} and {targets}")
    frame = pd.DataFrame(
        index=pd.Index(list(sources), name="source"), columns=pd.Index(targets, name="target"), dtype=float
    )
    tests = {t: mu_data.load_split(t, split, data) for t in targets}
    for source in tqdm(list(sources), desc="lexical N×N", unit="source"):
        model = fit(source, data=data, ngram_range=ngram_range, c=c, seed=seed)
        for target, ds in tests.items():
            frame.loc[source, target] = float(np.mean(model.predict(list(ds["text"])) == np.asarray(ds["label"])))
    return frame


def summary(frame: pd.DataFrame) -> dict[str, float]:
    """Mean native accuracy (diagonal) and mean zero-shot transfer (off-diagonal) of an N×N matrix."""
    common = [loc for loc in frame.index if loc in frame.columns]
    values = frame.loc[common, common].to_numpy(dtype=float)
    off = ~np.eye(len(common), dtype=bool)
    return {
        "native": float(np.mean(np.diag(values))),
        "transfer": float(np.mean(values[off])),
        "n_locales": len(common),
    }
