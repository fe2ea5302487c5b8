"""``python -m mu weights`` and ``python -m mu merge``: an intent classifier for any language URIEL knows,
merged from models fine-tuned on other languages (by default the published per-locale MASSIVE models).

    python -m mu weights yor                       # URIEL similarities, top-K, Sinkhorn, final weights
    python -m mu merge --target yor --out yor-clf  # the merged HF folder, model card, mergekit.yaml
    python -m mu merge --target eus --out eus-clf --method ties --set density=0.3 --dry-run

Sources (``--sources``): MASSIVE locales (their model is ``--source-pattern`` with ``{locale}``
filled in: a hub id or a folder), model folders, hub ids, or, for ``weights`` only, bare language
codes. Without ``--sources``: the 51 MASSIVE locales through ``--source-pattern``. A model's language,
needed to weigh it by URIEL, is the first of: ``--source-lang REF=LANG``; the ``locale`` mu's training
recorded (``training_args.json``); its model card's ``language`` (one entry); a MASSIVE locale ending
its folder or hub name (``..._massive_k_de-DE``). The target's own language is never a source.

See docs/cli.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMMANDS = ("weights", "merge")
DEFAULT_PATTERN = "haryoaw/xlm-roberta-base_massive_k_{locale}"
WEIGHTINGS = ("similarity", "average", "manual")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
LOCALE_SUFFIX = re.compile(r"(?:^|[_\-./])([a-z]{2}-[A-Z]{2})$")
# what a hub model's metadata is made of (config, tokenizer, card): fetched before any weight
META_PATTERNS = ["*.json", "*.md", "*.model", "*.txt"]


# --- the parsers ----------------------------------------------------------------------------------------


def _uriel_options(p: argparse.ArgumentParser) -> None:
    from mu.langs.similarity import DEFAULT_FEATURE_SET

    p.add_argument("--num-languages", type=int, default=5, help="sources kept, the most similar (default 5)")
    p.add_argument("--top-k", type=int, default=20, help="top-K filter of every row before Sinkhorn (default 20)")
    p.add_argument("--sinkhorn-iters", type=int, default=20)
    p.add_argument(
        "--feature-set", default=DEFAULT_FEATURE_SET, help="lang2vec feature set(s), '+'-joined (default %(default)s)"
    )
    p.add_argument(
        "--source-pattern",
        default=DEFAULT_PATTERN,
        help="a MASSIVE locale's model: hub id or folder with {locale} (default %(default)s)",
    )
    p.add_argument(
        "--source-lang",
        action="append",
        default=[],
        metavar="REF=LANG",
        help="the language of a source folder or hub id whose language mu cannot tell",
    )


def add_parsers(sub: Any, key_value: Callable[[str], tuple[str, Any]]) -> None:
    """Register ``weights`` and ``merge`` on ``python -m mu``'s subparsers (``key_value`` parses KEY=VALUE)."""
    w = sub.add_parser(
        "weights",
        help="URIEL weights of the source languages for a target language",
        description="Print the URIEL similarity of every candidate source to TARGET, the top-K, "
        "the Sinkhorn weights and the final {source: weight} table.",
    )
    w.add_argument(
        "target",
        help="a MASSIVE locale (sw-KE), an ISO 639-3 code lang2vec knows (yor), an ISO 639-1 "
        "code (yo) or an English language name",
    )
    w.add_argument(
        "--sources",
        nargs="+",
        default=None,
        help="candidates: MASSIVE locales, language codes, model folders or hub ids (default: the 51 MASSIVE locales)",
    )
    w.add_argument("--format", choices=("table", "json"), default="table")
    _uriel_options(w)

    m = sub.add_parser(
        "merge",
        help="merge source classifiers into one for a target language",
        description="Merge source classifiers into an HF folder for TARGET: weights, config, "
        "tokenizer, README.md model card and mergekit.yaml.",
    )
    m.add_argument("--target", required=True, help="as for `weights`")
    m.add_argument("--out", required=True, help="the folder to write (refused if non-empty, unless --force)")
    m.add_argument(
        "--sources",
        nargs="+",
        default=None,
        help="model folders, hub ids, or MASSIVE locales (through --source-pattern)",
    )
    m.add_argument("--method", default="linear", help="a method of mu.merge.METHODS (default linear)")
    m.add_argument(
        "--set",
        dest="knobs",
        type=key_value,
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="a knob of the method (density=0.3, lambda=0.8, ...)",
    )
    m.add_argument(
        "--weighting",
        choices=WEIGHTINGS,
        default=None,
        help="similarity (URIEL, default), average (equal weights over the same sources) or manual "
        "(--weights; the default when --weights is given)",
    )
    m.add_argument(
        "--weights",
        type=key_value,
        nargs="+",
        default=None,
        metavar="SOURCE=W",
        help="manual weights (normalised to sum 1); SOURCE: a locale, a language or a source as given",
    )
    m.add_argument(
        "--base", default=None, help="pretrained base for task-vector methods (default: the one the sources declare)"
    )
    m.add_argument("--device", default=None, help="where to compute (default: CUDA when available)")
    m.add_argument("--seed", type=int, default=42, help="seed of random drops (DARE, DELLA) and statistics")
    m.add_argument(
        "--data",
        default="auto",
        help="MASSIVE data for --evaluate LOCALE and data-based methods: toy, hub, massive or a folder "
        "(default: massive if its local copy exists, else hub)",
    )
    m.add_argument(
        "--adapt-texts",
        default=None,
        metavar="LOCALE_OR_FILE",
        help="unlabeled target texts for adamerging: a MASSIVE locale's train split, or a .jsonl/.txt",
    )
    m.add_argument(
        "--evaluate",
        default=None,
        metavar="LOCALE_OR_JSONL",
        help="accuracy of the merge and of each source on a MASSIVE locale's dev split or a JSONL file "
        "(utt/text and intent/label per line)",
    )
    m.add_argument("--dry-run", action="store_true", help="print the plan and memory estimate; write nothing")
    m.add_argument("--force", action="store_true", help="replace a non-empty --out")
    _uriel_options(m)


