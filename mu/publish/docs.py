"""The results tables of README.md and docs/*.md, generated from committed result files.

A generated table sits between two markers in a Markdown file; the opening one names the table
and its arguments::

    <!-- mu:table systems profile=toy vs=average,oracle -->
    | ... generated ... |
    <!-- /mu:table -->

``python -m mu docs`` rewrites every block; ``--check`` changes nothing and exits 1 when a block
differs from what would be written (so a hand-edited number fails a test); ``--collect PROFILE``
first copies a finished run's small summary files into ``docs/results/<PROFILE>/`` (``mu.publish.collect`` lists
them), the committed inputs of the tables with ``reports/bench/*.json``. Paths resolve against the
checkout (code and docs), never ``MU_ROOT``; ``--from`` names the run's root.

The tables themselves: ``mu.publish.docs_results`` (a collected run), ``mu.publish.docs_bench``
(``reports/bench/*.json``), ``mu.publish.docs_study`` (the study) and ``mu.publish.docs_confirm`` (its
pre-registered, confirmatory tests).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from mu.core import paths
from mu.publish import docs_architecture, docs_bench, docs_confirm, docs_results, docs_study
from mu.publish.collect import checkout, collect

OPEN = re.compile(r"^<!-- mu:table (?P<spec>[^>]*?) -->$")
CLOSE = "<!-- /mu:table -->"
PAGES = ("README.md", "docs/*.md")

TABLES: dict[str, Callable[..., str]] = {
    **docs_architecture.TABLES,
    **docs_bench.TABLES,
    **docs_confirm.TABLES,
    **docs_results.TABLES,
    **docs_study.TABLES,
}


def render(spec: str) -> str:
    """The Markdown of one table from its marker's spec: a name, then ``key=value`` arguments."""
    name, *args = spec.split()
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; valid: {sorted(TABLES)}")
    kwargs = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"table {name!r}: argument {arg!r} is not key=value")
        kwargs[{"families": "families_", "systems": "systems_"}.get(key, key)] = value
    try:
        return TABLES[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"table {name!r}: bad arguments {args}: {exc}") from None


# --------------------------------------------------------------------------- rewriting pages


def rewrite(text: str, where: str = "<text>") -> str:
    """``text`` with every marked block regenerated; an unclosed or nested marker is an error naming the line."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        out.append(lines[i])
        match = OPEN.match(lines[i].strip())
        i += 1
        if not match:
            continue
        start = i
        while i < len(lines) and lines[i].strip() != CLOSE:
            if OPEN.match(lines[i].strip()):
                raise ValueError(f"{where}:{i + 1}: a table opens inside the one opened at line {start}")
            i += 1
        if i == len(lines):
            raise ValueError(f"{where}:{start}: `{lines[start - 1].strip()}` is never closed by `{CLOSE}`")
        try:
            out += [render(match["spec"]), lines[i]]
        except (ValueError, KeyError, FileNotFoundError) as exc:
            raise ValueError(f"{where}:{start}: {exc}") from None
        i += 1
    return "\n".join(out)


def pages() -> list[Path]:
    return sorted(p for pattern in PAGES for p in checkout().glob(pattern))


def update(check: bool = False) -> list[Path]:
    """Regenerate every page's tables; the pages that differ (``check``: left as they are)."""
    changed = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        where = str(page.relative_to(checkout()))
        new = rewrite(text, where)
        if new != text:
            changed.append(page)
            if not check:
                paths.write_text(page, new)
    return changed


# --------------------------------------------------------------------------- command line


def add_parser(sub) -> None:
    p = sub.add_parser("docs", help="rewrite the results tables of README.md and docs/ from committed result files")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    p.add_argument("--collect", metavar="PROFILE", help="first copy PROFILE's summary files into docs/results/")
    p.add_argument(
        "--from", dest="root", default=None, help="the run's root for --collect (default: MU_ROOT or the checkout)"
    )


def main(args: argparse.Namespace) -> int:
    try:
        if args.collect:
            print(f"collected: {collect(args.collect, args.root or paths.root())}")
        changed = update(check=args.check)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for page in changed:
        print(f"{'differs' if args.check else 'rewritten'}: {page.relative_to(checkout())}")
    if args.check and changed:
        print("run `python -m mu docs` to regenerate them from the committed result files", file=sys.stderr)
        return 1
    return 0
