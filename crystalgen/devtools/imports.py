"""Fail on any import cycle or upward import between crystalgen's layers.

    python -m crystalgen.devtools.imports

Reads the source (nothing is imported). Importing ``a.b.c`` also imports the packages
``a.b`` and ``a``, so those count as edges too. Layers, top to bottom (a module may
import its own layer or any lower one)::

    crystalgen (the root package: a facade, see below)
    -> cli, devtools -> screening, evaluation, training -> api, sampling
    -> generation, analogues -> model, trace, io, data -> backbone, heads
    -> validators, results, consistency -> representation
    -> parallel, pretrained, output_paths, progress

Two rules make every import visible to the check, with no exemption:

- **Imports inside functions are edges like any other.** A function-level import is
  for a heavy or optional dependency only (torch and the model behind ``crystalgen.api``,
  matplotlib, matminer, CHGNet, Ray), to keep ``import`` and the CLI's start-up cheap; it
  may not run upward or close a cycle, so it cannot dodge the layering.
- **The root package is the top layer, and lazy.** Python runs ``crystalgen/__init__.py``
  before any submodule, so every module implicitly imports it; those implicit edges are
  not drawn. In exchange the root may import crystalgen modules only inside its
  module-level ``__getattr__`` (PEP 562, e.g. ``crystalgen.CrystalGenerator``): loading
  the root then loads nothing else, and the facade sits above everything it names.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the root package: the top layer, matched by its exact name only
PACKAGE = "crystalgen"
#: package -> folder (pyproject's package-dir)
FOLDERS = {"crystalgen": "crystalgen", "crystalgen.backbone": "backbone", "crystalgen.heads": "heads",
           "crystalgen.validators": "validators", "crystalgen.data": "data"}
LAYERS = [
    (PACKAGE,),
    ("crystalgen.cli", "crystalgen.devtools", "crystalgen.__main__"),
    ("crystalgen.screening", "crystalgen.evaluation", "crystalgen.training"),
    ("crystalgen.api", "crystalgen.sampling"),
    ("crystalgen.generation", "crystalgen.analogues", "crystalgen.auto_ranking"),
    ("crystalgen.model", "crystalgen.trace", "crystalgen.io", "crystalgen.data"),
    ("crystalgen.backbone", "crystalgen.heads"),
    ("crystalgen.validators", "crystalgen.results", "crystalgen.consistency", "crystalgen.distinct"),
    ("crystalgen.representation",),
    ("crystalgen.parallel", "crystalgen.pretrained", "crystalgen.output_paths", "crystalgen.progress"),
]


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.split(".")[1:2] and name.split(".")[1] in {"backbone", "heads", "validators", "data"} \
                    and package == "crystalgen":
                continue  # those folders are mapped on their own
            out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            if not t.startswith("crystalgen"):
                continue
            parts = t.split(".")
            for k in range(2, len(parts) + 1):  # the module and the packages above it
                prefix = ".".join(parts[:k])
                if prefix in known and prefix != name and not name.startswith(prefix + "."):
                    yield prefix  # (a module's own packages are already importing)


def layer(name: str) -> int | None:
    for rank, group in enumerate(LAYERS):
        if any(name == g or (g != PACKAGE and name.startswith(g + ".")) for g in group):
            return rank
    return None


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: set(_imports(name, path, known)) for name, path in mods.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            la, lb = layer(a), layer(b)
            if la is None or lb is None:
                out.append(f"{a} -> {b}: module not in any layer (add it to LAYERS)")
            elif lb < la:
                out.append(f"{a} -> {b}: upward import")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def eager_root_imports(source: str) -> list[str]:
    """Imports of crystalgen modules in the root package's ``source`` outside its
    module-level ``__getattr__`` (each one would load for every ``import crystalgen.x``)."""
    tree = ast.parse(source)
    lazy = {id(node) for fn in tree.body if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
            for node in ast.walk(fn)}
    out = []
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.ImportFrom):
            names = [PACKAGE]
        else:
            continue
        out += [f"{PACKAGE}:{node.lineno}: imports {n} outside __getattr__ (the root package must stay lazy)"
                for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")]
    return out


def problems() -> list[str]:
    edges = graph()
    root = eager_root_imports((ROOT / FOLDERS[PACKAGE] / "__init__.py").read_text())
    return root + upward(edges) + [f"import cycle: {' <-> '.join(c)}" for c in cycles(edges)]


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"{len(found)} import problem(s) in {len(graph())} modules")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