# --- sources --------------------------------------------------------------------------------------------


@dataclass
class Source:
    label: str  # its name in tables and --weights
    given: str  # as on the command line (or the locale, for --source-pattern)
    ref: str | None  # model: absolute folder or hub id; None for a bare language (weights only)
    language: Any = None  # mu.codes.Language or None
    local: Path | None = None  # folder holding at least its config and tokenizer
    header: dict | None = field(default=None, repr=False)

    @property
    def is_hub(self) -> bool:
        return self.ref is not None and not Path(self.ref).is_absolute()


def _say(msg: str) -> None:
    print(f"mu: {msg}", file=sys.stderr, flush=True)


def _is_hub_id(text: str) -> bool:
    return bool(HUB_ID.fullmatch(text)) and ".." not in text


def _model_ref(text: str) -> str | None:
    """An existing folder (absolute) or a hub id; None when ``text`` is neither."""
    p = Path(text).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"source {text!r} is a file, not a model folder")
        return str(p.resolve())
    return text if _is_hub_id(text) else None


def _lang_overrides(items: Sequence[str]) -> dict[str, Any]:
    from mu.langs import codes

    out = {}
    for item in items:
        ref, sep, lang = item.rpartition("=")
        if not sep or not ref or not lang:
            raise ValueError(f"--source-lang expects REF=LANG, got {item!r}")
        out[ref] = codes.resolve(lang)
        p = Path(ref).expanduser()
        if p.exists():
            out[str(p.resolve())] = out[ref]
    return out


def model_language(folder: Path | None, name: str) -> Any:
    """A model's language (``mu.codes.Language``) from what it records, else from its name; None if unknown."""
    from mu.langs import codes
    from mu.merge import preflight

    if folder is not None:
        try:  # mu's training record; unreadable ones say nothing (the card and the name may still)
            loc = (json.loads((folder / "training_args.json").read_text(encoding="utf-8")).get("params") or {}).get(
                "locale"
            )
            return codes.resolve(loc)
        except (OSError, ValueError, AttributeError, TypeError):
            pass
        lang = preflight.front_matter(folder).get("language")
        lang = lang[0] if isinstance(lang, list) and len(lang) == 1 else lang
        if isinstance(lang, str):
            try:
                return codes.resolve(lang)
            except ValueError:
                pass
    found = LOCALE_SUFFIX.search(name.rstrip("/"))
    return codes.resolve(found[1]) if found and found[1] in _locales() else None


def _locales() -> list[str]:
    from mu.langs.locales import LOCALES

    return LOCALES


