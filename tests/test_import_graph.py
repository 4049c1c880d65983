"""Neither language has an import circle: the modules of each Rust crate and of the Python
package import each other in one direction only (a circle means two concepts that cannot be
read, tested or moved apart)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CRATES = sorted(p.parent for p in (ROOT / "rust").glob("*/src/lib.rs"))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle found by depth-first search, each as the modules on it."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def rust_graph(src: Path) -> dict[str, set[str]]:
    """A crate's modules (``mcp::sse`` for ``mcp/sse.rs``; a folder's ``mod.rs`` is the folder)
    and the ones each names with ``crate::`` in code (not in comments), each name taken as the
    deepest module it reaches."""
    files = {}
    for path in src.rglob("*.rs"):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "mod":
            parts = parts[:-1]
        if parts in (("lib",), ("main",)):
            continue
        files["::".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")
        )
        names = set()
        for reference in re.findall(r"\bcrate::(\w+(?:::\w+)*)", code):
            parts = reference.split("::")
            reached = next(
                ("::".join(parts[:n]) for n in range(len(parts), 0, -1)
                 if "::".join(parts[:n]) in files),
                None,
            )  # fmt: skip
            if reached is not None:
                names.add(reached)
        # A module may use its own children and its parent's items: not a circle.
        graph[module] = {
            n for n in names if not n.startswith(module) and not module.startswith(n + "::")
        }
    return graph


def python_graph(package: Path) -> dict[str, set[str]]:
    """The package's modules and the ones each imports, at any depth of the code."""
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        text = path.read_text()
        names = set(re.findall(r"^\s*from (toolgate[\w.]*) import", text, re.M))
        names |= set(re.findall(r"^\s*import (toolgate[\w.]*)", text, re.M))
        for base, members in re.findall(
            r"^\s*from (toolgate[\w.]*) import \(?([\w, \n]+)", text, re.M
        ):
            names |= {f"{base}.{m.strip()}" for m in members.replace("\n", " ").split(",")}
        graph[module] = names
    modules = set(graph)
    return {m: {n for n in names if n in modules and n != m} for m, names in graph.items()}


@pytest.mark.parametrize("crate", CRATES, ids=lambda p: p.parent.name)
def test_no_rust_module_circle(crate: Path):
    assert cycles(rust_graph(crate)) == []


def test_no_python_module_circle():
    assert cycles(python_graph(ROOT / "python" / "toolgate")) == []


def test_the_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
