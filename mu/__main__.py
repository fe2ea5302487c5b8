"""Command line: batch runs of the notebooks.

    python -m mu run --profile toy --targets af-ZA sw-KE --notebooks 01 02 03 \\
        [--executor local|ray] [--workers N] [--num-gpus G] [--set key=value ...]
    python -m mu demo [--targets ...] [--workers N]   # every notebook on the toy profile, then
                                                      # the aggregated summary's tables
    python -m mu pretrain --profile mini --objective mlm+tlm+align --steps N [--minutes M]
    python -m mu compare-objectives --locales en-US de-DE ... --steps N   # pretraining objectives vs lexical
    python -m mu study --steps N [--train 2000 --test 500]                # the mini profile end to end
    python -m mu docs [--check] [--collect PROFILE --from ROOT]           # README/docs tables from results
    python -m mu weights TARGET / merge --target TARGET --out DIR         # a classifier for any language (docs/cli.md)

Both print a table of done / skipped / failed runs and exit 1 if any failed, 2 if nothing
could run (unknown notebook, profile or target, a params key that is no notebook parameter).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mu.batch import params, runner
from mu.build import cli
from mu.core import paths
from mu.publish import site

DEMO_TARGETS = ["af-ZA", "fr-FR", "sw-KE", "nl-NL", "es-ES"]
BATCH_COMMANDS = ("run", "demo")


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:  # safe_load: a YAML tag such as !!python/object is refused, never constructed
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise argparse.ArgumentTypeError(
            f"{key}: {value!r} is not a plain YAML value ({problem}); "
            "give a number, string, true/false, null or a [list]"
        ) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=runner.EXECUTORS, default="local")
    p.add_argument("--workers", type=int, default=1, help="parallel notebook runs (default %(default)s)")
    p.add_argument(
        "--num-gpus",
        type=float,
        default=None,
        help="GPUs per Ray task (default: 1 if the Ray cluster has GPUs, else 0)",
    )
    p.add_argument(
        "--set",
        dest="extra",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a notebook parameter (YAML value)",
    )
    p.add_argument("--notebooks-dir", default="notebooks")
    p.add_argument("--params-dir", default="params")
    p.add_argument("--out-dir", default=None, help="default: reports/")


def parser(study_commands: bool = True, argv0: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``study_commands=False`` leaves out those of ``mu.experiment.study_cli`` (whose import takes
    torch and transformers, seconds), so ``run`` / ``demo`` answer a bad argument at once."""
    ap = argparse.ArgumentParser(prog="python -m mu", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks × targets with papermill")
    run.add_argument("--profile", default="toy")
    run.add_argument("--targets", nargs="*", default=[])
    run.add_argument("--notebooks", nargs="+", required=True, help="number prefix (03) or stem")
    _common(run)
    demo = sub.add_parser("demo", help="the whole toy pipeline (every notebook) on a few targets")
    demo.add_argument("--targets", nargs="+", default=DEMO_TARGETS)
    _common(demo)
    demo.set_defaults(workers=min(2, os.cpu_count() or 1))
    cli.add_parsers(sub, _key_value)  # weights, merge: a classifier for any language
    if study_commands:
        from mu.publish import docs

        docs.add_parser(sub)  # the results tables of README.md and docs/
        if argv0 != "docs":
            from mu.experiment import study_cli

            study_cli.add_parsers(
                sub, _key_value
            )  # pretrain, compare-objectives, study (the real-MASSIVE mini profile)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = BATCH_COMMANDS + cli.COMMANDS  # need no study parsers (their import takes seconds)
    args = parser(study_commands=not argv or argv[0] not in quick, argv0=argv[0] if argv else None).parse_args(argv)
    if args.command == "weights":  # reads lang2vec only; writes nothing
        return cli.main(args, argv)
    if args.command == "docs":  # reads committed files in the checkout; no MU_ROOT, no torch
        from mu.batch import parameter_docs
        from mu.publish import docs

        rc = docs.main(args)
        notebooks = parameter_docs.update(check=args.check)
        for nb in notebooks:
            print(f"{'differs' if args.check else 'rewritten'}: {nb.relative_to(paths.source_dir('.'))}")
        return rc or (1 if args.check and notebooks else 0)
    try:
        paths.check_root()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "merge":
        return cli.main(args, argv)
    if args.command not in BATCH_COMMANDS:
        from mu.experiment import study_cli

        return study_cli.main(args)
    profile = args.profile if args.command == "run" else "toy"
    try:
        notebooks = args.notebooks if args.command == "run" else params.all_notebooks(args.notebooks_dir)
        summary = runner.run(
            notebooks,
            args.targets,
            profile=profile,
            executor=args.executor,
            workers=args.workers,
            num_gpus=args.num_gpus,
            params_dir=args.params_dir,
            notebooks_dir=args.notebooks_dir,
            out_dir=args.out_dir,
            extra_params=dict(args.extra),
        )
    except (ValueError, FileNotFoundError) as exc:  # nothing ran: bad notebook, params, target ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(runner.format_summary(summary))
    failed = bool((summary["status"] == "failed").any())
    if args.command == "demo":
        print(demo_summary(profile, failed))
    index = paths.resolve(args.out_dir or "reports") / site.INDEX
    print(f"\nOpen {_here(index)} in a browser: every executed notebook, summary and figure.")
    return 1 if failed else 0


SHOWN = ("## Accuracy per target", "## Mean over targets")


def demo_summary(profile: str, failed: bool) -> str:
    """The aggregated summary's per-target and mean tables (from summary.md) and where the figures are."""
    from mu.analysis import summary as mu_summary

    md = mu_summary.summary_dir(profile) / "summary.md"
    if not md.is_file():
        return f"\nno aggregated report at {_here(md)}"
    lines, keep = [], False
    for line in md.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            keep = line.startswith(SHOWN)
        if keep:
            lines.append(line)
    figures = sorted(md.parent.glob("*.png"))
    stale = " (this run had failures: it may be stale)" if failed else ""
    return "\n".join(
        [
            f"\nAggregated summary{stale}: {_here(md)}",
            "",
            *lines,
            "Figures: " + ", ".join(str(_here(f)) for f in figures),
        ]
    )


def _here(p: Path) -> Path:
    return p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p


if __name__ == "__main__":
    sys.exit(main())