def candidates(args: argparse.Namespace, *, models_only: bool) -> list[Source]:
    """The candidate sources of ``--sources`` or ``--source-pattern`` (nothing downloaded)."""
    from mu.langs import codes
    from mu.langs.locales import LOCALES

    overrides = _lang_overrides(args.source_lang)
    out: list[Source] = []
    if args.sources:
        for item in dict.fromkeys(args.sources):
            locale = next((loc for loc in LOCALES if loc.lower() == item.lower()), None)
            ref = None if locale and not Path(item).expanduser().exists() else _model_ref(item)
            if locale and ref is None:
                out.append(_pattern_source(args.source_pattern, locale, must_exist=True))
                continue
            if ref is None:
                try:
                    lang = codes.resolve(item)
                except ValueError as e:
                    raise ValueError(
                        f"source {item!r} is neither a model folder, a hub id (owner/name), a MASSIVE "
                        f"locale nor a language: {e}"
                    ) from None
                if models_only:
                    raise ValueError(
                        f"source {item!r} is a language ({lang.describe()}), not a model: give a model "
                        "folder, a hub id, or a MASSIVE locale (its model comes from --source-pattern)"
                    )
                out.append(Source(label=lang.label, given=item, ref=None, language=lang))
                continue
            local = Path(ref) if Path(ref).is_absolute() else None
            lang = overrides.get(item) or overrides.get(ref) or model_language(local, ref)
            out.append(Source(label=item, given=item, ref=ref, language=lang, local=local))
    else:
        for loc in LOCALES:
            src = _pattern_source(args.source_pattern, loc, must_exist=False)
            if src is not None:
                out.append(src)
        if not out:
            raise ValueError(
                f"no source model: --source-pattern {args.source_pattern!r} names no existing folder "
                "for any MASSIVE locale"
            )
        skipped = len(LOCALES) - len(out)
        if skipped:
            _say(f"{skipped} MASSIVE locale(s) have no folder at {args.source_pattern}: not candidates")
    _relabel(out)
    return out


def _pattern_source(pattern: str, locale: str, must_exist: bool) -> Source | None:
    from mu.langs import codes

    if "{locale}" not in pattern:
        raise ValueError(f"--source-pattern {pattern!r} has no {{locale}}")
    text = pattern.format(locale=locale)
    p = Path(text).expanduser()
    if p.is_dir():
        return Source(
            label=locale, given=locale, ref=str(p.resolve()), language=codes.resolve(locale), local=p.resolve()
        )
    if _is_hub_id(text) and not text.startswith((".", "/", "~")):
        return Source(label=locale, given=locale, ref=text, language=codes.resolve(locale))
    if must_exist:
        raise ValueError(f"no model for {locale}: {text} (--source-pattern) is neither a folder nor a hub id")
    return None


def _relabel(sources: list[Source]) -> None:
    """Name a model by its language (locale or code) where that is unique among the sources, so tables
    and --weights read ``de-DE`` rather than a path; otherwise as given."""
    counts: dict[str, int] = {}
    for s in sources:
        if s.language is not None:
            counts[s.language.label] = counts.get(s.language.label, 0) + 1
    for s in sources:
        if s.language is not None and counts[s.language.label] == 1:
            s.label = s.language.label
    labels = [s.label for s in sources]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"sources given twice: {dup}")


