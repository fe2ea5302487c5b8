"""What a user opens in a browser: every executed notebook rendered to HTML beside it, and
``reports/index.html`` linking them, the aggregated summaries and every figure, per profile and
target. ``mu.batch.runner.run`` renders each notebook it executes and rewrites the index at the end of
every batch; ``build_index`` alone renders what is not rendered yet and rewrites the index.

    reports/index.html
    reports/<stem>/<target>.html          executed notebook (nbconvert)
    reports/<stem>/<target>.failed.html   a failed run, up to the failing cell
    reports/06_aggregation/<profile>/summary.html   summary.md as HTML

Every link in the index is relative (the folder can be moved or served as is).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from mu.core import paths

INDEX = "index.html"
FAILED = ".failed"
SUMMARY_STEM = "06_aggregation"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; display: block; overflow-x: auto; max-width: 100%; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; text-align: left; } td.done a { color: #176; } td.failed a { color: #b00; font-weight: bold; }
.muted { color: #777; } .figs { display: flex; flex-wrap: wrap; gap: 1em; }
.figs figure { margin: 0; width: 22em; } .figs img { width: 100%; border: 1px solid #ddd; }
.figs.wide figure { width: auto; max-width: 100%; } .figs.wide img { width: auto; max-width: 100%; max-height: 34em; }
figcaption { font-size: .85em; color: #555; word-break: break-all; } th a { color: inherit; } code { background: #f3f3f3; padding: 0 .2em; }
"""


def render_notebook(ipynb: str | os.PathLike) -> Path:
    """``<name>.ipynb`` → ``<name>.html`` beside it (nbconvert's HTML exporter, figures embedded), atomically."""
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    body, _ = HTMLExporter().from_filename(str(ipynb))
    return paths.write_text(ipynb.with_suffix(".html"), body)


def render_markdown(md: str | os.PathLike) -> Path:
    """``<name>.md`` → ``<name>.html`` beside it (tables included), atomically."""
    import mistune

    md = Path(md)
    body = mistune.create_markdown(plugins=["table"])(md.read_text(encoding="utf-8"))
    return paths.write_text(md.with_suffix(".html"), _page(md.stem, body))


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _stale(src: Path, out: Path) -> bool:
    return not out.is_file() or out.stat().st_mtime_ns < src.stat().st_mtime_ns


