"""``python -m mu weights`` and ``python -m mu merge``: an intent classifier for any language URIEL knows,
merged from models fine-tuned on other languages (by default the published per-locale MASSIVE models).

    python -m mu weights yor                       # URIEL similarities, top-K, Sinkhorn, final weights
    python -m mu merge --target yor --out yor-clf  # the merged HF folder, model card, mergekit.yaml
    python -m mu merge --target eus --out eus-clf --method ties --set density=0.3 --dry-run

This module holds the two commands' parsers, their steps, and ``main``; the steps' parts live beside it:
where the sources come from and what language each is (``mu.build.sources``), their weights and the
``weights`` tables (``mu.build.weighting``), the merge's job, checked before any weight is read, and
its dry-run text (``mu.build.job``), the target's texts for ``--evaluate`` / ``--adapt-texts``
(``mu.build.target_texts``), the model card and mergekit.yaml (``mu.build.export``). Imported by
``python -m mu`` at start-up, so it imports nothing heavy until a command runs.

See docs/cli.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mu.build import job as merge_job
from mu.build import sources as src
from mu.build import target_texts, weighting

COMMANDS = ("weights", "merge")


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
        default=src.DEFAULT_PATTERN,
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
    m.add_argument(
        "--method", default="linear", help="a method of mu.merge.catalog (default linear; docs/merge-methods.md)"
    )
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
        choices=weighting.WEIGHTINGS,
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


# --- the commands ---------------------------------------------------------------------------------------


def run_weights(args: argparse.Namespace) -> int:
    from mu.langs import codes

    target = codes.resolve(args.target)
    sources = src.candidates(args, models_only=False)
    src.languages_from_cards(sources)
    sources, dropped = weighting.without_target(target, sources)
    table, weights = weighting.uriel(target, sources, args, "URIEL weighting")
    if args.format == "json":
        print(json.dumps(weighting.as_json(target, table, weights, dropped, args), indent=2))
    else:
        print(weighting.as_text(target, table, weights, dropped, args, sources))
    return 0


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"--out {out} is not empty; give --force to replace it")


def run_merge(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The job (everything checked), then the weights downloaded, the merge, --evaluate, the card and
    mergekit.yaml, all written into a temporary folder that becomes --out only once complete."""
    from mu.build import export, preflight
    from mu.core import paths
    from mu.merge.run import local_dir, merge_models

    out = Path(args.out).expanduser().absolute()
    _check_out(out, args.force)
    job = merge_job.make(args)
    text = merge_job.text(job, args)
    if args.dry_run:
        print(text)
        print("\ndry run: nothing written")
        return 0
    print(text, file=sys.stderr)
    adapt = target_texts.adapt_texts(args)
    for s in job.sources:
        src.fetch_weights(s)
    base_local = job.base_local
    if job.base_ref is not None and not Path(job.base_ref).is_absolute():
        base_local = local_dir(job.base_ref)
    device = str(job.plan.device)
    command = "python -m mu " + shlex.join(list(argv))
    created = _dt.datetime.now(_dt.UTC)
    missing_parents = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        with paths.atomic_path(out) as tmp:
            base_for_merge = str(base_local) if base_local is not None else None
            if job.base_adapted:
                src.say(f"writing a base shaped like the sources from {job.base_ref}")
                base_for_merge = str(
                    preflight.write_adapted_base(
                        base_local,
                        job.base_fit,
                        {s.label: s.local for s in job.sources},
                        job.weights,
                        tmp.parent / "base",
                    )
                )
            src.say(f"merging {len(job.sources)} source(s) with {job.method}")
            seed = job.plan.knobs.get("seed", args.seed)  # the method's seed, also the statistics' sample
            merge_models(
                job.plan,  # checked once, in job.make, before any weight was read
                {s.label: str(s.local) for s in job.sources},
                job.plan.weights,
                tmp,
                base_model=base_for_merge,
                mode=job.weighting,
                seed=seed,
                device=device,
                data=target_texts.data_source(args) if job.plan.method.statistics else None,
                adapt_texts=adapt,
            )
            evaluation = target_texts.evaluate(job.evaluation, job.sources, tmp, device) if job.evaluation else None
            if evaluation:
                paths.write_json(tmp / "evaluation.json", evaluation)
            cfg, notes = export.write(tmp, job, args, command, evaluation, created)
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
