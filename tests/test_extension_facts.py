"""Facts both languages use are the extension's: the stub's type aliases, which cannot come
from it at run time, name exactly what it exports."""

from __future__ import annotations

import ast
from pathlib import Path

from toolgate import _core

STUB = Path(_core.__file__).with_name("_core.pyi")


def stub_literal(name: str) -> list[str]:
    """The strings of the stub's ``name = Literal[...]`` alias, in order."""
    for node in ast.parse(STUB.read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id == name:
            value = node.value
            assert isinstance(value, ast.Subscript)
            items = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
            return [ast.literal_eval(item) for item in items]
    raise AssertionError(f"no {name} in {STUB}")


def test_the_stubs_codes_and_verdicts_are_the_extensions():
    assert stub_literal("Code") == _core.CODES
    assert stub_literal("Verdict") == _core.VERDICTS


def test_the_decider_is_one_of_the_served_services():
    assert _core.DECIDER in _core.SERVICES


def test_windows_and_waits_read_as_the_engines_reasons_write_them():
    policy = {
        "version": "1",
        "tools": {"t": {"limits": [{"counter": "c", "max": 1, "window": 90, "scope": "global"}]}},
    }
    engine = _core.Engine(policy)
    engine.decide("t")
    reason = engine.decide("t").reason
    assert f"per {_core.format_window(90_000)} per global" in reason
    assert [_core.format_window(ms) for ms in (1, 1000, 90_000, 3_600_000, 86_400_000)] == [
        "1ms",
        "1s",
        "90s",
        "1h",
        "1d",
    ]
    assert _core.format_seconds(1549) == "1.5s"
