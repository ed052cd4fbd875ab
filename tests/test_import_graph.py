"""refinv's modules import each other without a circle.

The import graph is built from the sources (``ast``, nothing imported): a node per module
of refinv (a package is its ``__init__``), an edge ``a -> b`` for every ``import`` or
``from ... import`` in ``a`` that names the refinv module ``b`` (``from .x import name``
names ``x.name`` when that is a module, else ``x``), at module level AND inside functions
and methods (a deferred import is still a dependency; only imports under
``if TYPE_CHECKING:``, which never run, are left out). The parent packages that Python
initializes on the way are not edges: they are what every module depends on.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(pkg: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        parts = list(p.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _runtime_imports(tree: ast.AST):
    """Every Import/ImportFrom node, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(pkg: Path) -> dict[str, set[str]]:
    mods = _modules(pkg)
    top = pkg.name
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [
                    f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target
                    for a in node.names
                ]
            for t in targets:
                if t.split(".")[0] != top:
                    continue
                while t not in mods and "." in t:  # `import refinv.x.name`-style leftovers
                    t = t.rsplit(".", 1)[0]
                if t != mod:
                    edges[mod].add(t)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(edges):
        if root in state:
            continue
        path, iters = [root], [iter(sorted(edges[root]))]
        state[root] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(edges.get(nxt, ()))))
    return None


def test_refinv_has_no_import_circle():
    edges = import_graph(ROOT / "refinv")
    assert len(edges) > 50 and sum(map(len, edges.values())) > 100  # the graph was read
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_a_circle_through_a_deferred_import_is_found(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .sub.b import g\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "def g():\n    from ..a import f\n",
        },
    )
    edges = import_graph(pkg)
    assert edges["pkg.a"] == {"pkg.sub.b"} and edges["pkg.sub.b"] == {"pkg.a"}
    assert find_cycle(edges) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_type_checking_imports_and_other_packages_are_not_edges(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
            "pkg/a.py": "import numpy\nimport pkg\nfrom pkg import b\n",
            "pkg/b.py": "from . import a as _a\n",
        },
    )
    edges = import_graph(pkg)
    assert edges == {"pkg": set(), "pkg.a": {"pkg", "pkg.b"}, "pkg.b": {"pkg.a"}}
    assert find_cycle(edges) == ["pkg.a", "pkg.b", "pkg.a"]