def _fetch_meta(src: Source) -> None:
    """A hub source's config, tokenizer and card (not its weights), into the hub cache."""
    if src.local is not None or src.ref is None:
        return
    from huggingface_hub import snapshot_download

    _say(f"fetching the metadata of {src.ref}")
    try:
        src.local = Path(snapshot_download(src.ref, allow_patterns=META_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated: huggingface_hub raises many types
        raise ValueError(
            f"source {src.given!r}: not a local folder, and the hub id {src.ref} could not be "
            f"fetched: {type(e).__name__}: {e}"
        ) from e


def _fetch_weights(src: Source) -> None:
    from mu.merge.run import local_dir

    if src.is_hub:
        _say(f"downloading {src.ref}")
        src.local = local_dir(src.ref)


# --- weights --------------------------------------------------------------------------------------------


def _uriel_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "top_k": args.top_k,
        "num_languages": args.num_languages,
        "sinkhorn_iters": args.sinkhorn_iters,
        "feature_set": args.feature_set,
    }


def _without_target(target: Any, sources: list[Source]) -> tuple[list[Source], list[str]]:
    from mu.langs import codes

    known = {s.label: s.language for s in sources if s.language is not None}
    drop = set(codes.excluded(target, known))
    if drop:
        _say(f"left out as the target's own language: {', '.join(sorted(drop))}")
    return [s for s in sources if s.label not in drop], sorted(drop)


def _need_languages(sources: list[Source], why: str) -> dict[str, Any]:
    unknown = [s.given for s in sources if s.language is None]
    if unknown:
        raise ValueError(
            f"{why} needs each source's language; unknown for {unknown}: give --source-lang REF=LANG "
            "(e.g. --source-lang path/to/model=de-DE), or --weighting manual --weights ..."
        )
    return {s.label: s.language for s in sources}


def run_weights(args: argparse.Namespace) -> int:
    from mu.langs import codes

    target = codes.resolve(args.target)
    sources = candidates(args, models_only=False)
    for s in sources:
        if s.language is None and s.ref is not None and s.is_hub:
            _fetch_meta(s)
            s.language = model_language(s.local, s.ref)
    _relabel(sources)
    sources, dropped = _without_target(target, sources)
    table = codes.uriel_table(target, _need_languages(sources, "URIEL weighting"), **_uriel_kwargs(args))
    weights = {k: float(w) for k, w in table["weight"].items() if w > 0}
    if args.format == "json":
        print(json.dumps(_weights_json(target, table, weights, dropped, args), indent=2))
    else:
        print(_weights_text(target, table, weights, dropped, args, sources))
    return 0


def _describe_uriel(args: argparse.Namespace, n: int) -> str:
    return (
        f"URIEL similarity = cosine of lang2vec '{args.feature_set}' vectors (distance = 1 - cosine); "
        f"top-K {args.top_k} per row over {n + 1} languages, Sinkhorn {args.sinkhorn_iters} iterations, "
        f"the {args.num_languages} largest weights kept and renormalised"
    )


def _weights_json(target: Any, table: Any, weights: dict, dropped: list[str], args: argparse.Namespace) -> dict:
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


def _weights_text(
    target: Any, table: Any, weights: dict, dropped: list[str], args: argparse.Namespace, sources: list[Source]
) -> str:
    lines = [
        f"target: {target.describe()}" + ("" if target.locale else " (not a MASSIVE locale)"),
        _describe_uriel(args, len(table)),
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


# --- merge ----------------------------------------------------------------------------------------------


def _knobs(method: str, pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    from mu.merge import catalog, registry

    catalog.get(method)
    knobs = {("lambda_" if k == "lambda" else k): v for k, v in pairs}
    stats = sorted(set(knobs) & set(catalog.STATISTICS.values()))
    if stats:
        raise ValueError(f"{stats} are computed by the merge, not set: see --data / --adapt-texts")
    return registry.knobs_for(method, **knobs)


def _check_knob_values(method: str, weights: dict[str, float], knobs: dict[str, Any], seed: int) -> None:
    """Run the method on tiny tensors: its own checks (ranges, number of sources) answer before any
    weight is read."""
    import torch

    from mu.merge import catalog, registry

    if method in catalog.STATISTICS:
        return
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}
    sds = {k: {n: t + 0.1 * torch.randn(t.shape, generator=g) for n, t in base.items()} for k in weights}
    extra = {"seed": seed} if "seed" in registry.knobs(method) and "seed" not in knobs else {}
    try:
        registry.merge(
            method, sds, weights, base if method in catalog.USES_BASE else None, device="cpu", **knobs, **extra
        )
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"merge method {method} with {knobs or 'its defaults'} on {len(weights)} source(s): {e}"
        ) from None


def _manual_weights(pairs: Sequence[tuple[str, Any]], sources: list[Source], dropped: list[str]) -> dict[str, float]:
    from mu.langs import similarity

    by_key: dict[str, Source] = {}
    for s in sources:
        for key in {s.label, s.given, s.ref or s.label}:
            by_key.setdefault(key, s)
    out: dict[str, float] = {}
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
    return similarity.check_weights(out)


def _choose(
    args: argparse.Namespace, target: Any, sources: list[Source], dropped: list[str]
) -> tuple[dict[str, float], Any]:
    """({label: weight} in merge order, the URIEL table or None)."""
    from mu.langs import codes

    if args.weighting == "manual":
        if not args.weights:
            raise ValueError("--weighting manual needs --weights SOURCE=W ...")
        weights = _manual_weights(args.weights, sources, dropped)
        chosen = [s for s in sources if s.label in weights]
        table = None
        if all(s.language is not None for s in chosen):
            table = codes.uriel_table(
                target,
                {s.label: s.language for s in chosen},
                **{**_uriel_kwargs(args), "num_languages": len(chosen), "top_k": max(len(chosen), 1)},
            )
        return weights, table
    if args.weights:
        raise ValueError(f"--weights is for --weighting manual, not {args.weighting}")
    table = codes.uriel_table(target, _need_languages(sources, f"{args.weighting} weighting"), **_uriel_kwargs(args))
    weights = {k: float(w) for k, w in table["weight"].items() if w > 0}
    if args.weighting == "average":
        weights = {k: 1.0 / len(weights) for k in weights}
    return weights, table


def _resolve_base(args: argparse.Namespace, method: str, chosen: list[Source]) -> tuple[str | None, str]:
    """(base reference or None, how it was chosen)."""
    from mu.merge import catalog, preflight

    if method not in catalog.USES_BASE:
        if args.base:
            _say(f"--base ignored: {method} does not use a base")
        return None, "not used by this method"
    if args.base:
        ref = _model_ref(args.base)
        if ref is None:
            raise ValueError(f"--base {args.base!r} is neither an existing folder nor a hub id (owner/name)")
        return ref, "given (--base)"
    if method not in catalog.NEEDS_BASE:
        return None, f"none ({method} uses a base only when --base is given)"
    declared = {s.label: preflight.declared_base(s.local) for s in chosen}
    found = sorted({b for b in declared.values() if b})
    if not found:
        raise ValueError(
            f"merge method {method} needs the sources' pretrained base, and none of the sources declares "
            "one (training_args.json, the model card's base_model, config.json's _name_or_path): pass "
            "--base (e.g. --base FacebookAI/xlm-roberta-base for the published MASSIVE models)"
        )
    if len(found) > 1 or not all(declared.values()):
        raise ValueError(f"the sources declare different pretrained bases {declared}: pass --base")
    ref = _model_ref(found[0])
    if ref is None:
        raise ValueError(
            f"the sources declare the base {found[0]!r}, neither a folder here nor an owner/name hub id "
            "(a legacy hub name?): pass --base with its full id, e.g. --base FacebookAI/xlm-roberta-base"
        )
    return ref, "declared by the sources"


@dataclass
class Plan:
    target: Any
    method: str
    knobs: dict
    weighting: str
    weights: dict
    sources: list
    table: Any
    dropped: list
    base_ref: str | None
    base_how: str
    base_local: Path | None
    base_fit: dict | None
    base_adapted: bool
    facts: dict
    memory: dict
    evaluation: Any


def _plan(args: argparse.Namespace) -> Plan:
    """Everything decided and checked, nothing merged: weights, sources' metadata and headers, base, knobs."""
    from mu.langs import codes
    from mu.merge import catalog, preflight

    target = codes.resolve(args.target)
    method = args.method
    knobs = _knobs(method, args.knobs)
    args.weighting = args.weighting or ("manual" if args.weights else "similarity")
    if method in catalog.ADAPTIVE and not args.adapt_texts:
        raise ValueError(f"merge method {method} needs --adapt-texts (unlabeled target texts)")
    sources = candidates(args, models_only=True)
    for s in sources:  # hub models named without a locale: their card may say the language
        if s.language is None and s.is_hub and args.weighting != "manual":
            _fetch_meta(s)
            s.language = model_language(s.local, s.ref)
    _relabel(sources)
    sources, dropped = _without_target(target, sources)
    if not sources:
        raise ValueError(f"no source is left for {target.label} (its own language is excluded)")
    weights, table = _choose(args, target, sources, dropped)
    chosen = [next(s for s in sources if s.label == k) for k in weights]
    if method in catalog.STATISTICS and method not in catalog.ADAPTIVE:
        bad = [s.label for s in chosen if s.language is None or s.language.locale != s.label]
        if bad:
            raise ValueError(
                f"{method} computes statistics on each source's MASSIVE train split: every source must "
                f"be a MASSIVE locale, not {bad}"
            )
    _check_knob_values(method, weights, knobs, args.seed)
    for s in chosen:
        _fetch_meta(s)
    for s in chosen:
        s.header = _header_of(s)
    facts = preflight.check_sources({s.label: s.local for s in chosen}, {s.label: s.header for s in chosen})
    evaluation = _eval_data(args, facts["labels"]) if args.evaluate else None
    base_ref, base_how = _resolve_base(args, method, chosen)
    base_local, fit, adapted = None, None, False
    if base_ref is not None:
        base_src = Source(
            label="<base>", given=base_ref, ref=base_ref, local=Path(base_ref) if Path(base_ref).is_absolute() else None
        )
        _fetch_meta(base_src)
        base_head = _header_of(base_src)
        _check_base_vocab(base_src.local, chosen[0].local)
        fit = preflight.base_fit(base_head, chosen[0].header)
        adapted = not (
            preflight.same_as_sources(fit, base_head, chosen[0].header)
            and _configs_agree(base_src.local, chosen[0].local)
        )
        base_local = base_src.local
        if adapted:
            base_how += (
                "; it is shaped otherwise than the sources (no classification head): its encoder with the "
                "weighted mean of the sources' heads"
            )
    mem = preflight.memory_estimate(
        method, facts["num_parameters"], facts["largest_tensor"], len(chosen), base_ref is not None
    )
    return Plan(
        target,
        method,
        knobs,
        args.weighting,
        weights,
        chosen,
        table,
        dropped,
        base_ref,
        base_how,
        base_local,
        fit,
        adapted,
        facts,
        mem,
        evaluation,
    )


def _header_of(src: Source) -> dict:
    """Tensor names, shapes and dtypes: from the local file, else (a hub model not downloaded yet, as in a dry
    run) from the hub's safetensors header."""
    from mu.merge import preflight

    local = any((src.local / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json"))
    return preflight.header(src.local) if local or not src.is_hub else preflight.remote_header(src.ref)


def _check_base_vocab(base: Path, source: Path) -> None:
    """A base whose tokenizer differs from the sources' has other tokens behind the same embedding rows: its
    task vectors would be meaningless. Compared where both keep the vocabulary in the same kind of file."""
    from mu.learn import models

    if (base / "tokenizer.json").is_file() != (source / "tokenizer.json").is_file():
        return
    vocab = models.vocab_fingerprint(base)
    if vocab is not None and vocab != models.vocab_fingerprint(source):
        raise ValueError(
            f"the base {base} has another tokenizer vocabulary than the sources: pass the base they were "
            "fine-tuned from (--base)"
        )


def _configs_agree(base: Path, source: Path) -> bool:
    """The base's config is the sources' (read from the small files: a hub base's weights may not be here yet)."""
    from transformers import AutoConfig

    from mu.learn import models

    try:
        configs = {"source": AutoConfig.from_pretrained(source), "base": AutoConfig.from_pretrained(base)}
        models.check_compatible(configs)
    except (ValueError, OSError):
        return False
    return True


def _plan_text(plan: Plan, args: argparse.Namespace) -> str:
    from mu.merge import catalog, preflight

    n = len(plan.sources)
    lines = [
        f"target: {plan.target.describe()}" + ("" if plan.target.locale else " (not a MASSIVE locale)"),
        f"method: {plan.method}  knobs: {_effective(plan, args) or 'none'}",
        f"weighting: {plan.weighting}",
    ]
    if plan.table is not None and plan.weighting != "manual":
        lines.append(_describe_uriel(args, len(plan.table)))
    if plan.dropped:
        lines.append(f"left out as the target's own language: {', '.join(plan.dropped)}")
    lines += ["", f"{'source':<14} {'weight':>8} {'similarity':>10} {'distance':>9}  model"]
    for s in plan.sources:
        sim = dist = ""
        if plan.table is not None and s.label in plan.table.index:
            sim, dist = f"{plan.table.loc[s.label, 'similarity']:.4f}", f"{plan.table.loc[s.label, 'distance']:.4f}"
        lines.append(f"{s.label:<14} {plan.weights[s.label]:>8.4f} {sim:>10} {dist:>9}  {s.ref}")
    if plan.method in catalog.IGNORES_WEIGHTS:
        lines.append(f"({plan.method} ignores the weights: they chose the sources)")
    f, mem = plan.facts, plan.memory
    lines += [
        "",
        f"base: {plan.base_ref or 'none'} ({plan.base_how})",
        f"labels: {len(f['labels'])}; parameters per model: {f['num_parameters']:,}",
        f"memory estimate: peak ≈ {preflight.gib(mem['peak'])} (output {preflight.gib(mem['output'])}, inputs' "
        f"chunks and scratch {preflight.gib(mem['scratch'])}); each source {preflight.gib(f['bytes_per_source'])}"
        f" on disk, {n} source(s)" + (" + base" if plan.base_ref else ""),
    ]
    return "\n".join(lines)


def _effective(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    from mu.merge import catalog, registry

    out = {k: v for k, v in registry.knobs(plan.method).items() if k not in catalog.STATISTICS.values()}
    if "seed" in out:
        out["seed"] = args.seed
    return {**out, **plan.knobs}


# --- evaluation -----------------------------------------------------------------------------------------


@dataclass
class EvalData:
    description: str
    texts: list
    gold: list  # label names


def _data_source(args: argparse.Namespace) -> str:
    if args.data != "auto":
        return args.data
    from mu.corpus import data

    return "massive" if data.massive_dir().is_dir() else "hub"


def _eval_data(args: argparse.Namespace, labels: Sequence[str]) -> EvalData:
    """The labeled texts of ``--evaluate``, checked against the sources' labels before any merge."""
    from mu.corpus import data

    spec = args.evaluate
    path = Path(spec).expanduser()
    if path.is_file():
        texts, gold = [], []
        for lineno, obj in data.jsonl_objects(path):
            text = obj.get("utt", obj.get("text"))
            label = obj.get("intent", obj.get("label"))
            if not isinstance(text, str) or label is None:
                raise ValueError(f"{path}:{lineno}: needs a text ('utt' or 'text') and a label ('intent' or 'label')")
            if isinstance(label, int) and not isinstance(label, bool):
                if not 0 <= label < len(labels):
                    raise ValueError(f"{path}:{lineno}: label id {label} outside 0..{len(labels) - 1}")
                label = labels[label]
            texts.append(text)
            gold.append(str(label))
        desc = str(path)
    else:
        from mu.langs import codes

        lang = codes.resolve(spec)
        if lang.locale is None:
            raise ValueError(
                f"--evaluate {spec!r}: neither a file nor a MASSIVE locale (MASSIVE has dev data for "
                "its 51 locales only; give a JSONL file for another language)"
            )
        source = _data_source(args)
        ds = data.load_split(lang.locale, "dev", source)
        texts, gold = list(ds["text"]), [data.INTENTS[i] for i in ds["label"]]
        desc = f"MASSIVE {lang.locale} dev ({source})"
    if not texts:
        raise ValueError(f"--evaluate {spec}: no labeled utterances")
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise ValueError(f"--evaluate {spec}: labels the models do not have: {unknown[:10]}")
    return EvalData(desc, texts, gold)


def _accuracy(folder: Path, ev: EvalData, device: str | None) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mu.learn import evaluate

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    logits = evaluate.forward(model, tokenizer, ev.texts, batch_size=32, max_seq_length=128)
    names = model.config.id2label
    pred = [names[int(i)] for i in logits.argmax(axis=-1)]
    return sum(p == g for p, g in zip(pred, ev.gold)) / len(ev.gold)


def _evaluate(plan: Plan, merged: Path, device: str | None) -> dict[str, Any]:
    ev = plan.evaluation
    _say(f"evaluating the merge and its {len(plan.sources)} source(s) on {ev.description}")
    result = {
        "data": ev.description,
        "n": len(ev.texts),
        "merged": _accuracy(merged, ev, device),
        "sources": {s.label: _accuracy(s.local, ev, device) for s in plan.sources},
    }
    result["best_source"] = max(result["sources"], key=lambda k: (result["sources"][k], k == plan.sources[0].label))
    return result


# --- writing --------------------------------------------------------------------------------------------


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"--out {out} is not empty; give --force to replace it")


def _adapt_texts(args: argparse.Namespace) -> list[str] | None:
    if not args.adapt_texts:
        return None
    from mu.corpus import data
    from mu.langs import codes

    path = Path(args.adapt_texts).expanduser()
    if path.is_file():
        if path.suffix == ".txt":
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [str(obj.get("utt", obj.get("text"))) for _, obj in data.jsonl_objects(path)]
    lang = codes.resolve(args.adapt_texts)
    if lang.locale is None:
        raise ValueError(f"--adapt-texts {args.adapt_texts!r}: neither a file nor a MASSIVE locale")
    return data.unlabeled(lang.locale, "train", _data_source(args))


def run_merge(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import mu
    from mu.core import paths, report
    from mu.merge import catalog, export, preflight
    from mu.merge.run import merge_models

    out = Path(args.out).expanduser().absolute()
    _check_out(out, args.force)
    plan = _plan(args)
    text = _plan_text(plan, args)
    if args.dry_run:
        print(text)
        print("\ndry run: nothing written")
        return 0
    print(text, file=sys.stderr)
    adapt = _adapt_texts(args)
    for s in plan.sources:
        _fetch_weights(s)
    base_local = plan.base_local
    if plan.base_ref is not None and not Path(plan.base_ref).is_absolute():
        from mu.merge.run import local_dir

        base_local = local_dir(plan.base_ref)
    refs = {s.label: s.ref for s in plan.sources}
    command = "python -m mu " + shlex.join(list(argv))
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    missing_parents = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        with paths.atomic_path(out) as tmp:
            base_for_merge = str(base_local) if base_local is not None else None
            if plan.base_adapted:
                _say(f"writing a base shaped like the sources from {plan.base_ref}")
                base_for_merge = str(
                    preflight.write_adapted_base(
                        base_local,
                        plan.base_fit,
                        {s.label: s.local for s in plan.sources},
                        plan.weights,
                        tmp.parent / "base",
                    )
                )
            _say(f"merging {len(plan.sources)} source(s) with {plan.method}")
            merge_models(
                plan.method,
                {s.label: str(s.local) for s in plan.sources},
                plan.weights,
                tmp,
                base_model=base_for_merge,
                mode=plan.weighting,
                seed=args.seed,
                device=args.device,
                data=_data_source(args) if plan.method in catalog.STATISTICS else None,
                adapt_texts=adapt,
                **plan.knobs,
            )
            evaluation = _evaluate(plan, tmp, args.device) if plan.evaluation else None
            if evaluation:
                paths.write_json(tmp / "evaluation.json", evaluation)
            knobs = _effective(plan, args)
            cfg, notes = export.mergekit_config(
                plan.method, refs, plan.weights, knobs, plan.base_ref, base_adapted=plan.base_adapted
            )
            if cfg is not None:
                paths.write_text(tmp / "mergekit.yaml", export.mergekit_yaml(cfg, command))
            rows = []
            for s in plan.sources:
                row = {
                    "label": s.label,
                    "ref": s.ref,
                    "weight": plan.weights[s.label],
                    "language": s.language.describe() if s.language else None,
                }
                if plan.table is not None and s.label in plan.table.index:
                    row["similarity"] = plan.table.loc[s.label, "similarity"]
                    row["distance"] = plan.table.loc[s.label, "distance"]
                rows.append(row)
            uriel = (
                {
                    "feature_set": args.feature_set,
                    "top_k": args.top_k,
                    "sinkhorn_iters": args.sinkhorn_iters,
                    "num_languages": args.num_languages,
                }
                if plan.table is not None
                else None
            )
            versions = {
                "mu": mu.__version__,
                **report.versions(["torch", "transformers", "lang2vec", "mergekit", "huggingface_hub"]),
            }
            base_text = f"`{plan.base_ref}` ({plan.base_how})" if plan.base_ref else plan.base_how
            card = export.model_card(
                target=plan.target,
                rows=rows,
                method=plan.method,
                knobs=knobs,
                weighting=plan.weighting,
                base={"text": base_text},
                uriel=uriel,
                mergekit=cfg and "mergekit.yaml",
                mergekit_notes=notes,
                evaluation=evaluation,
                command=command,
                versions=versions,
                num_labels=len(plan.facts["labels"]),
                excluded=plan.dropped,
                created=created,
            )
            paths.write_text(tmp / "README.md", card)
    except BaseException:
        for p in missing_parents:  # parents made for --out, left empty by the failure
            try:
                p.rmdir()
            except OSError:
                break
        raise
    if evaluation:
        print(
            f"accuracy on {evaluation['data']} (n={evaluation['n']}): merge {evaluation['merged']:.4f}, best "
            f"single source {evaluation['best_source']} {evaluation['sources'][evaluation['best_source']]:.4f}"
        )
    print(f"wrote {out}" + ("" if cfg is not None else " (no mergekit.yaml: " + "; ".join(notes) + ")"))
    return 0


def main(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``weights`` or ``merge``; a bad input is one line on stderr and exit status 2."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pkg_resources.*")
            if args.command == "weights":
                return run_weights(args)
            return run_merge(args, argv)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
