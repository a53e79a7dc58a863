"""The import graph of `attune.*`: no cycles, and no import pointing up the layer order.

The order is written once, in the `layers` block of docs/architecture.md (top layer first); this
test reads it from there. Every import counts, top-level or inside a function, `TYPE_CHECKING`
included, and so does `importlib.import_module("attune...")` / `__import__("attune...")` with a
literal name. An import that must point up is listed in the block's `exceptions:` with its reason.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"


def read_layers() -> tuple[list[list[str]], dict[tuple[str, str], str]]:
    """(layers top first, each a list of unit patterns; {(importer, imported): reason})."""
    block = re.search(r"```layers\n(.*?)```", DOC.read_text(), re.S)
    assert block, f"{DOC}: no ```layers block"
    layers, exceptions, in_exceptions = [], {}, False
    for line in block.group(1).splitlines():
        line = line.strip()
        if not line:
            continue
        if line == "exceptions:":
            in_exceptions = True
        elif in_exceptions:
            edge, _, reason = line.partition(":")
            a, _, b = edge.partition("->")
            assert reason.strip(), f"exception {edge!r} in {DOC} needs a reason"
            exceptions[(a.strip(), b.strip())] = reason.strip()
        else:
            layers.append(line.partition(":")[2].split())
    return layers, exceptions


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (SRC / "attune").rglob("*.py")}


def imports(module: str) -> set[str]:
    """Every attune module `module` imports (a `from pkg import submodule` names the submodule)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            out |= subs or {node.module}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            out.add(node.args[0].value)
    # a module importing its own package (or a parent) is Python's import order, not an edge
    return {m for m in out if m.startswith("attune") and m in MODULES and not module.startswith(m + ".")}


def unit_of(module: str, layers: list[list[str]]) -> tuple[str, int]:
    """(the layer-table pattern `module` falls under, its layer index: 0 is the top)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        for exact in (True, False):  # a name written out wins over a `*` pattern that also matches it
            for i, layer in enumerate(layers):
                for pattern in layer:
                    if (pattern == name) if exact else fnmatch.fnmatchcase(name, pattern):
                        return pattern, i
    pytest.fail(f"{module} is in no layer: add it (or its package) to the ```layers block of docs/architecture.md")


def graph() -> dict[str, set[str]]:
    return {m: imports(m) for m in MODULES}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_points_up_the_layers():
    layers, exceptions = read_layers()
    upward = []
    for a, targets in graph().items():
        for b in targets:
            (ua, la), (ub, lb) = unit_of(a, layers), unit_of(b, layers)
            if lb < la and (a, b) not in exceptions:
                upward.append(f"{a} ({ua}) imports {b} ({ub}), a higher layer")
    assert not upward, "\n".join(sorted(upward))


def test_listed_exceptions_exist_and_are_few():
    layers, exceptions = read_layers()
    edges = graph()
    stale = [f"{a} -> {b}" for a, b in exceptions if b not in edges.get(a, set())]
    assert not stale, f"exceptions in docs/architecture.md that no longer happen: {stale}"
    assert len(exceptions) <= 5


def test_no_import_cycles_between_modules_or_units():
    layers, exceptions = read_layers()
    edges = {a: {b for b in bs if (a, b) not in exceptions} for a, bs in graph().items()}
    assert (found := cycle(edges)) is None, "module import cycle: " + " -> ".join(found)
    units: dict[str, set[str]] = {}
    for a, bs in edges.items():
        ua = unit_of(a, layers)[0]
        units.setdefault(ua, set()).update(u for b in bs if (u := unit_of(b, layers)[0]) != ua)
    assert (found := cycle(units)) is None, "cycle between units of the layer table: " + " -> ".join(found)


def test_the_checker_sees_a_cycle_and_an_upward_edge():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    layers = [["attune.cli", "attune.studio.commands"], ["attune.*.commands"], ["attune.train.objectives"], ["attune.train"]]
    assert unit_of("attune.train.commands", layers) == ("attune.*.commands", 1)
    assert unit_of("attune.studio.commands", layers) == ("attune.studio.commands", 0)
    assert unit_of("attune.train.objectives.sft", layers) == ("attune.train.objectives", 2)
    assert unit_of("attune.train.loop", layers) == ("attune.train", 3)
