"""Tables read from the code itself: the package's layout for docs/ARCHITECTURE.md (``mu:table architecture``):
one table per wing, top of the stack first, each module with the first sentence of its docstring and its
public names (parsed with ``ast``: nothing is imported or run); and the merge method catalog
(``mu:table merge-methods``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def _wings() -> tuple[str, ...]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "WINGS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise ValueError("mu/__init__.py declares no WINGS")


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split("\n\n")[0].split())
    end = text.find(". ")
    return (text if end < 0 else text[: end + 1]).replace("|", "\\|")


def _public(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
            names.append(f"`{node.name}`")
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [f"`{t.id}`" for t in targets if isinstance(t, ast.Name) and t.id.isupper() and t.id[0] != "_"]
    return names


def wing_table(wing: str, max_names: int = 8) -> str:
    folder = PACKAGE / wing
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    head, _, rest = doc.partition("May import:")
    lines = [
        f"### `mu.{wing}`",
        "",
        " ".join(head.split()),
        "",
        f"May import: {' '.join(rest.split())}",
        "",
        "| module | what it holds | public names |",
        "|---|---|---|",
    ]
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        names = _public(tree)
        shown = ", ".join(names[:max_names]) + (
            f", … ({len(names) - max_names} more)" if len(names) > max_names else ""
        )
        sentence = _first_sentence(ast.get_docstring(tree) or "")
        lines.append(f"| `mu.{wing}.{path.stem}` | {sentence} | {shown or '—'} |")
    return "\n".join(lines)


def architecture() -> str:
    """Every wing, from the top of the stack (the study driver) down to ``core``."""
    return "\n\n".join(wing_table(w) for w in reversed(_wings()))


def merge_methods() -> str:
    """Every method of the merge catalog (``mu.merge.catalog``, torch-free): family, what it does, its
    knobs with their defaults, whether it needs the base, mergekit's name for it."""
    from mu.merge import catalog

    return catalog.markdown()


TABLES = {"architecture": architecture, "merge-methods": merge_methods}
