"""The house rules that code review would otherwise have to remember: the package is a stack of
wings and a wing imports only the wings below it, the modules import each other without cycles
(function-level imports included), `mu.analysis.plots` is a leaf, inside the package nobody reaches
a module through its public short name, and no module grows past the size at which it should be
split by concern."""

import ast
from pathlib import Path

import pytest

import mu

PACKAGE = Path(__file__).resolve().parents[1] / "mu"
MAX_LINES = 450  # "a module past ~400 lines is split by concern"; a little slack, never a god-module


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def mu_imports(path: Path) -> set[str]:
    """Every mu module ``path`` imports, at any depth of the file (functions included):
    ``from mu.core import paths`` is an import of ``mu.core.paths``, not of the wing."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mu.")}
        elif (
            isinstance(node, ast.ImportFrom) and node.module and (node.module == "mu" or node.module.startswith("mu."))
        ):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


GRAPH = {m: {i for i in mu_imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in mu.WINGS else None


def test_plots_is_a_leaf():
    plots = GRAPH["mu.analysis.plots"]
    assert plots <= {"mu.core.paths"}, f"mu.analysis.plots imports {sorted(plots)}: it must only draw frames"


def test_the_package_is_wings_and_an_entry_point():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"], (
        f"modules beside the wings: {top}; put each in the wing of its concern"
    )
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == sorted(mu.WINGS), f"wings on disk {folders} != mu.WINGS {sorted(mu.WINGS)}"


@pytest.mark.parametrize("name", mu.WINGS)
def test_each_wing_says_what_it_may_import(name):
    doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())) or ""
    assert "May import:" in doc, f"mu/{name}/__init__.py: its docstring says what lives there and what it may import"


def test_a_wing_imports_only_the_wings_below_it():
    rank = {w: i for i, w in enumerate(mu.WINGS)}
    upward = [
        f"{m} -> {d}"
        for m, deps in GRAPH.items()
        if wing(m)
        for d in sorted(deps)
        if wing(d) and rank[wing(d)] > rank[wing(m)]
    ]
    assert not upward, "imports of a wing above: " + "; ".join(upward)


def test_inside_the_package_modules_are_named_by_their_wing():
    # the short names (mu.similarity, mu.report, ...) are for notebooks and users; inside the package a
    # short name would hide from the wing rule above which wing a module depends on
    short = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "mu":
                short += [f"{m}: from mu import {a.name}" for a in node.names if a.name not in mu.WINGS]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                short += [f"{m}: {n}" for n in names if n.startswith("mu.") and n.split(".")[1] in mu.PUBLIC]
    assert not short, "; ".join(short)


def test_each_public_name_is_one_module_of_its_wing():
    missing = [f"mu.{n} -> mu/{w}/{n}.py" for n, w in mu.PUBLIC.items() if not (PACKAGE / w / f"{n}.py").exists()]
    assert not missing, f"public names without their module: {missing}"
    assert mu.similarity is __import__("mu.langs.similarity", fromlist=["x"])


def test_no_import_cycles():
    # a package's __init__ re-exporting its own submodules is not a cycle between concerns
    graph = {
        m: {
            i
            for i in deps
            if not (m.startswith(i + ".") and MODULES[i].name == "__init__.py")
            and not (i.startswith(m + ".") and MODULES[m].name == "__init__.py")
        }
        for m, deps in GRAPH.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines (> {MAX_LINES}): split it by concern"
