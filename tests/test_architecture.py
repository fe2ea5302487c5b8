"""The house rules that code review would otherwise have to remember: `mu.plots` is a leaf,
the modules import each other without cycles (function-level imports included), and no
module grows past the size at which it should be split by concern."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mu"
MAX_LINES = 450  # "a module past ~400 lines is split by concern"; a little slack, never a god-module


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def mu_imports(path: Path) -> set[str]:
    """Every mu module ``path`` imports, at any depth of the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mu.")}
        elif isinstance(node, ast.ImportFrom) and node.module and (node.module == "mu" or node.module.startswith("mu.")):
            if node.module == "mu":
                found |= {f"mu.{a.name}" for a in node.names}
            else:
                found.add(node.module)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: {i for i in mu_imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_plots_is_a_leaf():
    assert GRAPH["mu.plots"] <= {"mu.paths"}, f"mu.plots imports {sorted(GRAPH['mu.plots'])}: it must only draw frames"


def test_no_import_cycles():
    # a package's __init__ re-exporting its own submodules is not a cycle between concerns
    graph = {m: {i for i in deps if not (m.startswith(i + ".") and MODULES[i].name == "__init__.py")
                 and not (i.startswith(m + ".") and MODULES[m].name == "__init__.py")}
             for m, deps in GRAPH.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
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
