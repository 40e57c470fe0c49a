"""The package has no import circle: no module of cosim imports, directly or through others, a
module that imports it — counting every import statement, also those inside functions (a lazy
import only hides a circle). Worked out from the source text (``ast``), not by importing.

One kind of edge is not counted: a module importing a package it lies in (``import cosim`` in
``cosim.runner``). Python imports that package's ``__init__`` before any module of it anyway, so
the edge is there for every module whether written or not; the packages' ``__init__`` files are
facades (``cosim.run``, ``cosim.gym``'s environments) that name their modules, and counting the
edge would make every facade a circle."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cosim"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    """module -> the cosim modules it imports (a name imported from a package that is a module
    of it counts as that module; ``if TYPE_CHECKING:`` blocks are not imports at run time)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking(node)
                for stmt in node.body for n in ast.walk(stmt)}
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the package this module is in
                    base = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                names = [f"{src}.{a.name}" if f"{src}.{a.name}" in files else src for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:  # a.b.c where a.b is the module
                    name = name.rpartition(".")[0]
                if name and name != mod and name.startswith("cosim") and not mod.startswith(name + "."):
                    edges.add(name)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_circle_through_three_modules():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": set()}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_top_level_and_lazy_imports_but_not_a_module_s_own_package():
    g = import_graph()
    assert "cosim.engine.workers" in g["cosim.runner"]  # a top-level import
    assert "cosim.runner" in g["cosim.cli"]  # an import inside a function
    assert "cosim.runner" in g["cosim"]  # the facade's lazy cosim.attach
    assert "cosim" not in g["cosim.gym.episode"]  # `import cosim`: its own package
    assert "cosim.engine.processes" in g["cosim.sweep"] and "cosim.api" not in g["cosim.sweep"]


def test_cosim_has_no_import_circle():
    found = cycles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)
