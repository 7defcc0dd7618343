#!/usr/bin/env python3
"""Check the package layout: module size, import cycles, private names across modules.

    python scripts/check_layout.py [--max-lines N] [ROOT]

Scans ``hubtune/`` and each built-in plugin package under ``plugins/`` (``plugins/hubtune_hf`` is
the package ``hubtune_hf``) and exits 1, listing every offender, when

* a module is longer than ``--max-lines`` lines (400);
* modules import each other in a cycle at import time. The graph has an edge for each import a
  module runs when it is imported: module-level statements, including those under ``if``/``try``,
  but not inside functions and not under ``if TYPE_CHECKING:``. ``import a.b.c`` also runs the
  ``__init__`` of ``a.b`` unless the importer is inside that package already, so it counts too;
* a module imports a private name (leading ``_``, not a dunder) from another module, anywhere in
  it (``from hubtune.x import _y``, ``import hubtune._x``, or ``x._y`` on an imported module).

Only the standard library is used, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

MAX_LINES = 400


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    lines: int
    edges: set[str] = field(default_factory=set)  # modules imported at import time


def discover(root: Path) -> dict[str, Module]:
    """Every module of ``hubtune`` and of the plugin packages under ``plugins/``, by dotted name."""
    root = root.resolve()
    packages = [(root / "hubtune", "hubtune")]
    plugins = root / "plugins"
    if plugins.is_dir():
        packages += [(p, p.name) for p in sorted(plugins.iterdir()) if (p / "__init__.py").is_file()]
    modules: dict[str, Module] = {}
    for folder, package in packages:
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if any(part.startswith(".") or part == "__pycache__" for part in parts):
                continue
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package, *parts])
            text = path.read_text(encoding="utf-8")
            shown = path.relative_to(root)  # as messages show it
            modules[name] = Module(name, shown, is_package, ast.parse(text, str(shown)), len(text.splitlines()))
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_nodes(body: list[ast.stmt]):
    """Import statements run when the module is imported (not in functions, not TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from import_time_nodes(node.body)
            yield from import_time_nodes(node.orelse)
        else:
            for name in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, name, None)
                if isinstance(children, list):
                    for child in children:
                        if isinstance(child, ast.stmt):
                            yield from import_time_nodes([child])
                        elif hasattr(child, "body"):  # except handlers, match cases
                            yield from import_time_nodes(child.body)


def absolute(module: Module, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, with relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def targets(module: Module, node: ast.Import | ast.ImportFrom, modules: dict[str, Module]) -> list[tuple[str, str | None]]:
    """``(module, name or None)`` pairs an import statement reaches."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    source = absolute(module, node)
    found: list[tuple[str, str | None]] = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        found.append((submodule, None) if submodule in modules else (source, alias.name))
        if submodule in modules:
            found.append((source, None))  # the package's __init__ runs first
    return found


def with_parents(target: str, importer: str, modules: dict[str, Module]) -> set[str]:
    """``target`` and the packages whose ``__init__`` importing it runs (not the importer's own)."""
    reached = set()
    parts = target.split(".")
    own = importer.split(".")
    for end in range(1, len(parts) + 1):
        name = ".".join(parts[:end])
        if name in modules and not (end < len(parts) and own[:end] == parts[:end]):
            reached.add(name)
    reached.discard(importer)
    return reached


def build_graph(modules: dict[str, Module]) -> None:
    for module in modules.values():
        for node in import_time_nodes(module.tree.body):
            for target, _ in targets(module, node, modules):
                module.edges |= with_parents(target, module.name, modules)


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(modules[start].edges)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(modules[child].edges))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def cycle_path(component: list[str], modules: dict[str, Module]) -> list[str]:
    """One concrete loop through a component, for the message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        step = sorted(modules[path[-1]].edges & members)
        nxt = next((m for m in step if m == start), None) or next((m for m in step if m not in seen), None)
        if nxt is None or nxt == start:
            return path + [start]
        path.append(nxt)
        seen.add(nxt)


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(module: Module, modules: dict[str, Module], roots: set[str]) -> list[str]:
    """Private names this module takes from other project modules, anywhere in its code."""
    found = []
    aliases: dict[str, str] = {}  # local name -> project module it is bound to
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in roots:
                    continue
                if any(private(part) for part in alias.name.split(".")):
                    found.append(f"{module.path}:{node.lineno}: import {alias.name}")
                if alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            if source.split(".")[0] not in roots:
                continue
            for alias in node.names:
                parts = source.split(".") + [alias.name]
                if any(private(part) for part in parts):
                    found.append(f"{module.path}:{node.lineno}: from {source} import {alias.name}")
                elif f"{source}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(module.tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and private(node.attr) and aliases[node.value.id] != module.name):
            found.append(f"{module.path}:{node.lineno}: {node.value.id}.{node.attr} "
                         f"(private name of {aliases[node.value.id]})")
    return found


def check(root: Path, max_lines: int = MAX_LINES) -> list[str]:
    modules = discover(root)
    roots = {name.split(".")[0] for name in modules}
    problems = []
    for module in sorted(modules.values(), key=lambda m: m.name):
        if module.lines > max_lines:
            problems.append(f"too long: {module.path} has {module.lines} lines (at most {max_lines})")
    build_graph(modules)
    for component in cycles(modules):
        problems.append("import cycle: " + " -> ".join(cycle_path(component, modules))
                        + (f" (component: {', '.join(component)})" if len(component) > 2 else ""))
    for module in sorted(modules.values(), key=lambda m: m.name):
        problems += [f"private name across modules: {line}" for line in private_imports(module, modules, roots)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="repository root (default: this script's repository)")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    args = parser.parse_args(argv)
    problems = check(args.root, args.max_lines)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} layout problem(s)", file=sys.stderr)
        return 1
    print("layout ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
