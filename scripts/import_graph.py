"""Import graph of the edgesmith package, read from the source (nothing is imported).

Every `import` and `from ... import` counts, at module level or inside a function (a lazy import is
still a dependency: it only hides a cycle until someone moves it), and `if TYPE_CHECKING:` ones too.
Relative imports are resolved; `from pkg import name` is an import of `pkg.name` when that is a module.

    python scripts/import_graph.py                  # cycles in edgesmith.converter and edgesmith.targets
    python scripts/import_graph.py --private        # private names imported from another module
    python scripts/import_graph.py --edges edgesmith.converter.recipe   # what a module imports

tests/test_layering.py runs the same checks and fails on any cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("edgesmith.converter", "edgesmith.targets")


def modules(root: Path = ROOT, package: str = "edgesmith") -> dict[str, Path]:
    """Dotted name -> file, for every module of `package` under `root`."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _base(name: str, is_package: bool, level: int, module: str | None) -> str | None:
    """The absolute module a relative `from` refers to; None when it climbs above the top package."""
    parts = name.split(".") if is_package else name.split(".")[:-1]
    if level - 1 >= len(parts):
        return None
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def unresolved(root: Path = ROOT) -> list[str]:
    """`module:line` of each relative import that climbs above the package (a moved file that kept its
    old `from ...x`): Python fails on it with "attempted relative import beyond top-level package"."""
    found = []
    for name, path in modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level
                and _base(name, path.name == "__init__.py", node.level, node.module) is None
            ):
                found.append(f"{name}:{node.lineno} from {'.' * node.level}{node.module or ''}")
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for each import in one file, resolved to a module of
    `known` (the longest known prefix); imports of other packages are left out."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, is_package, node.level, node.module) if node.level else node.module or ""
            if base is None:  # beyond the top package: reported by unresolved()
                continue
            targets = [
                (f"{base}.{alias.name}", "") if f"{base}.{alias.name}" in known else (base, alias.name)
                for alias in node.names
            ]
        else:
            continue
        for target, imported in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                yield target, imported, node.lineno


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (anywhere in its file)."""
    known = modules(root)
    return {
        name: {target for target, _, _ in imports(name, path, known) if target != name}
        for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]], within: tuple[str, ...] = CHECKED) -> list[list[str]]:
    """Strongly connected components of more than one module among the modules under `within`
    (Tarjan's algorithm), each sorted; a module that imports itself is no cycle here."""

    def inside(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in within)

    nodes = sorted(n for n in edges if inside(n))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if not inside(nxt):
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(nodes) + 100))
    for node in nodes:
        if node not in index:
            visit(node)
    return sorted(found)


def private_imports(root: Path = ROOT) -> list[str]:
    """`module:line imports _name from other.module` for each private name taken from another module."""
    known = modules(root)
    return [
        f"{name}:{line} imports {imported} from {target}"
        for name, path in known.items()
        for target, imported, line in imports(name, path, known)
        if imported.startswith("_") and target != name
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--private", action="store_true", help="list private names imported across modules")
    parser.add_argument("--edges", metavar="MODULE", help="list what MODULE imports")
    args = parser.parse_args(argv)
    edges = graph()
    if args.edges:
        print("\n".join(sorted(edges[args.edges])))
        return 0
    if args.private:
        found = private_imports()
        print("\n".join(found) or "no private names imported across modules")
        return 1 if found else 0
    found = cycles(edges)
    for component in found:
        print("cycle: " + ", ".join(component))
    if not found:
        print("no import cycles in " + " and ".join(CHECKED))
    broken = unresolved()
    for line in broken:
        print(f"relative import beyond the package: {line}")
    return 1 if found or broken else 0


if __name__ == "__main__":
    sys.exit(main())
