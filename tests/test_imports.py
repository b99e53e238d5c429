"""No import cycles between the modules of ``src/pyinv`` (issue 18).

The imports of every module are read from its source with :mod:`ast` (nothing is imported) and turned
into a graph of edges *importing module → imported module*; the test fails listing every cycle.

Rules
-----
* Every ``.py`` file under ``src/pyinv`` is a module; a package is the module of its ``__init__.py``
  (``pyinv``, ``pyinv.maps``, ...). Only modules of pyinv count; other imports are ignored.
* Every import statement counts wherever it is: at module level, inside functions, methods and
  classes, in ``try``/``if`` blocks. An import moved into a function still runs in the same process and
  still ties the two modules together: it hides a cycle from the interpreter, it does not remove it.
* Absolute (``pyinv.x``) and relative (``.x``, ``..x``) imports are resolved to module names; for a
  package's ``__init__`` the relative base is the package itself.
* ``import pyinv.a.b`` and ``from pyinv.a.b import name`` give one edge, to ``pyinv.a.b``: the parent
  packages that Python initialises on the way are not counted (else any package whose ``__init__``
  imports its submodules would be a cycle with each of them).
* ``from pkg import x`` gives an edge to the submodule ``pkg.x`` when ``pkg.x`` is a module, else to
  ``pkg`` (``x`` is then a name defined by ``pkg/__init__.py``, e.g. ``from pyinv import __version__``
  or ``import pyinv`` followed by ``pyinv.synthesize``).
* A package's ``__init__`` importing its submodules counts like any other import.
* A module importing itself is not a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "pyinv"


def module_files(src: Path = SRC, root: str = ROOT) -> dict[str, Path]:
    """Module name → file, for every ``.py`` file of the package ``root`` under ``src``."""
    out = {}
    for f in sorted((src / root).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_package(mods: dict[str, Path], name: str) -> bool:
    return mods[name].name == "__init__.py"


def import_edges(mods: dict[str, Path], name: str, root: str = ROOT) -> set[str]:
    """The pyinv modules that module ``name`` imports (see the module docstring for the rules)."""
    tree = ast.parse(mods[name].read_text(encoding="utf-8"), filename=str(mods[name]))
    package = name if _is_package(mods, name) else name.rpartition(".")[0]
    out: set[str] = set()

    def deepest_module(dotted: str) -> str | None:
        parts = dotted.split(".")
        for k in range(len(parts), 0, -1):
            cand = ".".join(parts[:k])
            if cand in mods:
                return cand
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == root or alias.name.startswith(root + "."):
                    m = deepest_module(alias.name)
                    if m is not None:
                        out.add(m)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == root or target.startswith(root + ".")):
                continue
            m = deepest_module(target)
            if m is None:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if m == target and sub in mods:
                    out.add(sub)  # `from pkg import submodule`
                else:
                    out.add(m)
    out.discard(name)
    return out


def import_graph(src: Path = SRC, root: str = ROOT) -> dict[str, set[str]]:
    mods = module_files(src, root)
    return {name: import_edges(mods, name, root) for name in mods}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (modules that import each other,
    directly or through others), as a sorted list of names; the list sorted too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan, iterative over the edges of v
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(comps)


def a_cycle(graph: dict[str, set[str]], comp: list[str], start: str | None = None) -> list[str]:
    """A shortest closed path through ``start`` (default the first module of the component ``comp``)
    inside ``comp``, breadth first."""
    members = set(comp)
    start = comp[0] if start is None else start
    prev: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w not in seen:
                    seen.add(w)
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp  # pragma: no cover - a component always has a cycle through each member


def describe_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Per component: its modules, then a shortest cycle through each of them (each cycle once)."""
    out = []
    for c in cycles(graph):
        out.append(f"{len(c)} modules in a cycle: {', '.join(c)}")
        seen = set()
        for m in c:
            cyc = a_cycle(graph, c, m)
            k = cyc.index(min(cyc[:-1]))
            key = tuple(cyc[k:-1] + cyc[:k])
            if key not in seen:
                seen.add(key)
                out.append("    " + " -> ".join(key + (key[0],)))
    return out


def test_rules_on_a_small_package(tmp_path):
    """The resolution rules on a made-up package (relative, absolute, function-level, __init__ edges)."""
    p = tmp_path / "pkgx"
    (p / "sub").mkdir(parents=True)
    (p / "__init__.py").write_text("from .a import f\nfrom . import sub\n")
    (p / "a.py").write_text("def f():\n    from .sub.b import g\n    return g\n")
    (p / "sub" / "__init__.py").write_text("")
    (p / "sub" / "b.py").write_text("import pkgx.sub.c as c\nfrom .. import __version__\n")
    (p / "sub" / "c.py").write_text("from ..a import f\nimport os\n")
    (p / "lone.py").write_text("from pkgx.sub import b\n")
    g = import_graph(tmp_path, "pkgx")
    assert g == {"pkgx": {"pkgx.a", "pkgx.sub"}, "pkgx.a": {"pkgx.sub.b"}, "pkgx.sub": set(),
                 "pkgx.sub.b": {"pkgx.sub.c", "pkgx"}, "pkgx.sub.c": {"pkgx.a"}, "pkgx.lone": {"pkgx.sub.b"}}
    assert cycles(g) == [["pkgx", "pkgx.a", "pkgx.sub.b", "pkgx.sub.c"]]
    assert a_cycle(g, cycles(g)[0]) == ["pkgx", "pkgx.a", "pkgx.sub.b", "pkgx"]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 10 and "pyinv" in graph
    found = describe_cycles(graph)
    if found:
        pytest.fail("import cycles between modules of src/pyinv (every import counts, also inside "
                    "functions; see this test's docstring):\n" + "\n".join(found))
