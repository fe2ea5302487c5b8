"""The weight each source gets for a target in ``python -m mu weights`` / ``merge``, and the tables that show it.

``similarity`` (URIEL: cosine of lang2vec vectors, top-K, Sinkhorn, the ``--num-languages`` largest,
renormalised: ``mu.langs.codes.uriel_table``), ``average`` (equal weights over the sources URIEL
chose) or ``manual`` (``--weights SOURCE=W``, mapped to the sources here and checked with the rest of
the merge by ``mu.merge.plan.make``). The target's own language is never a source.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from mu.build.sources import Source, say

WEIGHTINGS = ("similarity", "average", "manual")


def uriel_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "top_k": args.top_k,
        "num_languages": args.num_languages,
        "sinkhorn_iters": args.sinkhorn_iters,
        "feature_set": args.feature_set,
    }


def without_target(target: Any, sources: list[Source]) -> tuple[list[Source], list[str]]:
    """The sources less those of the target's own language, and the labels left out."""
    from mu.langs import codes

    known = {s.label: s.language for s in sources if s.language is not None}
    drop = set(codes.excluded(target, known))
    if drop:
        say(f"left out as the target's own language: {', '.join(sorted(drop))}")
    return [s for s in sources if s.label not in drop], sorted(drop)


def need_languages(sources: list[Source], why: str) -> dict[str, Any]:
    unknown = [s.given for s in sources if s.language is None]
    if unknown:
        raise ValueError(
            f"{why} needs each source's language; unknown for {unknown}: give --source-lang REF=LANG "
            "(e.g. --source-lang path/to/model=de-DE), or --weighting manual --weights ..."
        )
    return {s.label: s.language for s in sources}


def uriel(target: Any, sources: list[Source], args: argparse.Namespace, why: str) -> tuple[Any, dict[str, float]]:
    """(URIEL table of every source, {label: weight} of those kept, in weight order)."""
    from mu.langs import codes

    table = codes.uriel_table(target, need_languages(sources, why), **uriel_kwargs(args))
    return table, {k: float(w) for k, w in table["weight"].items() if w > 0}


def _manual(pairs: Sequence[tuple[str, Any]], sources: list[Source], dropped: list[str]) -> dict[str, Any]:
    """``--weights`` as {label: value as given}: the values are checked and normalised with the rest of
    the merge (``mu.merge.plan.make``), the names here, against the candidates."""
    by_key: dict[str, Source] = {}
    for s in sources:
        for key in {s.label, s.given, s.ref or s.label}:
            by_key.setdefault(key, s)
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in dropped:
            raise ValueError(
                f"--weights names {key}, the target's own language: a merge here is built without "
                "training on the target"
            )
        src = by_key.get(key)
        if src is None:
            raise ValueError(
                f"--weights names {key!r}, which is no candidate source; candidates: {sorted(s.label for s in sources)}"
            )
        out[src.label] = value
    return out


def choose(args: argparse.Namespace, target: Any, sources: list[Source], dropped: list[str]) -> tuple[dict, Any]:
    """({label: weight} in merge order, the URIEL table, or None for manual weights: ``similarity_table``
    then gives it once the weights are checked)."""
    if args.weighting == "manual":
        if not args.weights:
            raise ValueError("--weighting manual needs --weights SOURCE=W ...")
        return _manual(args.weights, sources, dropped), None
    if args.weights:
        raise ValueError(f"--weights is for --weighting manual, not {args.weighting}")
    table, weights = uriel(target, sources, args, f"{args.weighting} weighting")
    if args.weighting == "average":
        weights = {k: 1.0 / len(weights) for k in weights}
    return weights, table


def similarity_table(target: Any, chosen: list[Source], args: argparse.Namespace) -> Any:
    """The URIEL similarities of manually weighted sources (for the plan and the card), None when a
    source's language is unknown (manual weights do not need it)."""
    from mu.langs import codes

    if any(s.language is None for s in chosen):
        return None
    return codes.uriel_table(
        target,
        {s.label: s.language for s in chosen},
        **{**uriel_kwargs(args), "num_languages": len(chosen), "top_k": max(len(chosen), 1)},
    )


def describe_uriel(args: argparse.Namespace, n: int) -> str:
    return (
        f"URIEL similarity = cosine of lang2vec '{args.feature_set}' vectors (distance = 1 - cosine); "
        f"top-K {args.top_k} per row over {n + 1} languages, Sinkhorn {args.sinkhorn_iters} iterations, "
        f"the {args.num_languages} largest weights kept and renormalised"
    )


def as_json(target: Any, table: Any, weights: dict, dropped: list[str], args: argparse.Namespace) -> dict:
    """``weights --format json``."""
    return {
        "target": {"label": target.label, "code": target.code, "locale": target.locale, "name": target.name},
        "feature_set": args.feature_set,
        "similarity": "cosine",
        "distance": "1 - cosine",
        "top_k": args.top_k,
        "sinkhorn_iters": args.sinkhorn_iters,
        "num_languages": args.num_languages,
        "excluded": dropped,
        "sources": [
            {
                "source": k,
                "code": r["code"],
                "similarity": float(r["similarity"]),
                "distance": float(r["distance"]),
                "in_top_k": bool(r["in_top_k"]),
                "sinkhorn": float(r["sinkhorn"]),
                "weight": float(r["weight"]),
            }
            for k, r in table.iterrows()
        ],
        "weights": weights,
    }


def as_text(
    target: Any, table: Any, weights: dict, dropped: list[str], args: argparse.Namespace, sources: list[Source]
) -> str:
    """``weights``' table: every candidate's similarity, distance, top-K membership, Sinkhorn and final weight."""
    lines = [
        f"target: {target.describe()}" + ("" if target.locale else " (not a MASSIVE locale)"),
        describe_uriel(args, len(table)),
        f"candidates: {len(table)}"
        + (f"; left out as the target's own language: {', '.join(dropped)}" if dropped else ""),
        "",
    ]
    lines.append(
        f"{'source':<14} {'code':<5} {'similarity':>10} {'distance':>9} {'top-K':>5} {'sinkhorn':>9} {'weight':>8}"
    )
    for k, r in table.iterrows():
        lines.append(
            f"{k:<14} {r['code']:<5} {r['similarity']:>10.4f} {r['distance']:>9.4f} "
            f"{'yes' if r['in_top_k'] else 'no':>5} {r['sinkhorn']:>9.4f} {r['weight']:>8.4f}"
        )
    lines += ["", "weights {source: weight}:"]
    refs = {s.label: s.ref for s in sources}
    lines += [
        f"  {k}: {w:.6f}" + (f"  ({refs[k]})" if refs.get(k) and refs[k] != k else "") for k, w in weights.items()
    ]
    return "\n".join(lines)
