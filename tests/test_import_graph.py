"""Neither language has an import circle: the modules of each Rust crate and of the Python
package import each other in one direction only (a circle means two concepts that cannot be
read, tested or moved apart). The core's rooms (its folders) say what each is for and, read
bottom up, are used in one direction but for a handful of arrows."""

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


def use_paths(code: str, start: int) -> list[list[str]]:
    """The paths named from ``start`` on, after a ``crate::`` or ``super::``: ``a::b`` alone, or
    each path of a group, ``a::{b, c::{d, e}}`` giving ``a::b``, ``a::c::d`` and ``a::c::e``."""
    paths: list[list[str]] = []

    def walk(i: int, prefix: list[str]) -> int:
        path = list(prefix)
        while True:
            m = re.compile(r"\s*(\w+)").match(code, i)
            if m is None:
                if code.startswith("{", i):
                    i += 1
                    while True:
                        i = walk(i, path)
                        i = re.compile(r"\s*").match(code, i).end()
                        if code.startswith(",", i):
                            i += 1
                            if code[i:].lstrip().startswith("}"):
                                i = code.index("}", i) + 1
                                return i
                            continue
                        if code.startswith("}", i):
                            return i + 1
                        return i
                paths.append(path)
                return i
            path.append(m.group(1))
            i = m.end()
            if code.startswith("::", i):
                i += 2
                continue
            paths.append(path)
            return i

    walk(start, [])
    return [p for p in paths if p and p != ["self"]]


def rust_graph(src: Path) -> dict[str, set[str]]:
    """A crate's modules (``mcp::sse`` for ``mcp/sse.rs``; a folder's ``mod.rs`` is the folder)
    and the ones each names in code (not in comments) with ``crate::`` or ``super::`` (each
    ``super`` one level up from the file's module; a group's paths each), each name taken as
    the deepest module it reaches."""
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
        here = module.split("::")
        names = set()
        for m in re.finditer(r"\b(crate|(?:super::)*super)::", code):
            if m.group(1) == "crate":
                base: list[str] = []
            else:
                ups = m.group(1).count("super")
                base = here[: len(here) - ups] if ups <= len(here) else []
            for tail in use_paths(code, m.end()):
                parts = [*base, *tail]
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


def room_arrows(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """The arrows between rooms (a module's first path segment: ``policy`` for
    ``policy::load``), each with the module arrows that make it."""
    arrows: dict[tuple[str, str], list[str]] = {}
    for module, names in graph.items():
        for name in names:
            a, b = module.split("::")[0], name.split("::")[0]
            if a != b:
                arrows.setdefault((a, b), []).append(f"{module} -> {name}")
    return arrows


def upward(arrows: dict[tuple[str, str], list[str]]) -> tuple[list[str], list[str]]:
    """The order of rooms, bottom first, that leaves the fewest module arrows pointing up (to a
    room above the one they leave), and those arrows: exact, over every subset of rooms."""
    rooms = sorted({r for pair in arrows for r in pair})
    weight = {pair: len(v) for pair, v in arrows.items()}
    best: dict[int, tuple[int, list[str]]] = {0: (0, [])}
    for members in range(1 << len(rooms)):
        if members not in best:
            continue
        cost, order = best[members]
        for j, room in enumerate(rooms):
            if members >> j & 1:
                continue
            # `room` goes above every room placed so: their arrows into it point up.
            up = sum(weight.get((below, room), 0) for below in order)
            nxt = members | 1 << j
            if nxt not in best or cost + up < best[nxt][0]:
                best[nxt] = (cost + up, [*order, room])
    order = best[(1 << len(rooms)) - 1][1]
    place = {room: i for i, room in enumerate(order)}
    ups = [m for (a, b), v in sorted(arrows.items()) if place[b] > place[a] for m in v]
    return order, ups


CORE = ROOT / "rust" / "core" / "src"


def test_the_cores_rooms_run_one_way_but_for_a_handful_of_arrows():
    """The core's modules sit in rooms by concern (rust/core/src's folders, and a few
    modules every room speaks of); read bottom up, all but a handful of arrows point down."""
    order, ups = upward(room_arrows(rust_graph(CORE)))
    assert len(ups) <= 5, (order, ups)


def test_every_room_of_the_core_says_what_it_is_for():
    for room in sorted(CORE.iterdir()):
        if room.name == "lib.rs":
            continue
        first = (room / "mod.rs" if room.is_dir() else room).read_text().splitlines()[0]
        if room.is_dir() and not (room / "mod.rs").exists():
            raise AssertionError(f"{room.name}/ has no mod.rs")
        assert first.startswith("//! "), room.name


def test_upward_arrows_are_found_in_the_best_order():
    arrows = {("a", "b"): ["a::x -> b::y"], ("b", "c"): ["b::y -> c"], ("c", "a"): ["c -> a::x"]}
    _, ups = upward(arrows)
    assert len(ups) == 1 and ups[0] in {"a::x -> b::y", "b::y -> c", "c -> a::x"}
    assert upward({("a", "b"): ["a -> b"]}) == (["b", "a"], [])


@pytest.mark.parametrize("crate", CRATES, ids=lambda p: p.parent.name)
def test_no_rust_module_circle(crate: Path):
    assert cycles(rust_graph(crate)) == []


def test_no_python_module_circle():
    assert cycles(python_graph(ROOT / "python" / "toolgate")) == []


def test_uses_are_read_with_their_groups_and_supers(tmp_path: Path):
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "mod.rs").write_text("pub mod load;\npub mod pins;\n")
    (tmp_path / "policy" / "load.rs").write_text(
        "use super::pins::Pins;\nuse super::{error::{E, F}, keys};\n// use crate::mcp;\n"
    )
    (tmp_path / "policy" / "pins.rs").write_text("use super::load::{E};\n")
    (tmp_path / "policy" / "error.rs").write_text("")
    (tmp_path / "policy" / "keys.rs").write_text("use crate::{kind::Kind, mcp};\n")
    (tmp_path / "kind.rs").write_text("")
    (tmp_path / "mcp.rs").write_text("")
    graph = rust_graph(tmp_path)
    assert graph["policy::load"] == {"policy::pins", "policy::error", "policy::keys"}
    assert graph["policy::keys"] == {"kind", "mcp"}
    assert cycles(graph) == [["policy::load", "policy::pins", "policy::load"]]


def test_the_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