def _papermill_parameters(ipynb: Path) -> dict[str, Any]:
    """The parameters papermill recorded (an unreadable notebook is an error naming it, as when rendering)."""
    try:
        nb = json.loads(ipynb.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read executed notebook {ipynb}: {e}") from e
    return dict(nb.get("metadata", {}).get("papermill", {}).get("parameters") or {})


def notebooks(out: Path) -> list[dict[str, Any]]:
    """The newest executed notebook of each job under ``out`` (``<stem>/<target>[.failed].ipynb``) with
    its profile (from the parameters papermill recorded in it) and its HTML, rendered when missing or
    older. A failure newer than the job's success is the job's state (the success is from an earlier
    run, e.g. with other parameters) and is shown; an older one was superseded and is not."""
    newest: dict[tuple[str, str], tuple[int, bool, Path]] = {}
    for ipynb in out.glob("*/*.ipynb"):
        name = ipynb.name[: -len(".ipynb")]
        failed = name.endswith(FAILED)
        target = name[: -len(FAILED)] if failed else name
        try:
            state = (ipynb.stat().st_mtime_ns, failed)  # same time: the failure, never hide one
        except FileNotFoundError:  # removed meanwhile (a run finishing)
            continue
        if (ipynb.parent.name, target) not in newest or state > newest[ipynb.parent.name, target][:2]:
            newest[ipynb.parent.name, target] = (*state, ipynb)
    found = []
    for (stem, target), (_, failed, ipynb) in sorted(newest.items()):
        page = ipynb.with_suffix(".html")
        if _stale(ipynb, page):
            render_notebook(ipynb)
        params = _papermill_parameters(ipynb)
        found.append(
            {
                "stem": stem,
                "target": target,
                "failed": failed,
                "html": page,
                "profile": params.get("profile", target),
                "per_target": "target_lang" in params,
            }
        )
    return found


def _figures(out: Path, stem: str, target: str) -> list[Path]:
    return sorted((out / stem / target).glob("*.png"))


def _rel(p: Path, out: Path) -> str:
    return html.escape(p.relative_to(out).as_posix(), quote=True)


def _figure_block(figs: list[Path], out: Path, wide: bool = False) -> str:
    items = "".join(
        f'<figure><a href="{_rel(f, out)}"><img src="{_rel(f, out)}" alt="{html.escape(f.name)}" '
        f'loading="lazy"></a><figcaption>{html.escape(f.relative_to(out).as_posix())}</figcaption>'
        f"</figure>"
        for f in figs
    )
    return f'<div class="figs{" wide" if wide else ""}">{items}</div>'


def _profile_section(profile: str, entries: list[dict[str, Any]], out: Path) -> str:
    parts = [f'<h2 id="{_anchor(profile)}">Profile <code>{html.escape(profile)}</code></h2>']
    summary_md = out / SUMMARY_STEM / profile / "summary.md"
    if summary_md.is_file():
        page = summary_md.with_suffix(".html")
        if _stale(summary_md, page):
            render_markdown(summary_md)
        others = [f for f in sorted((out / SUMMARY_STEM / profile).glob("*.csv"))]
        links = " · ".join(f'<a href="{_rel(f, out)}">{html.escape(f.name)}</a>' for f in others)
        parts.append(
            f'<p><strong><a href="{_rel(page, out)}">Aggregated summary</a></strong> '
            f'(<a href="{_rel(summary_md, out)}">summary.md</a>; tables: {links})</p>'
        )
        parts.append(_figure_block(_figures(out, SUMMARY_STEM, profile), out, wide=True))
    else:
        parts.append(f'<p class="muted">No aggregated summary yet ({SUMMARY_STEM} has not run for this profile).</p>')
    stems = sorted({e["stem"] for e in entries})
    rows = sorted({(e["per_target"], e["target"]) for e in entries})
    cell = {(e["stem"], e["target"]): e for e in entries}
    head = "".join(f"<th>{html.escape(s)}</th>" for s in stems)
    figures = {
        t: [f for s in stems for f in _figures(out, s, t) if not (s == SUMMARY_STEM and not per_target)]
        for per_target, t in rows
    }
    body = []
    for per_target, target in rows:
        label = html.escape(target) if per_target else f'{html.escape(target)} <span class="muted">(profile)</span>'
        if figures[target]:
            label = f'<a href="#{_anchor(profile, target)}" title="figures">{label}</a>'
        cells = []
        for s in stems:
            e = cell.get((s, target))
            if e is None:
                cells.append("<td></td>")
            else:
                status = "failed" if e["failed"] else "done"
                cells.append(f'<td class="{status}"><a href="{_rel(e["html"], out)}">{status}</a></td>')
        body.append(f"<tr><th>{label}</th>{''.join(cells)}</tr>")
    parts.append("<h3>Executed notebooks</h3>")
    parts.append(f"<table><tr><th>target</th>{head}</tr>{''.join(body)}</table>")
    parts.append('<h3>Figures</h3><p class="muted">(click a target in the table to jump to its figures)</p>')
    for _, target in rows:
        if figures[target]:
            parts.append(
                f'<h4 id="{_anchor(profile, target)}">{html.escape(target)}</h4>{_figure_block(figures[target], out)}'
            )
    return "\n".join(parts)


def _anchor(*parts: str) -> str:
    return html.escape("-".join(parts), quote=True)


def build_index(out_dir: str | os.PathLike | None = None) -> Path:
    """Render what is not rendered yet and (re)write ``<out_dir>/index.html`` (default ``reports/``)."""
    out = paths.resolve(out_dir) if out_dir is not None else paths.reports_dir()
    out.mkdir(parents=True, exist_ok=True)
    by_profile: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in notebooks(out):
        by_profile[e["profile"]].append(e)
    for md in sorted(out.glob(f"{SUMMARY_STEM}/*/summary.md")):
        by_profile.setdefault(md.parent.name, [])
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    sections = [_profile_section(p, by_profile[p], out) for p in sorted(by_profile)]
    if not sections:
        sections = [
            '<p class="muted">Nothing has run yet: <code>python -m mu demo</code> or '
            "<code>python -m mu run ...</code>.</p>"
        ]
    body = (
        f'<h1>MergingUriel reports</h1><p class="muted">{html.escape(str(out))} · written {now} by the '
        "last batch run (<code>python -m mu run</code> / <code>demo</code>)</p>\n" + "\n".join(sections)
    )
    return paths.write_text(out / INDEX, _page("MergingUriel reports", body))
