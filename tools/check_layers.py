"""Check trioecho's import structure: no import cycle, no import upwards.

    python tools/check_layers.py [ROOT]

Reads every module under ``ROOT/trioecho/`` (ROOT: the repository, by
default this file's; its imports at run time: those under
``if TYPE_CHECKING:`` are left out) and fails, listing each problem, if

* the modules' imports form a cycle,
* a module imports from a higher layer than its own (or names a module of
  one in a string, as ``importlib.import_module`` would take it),
* a module above the stream layer reaches a ``.transport`` (the message
  stream owns its transport: what the layers above need, it offers), or
* a module outside ``trioecho.cli`` imports ``argparse`` (the command line
  maps its options onto configuration types; nothing else sees them).

The layers, lowest first (a module may import its own layer and those below):
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = [
    # the ground: errors, log text, close reasons, the C extensions and their selection
    (
        "trioecho.errors",
        "trioecho.logtext",
        "trioecho.reasons",
        "trioecho.arguments",
        "trioecho._version",
        "trioecho._backend",
        "trioecho._framer_ffi",
        "trioecho._echo_ffi",
        "trioecho._loadgen_ffi",
        "trioecho._pump_ffi",
    ),
    ("trioecho.framing",),  # sans-IO framing core
    ("trioecho.io",),  # transports, hub, memory budget: sockets and Trio internals
    ("trioecho.stream",),  # the message stream, sessions, connect
    ("trioecho.server",),  # handler model, listeners, accept, PROXY
    ("trioecho.services",),  # echo, relay
    ("trioecho.workers",),  # supervisor and workers
    ("trioecho.cli",),  # the command line and its tools
    ("trioecho", "trioecho.__main__", "trioecho.testing"),  # the public package
]
__doc__ += "".join(f"\n{rank}. {', '.join(names)}" for rank, names in enumerate(LAYERS)) + "\n"

ROOT = Path(__file__).resolve().parent.parent
STREAM_LAYER = 3  # LAYERS' index of trioecho.stream: above it, no .transport
COMMAND_LINE = "trioecho.cli"  # the only package that may import argparse


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(name: str) -> int:
    best, rank = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank < 0:
        raise SystemExit(f"check_layers: {name} is in no layer: add it to LAYERS")
    return rank


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except what sits under ``if TYPE_CHECKING:``."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imports(path: Path, modules: set[str], packages: frozenset[str] = frozenset()) -> set[str]:
    """The trioecho modules ``path`` imports at run time, and those it names
    in a string that is exactly a module's name (``"trioecho.services.echo"``:
    what ``importlib.import_module`` would load, hidden from the imports; a
    package's name, ``"trioecho.server"``, is a logger's more often)."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in modules and node.value not in packages:
                found.add(node.value)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("trioecho"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("trioecho"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def _imports_argparse(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name == "argparse" for alias in node.names)
    return isinstance(node, ast.ImportFrom) and node.module == "argparse"


def seam_problems(name: str, path: Path) -> list[str]:
    """The module's breaches of the two seams (see the module docstring)."""
    problems: list[str] = []
    nodes = _runtime_nodes(ast.parse(path.read_text(), str(path)))
    in_cli = name == COMMAND_LINE or name.startswith(COMMAND_LINE + ".")
    for node in [] if in_cli else nodes:
        if _imports_argparse(node):
            line = getattr(node, "lineno", "?")
            problems.append(f"{name} imports argparse (line {line}): only {COMMAND_LINE} may")
    if layer(name) > STREAM_LAYER:
        for node in nodes:
            if isinstance(node, ast.Attribute) and node.attr == "transport":
                problems.append(
                    f"{name} reaches .transport (line {node.lineno}): above the stream "
                    "layer, use what MessageStream offers"
                )
    return problems


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)) is not None:
            return cycle
    return None


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    root = Path(arguments[0]).resolve() if arguments else ROOT
    paths = sorted((root / "trioecho").rglob("*.py"))
    names = {path: module_name(path, root) for path in paths}
    modules = set(names.values()) | {n for names in LAYERS[:1] for n in names}
    packages = frozenset(names[p] for p in paths if p.name == "__init__.py")
    graph = {names[p]: imports(p, modules, packages) - {names[p]} for p in paths}
    problems = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer(target) > layer(source)
    ]
    # A package's __init__ importing its own submodules is not a cycle; a
    # submodule importing its package's __init__ would be.
    acyclic = {
        source: {t for t in targets if not (t.startswith(source + "."))}
        for source, targets in graph.items()
    }
    cycle = find_cycle(acyclic)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    for path in paths:
        problems += seam_problems(names[path], path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(
            f"{len(graph)} modules in {len(LAYERS)} layers: no import upwards, no cycle, "
            "no .transport above the stream, argparse only in the command line"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
