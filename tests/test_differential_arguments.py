"""Differential tests of the arguments a caller hands toolgate itself: as JSON text (toolgate.v1
``Decide``'s ``arguments_json``, ``Engine.decide(arguments=text)``) or as a Python dict
(``Engine.decide(arguments=dict)``, as an SDK hook does), while the same arguments go on to the
tool's server.

The property: whatever toolgate allows, the policy allows as every reader reads it. The
readers: Go's ``encoding/json`` (tests/go_oracle: the map a handler gets, and the struct a
handler binds, where keys that fold alike are one field and the last wins), Python's
``json.loads`` and ``pydantic_core.from_json`` (the official SDK's two entries), and a reader
that takes every number for a double, as JavaScript's ``JSON.parse`` does. A dict reaches
them as the SDK writes it (``pydantic_core.to_json``). Each reading is judged by
``reference_allows``, the test policy's rules written out by hand, not by toolgate.

Refusing or denying is always safe; the clean cases check that toolgate still allows what
every reader reads alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from typing import Any

import native
import pydantic_core
import pytest
from conftest import cond, policy
from go_oracle import GoOracle
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_differential import (
    BAD_BYTES,
    MARKER,
    TRAILING,
    WHITESPACE,
    Arr,
    Key,
    json_equal,
    mutate,
    orbits_for,
    rarely,
    serialize,
    texts,
)
from test_differential import (
    arguments as argument_objects,
)
from toolgate import _core
from toolgate.v1 import decider_pb2 as pb

#: 2^53: the integer JavaScript reads 2^53 + 1 as.
TWO_53 = 2**53


@dataclasses.dataclass(frozen=True)
class Flag:
    """An argument that is not a dict but is written out as an object."""

    k: bool


def present(path: str, *check: dict[str, Any]) -> dict[str, Any]:
    """Denies when ``path`` is there and ``check`` holds (absent keys pass)."""
    return {"all": [cond(path, "exists"), *check]}


POLICY = policy(
    {
        "transfer": {
            "deny_if": [
                present("args.amount", cond("args.amount", "gt", 100)),
                present("args.to", cond("args.to", "regex", "(?i)bob")),
                present("args.k", cond("args.k", "eq", True)),
                present("args.x", cond("args.x", "eq", TWO_53)),
                present("args.a", cond("args.a", "in", [[1], {"s": 1}])),
                present("args.s.k", cond("args.s.k", "neq", "ok")),
            ]
        }
    }
)


@pytest.fixture(scope="module")
def engine() -> _core.Engine:
    return native.served(_core.Policy.from_dict(POLICY)).engine


def decide_wire(engine: _core.Engine, text: bytes) -> pb.DecideResponse:
    """A toolgate.v1 Decide of ``transfer`` with ``text`` as its arguments_json, through the
    native server."""
    request = pb.DecideRequest(tool="transfer", subject=pb.Subject(grant="g"), arguments_json=text)
    return pb.DecideResponse.FromString(
        native.call(engine, native.DECIDE, request.SerializeToString())
    )


def verdict_of(engine: _core.Engine, arguments: Any) -> str:
    return str(engine.decide("transfer", grant="g", arguments=arguments).verdict)


def call_body(text: bytes) -> bytes:
    return b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer",' + (
        b'"arguments":' + text + b"}}"
    )


def readings(text: bytes, oracle: GoOracle) -> list[tuple[str, Any]]:
    """What each reader makes of arguments ``text``; a reader that refuses it is left out (the
    call does not run there)."""
    out: list[tuple[str, Any]] = []
    go = oracle.read(call_body(text))
    if go["ok"] and go.get("name") == "transfer":
        out += [("Go map", go["arguments"]), ("Go struct", go["arguments_bound"])]
    for who, read in (
        ("json.loads", json.loads),
        ("pydantic_core", pydantic_core.from_json),
        ("doubles", lambda t: json.loads(t, parse_int=float)),
    ):
        with contextlib.suppress(ValueError, RecursionError):
            out.append((who, read(text)))
    return out


MISSING = object()


def reference_allows(reading: Any, binds_struct: bool) -> bool:
    """``POLICY`` applied by hand to one reader's arguments, as its server would see them: keys
    exact, or, for a handler binding a Go struct, matched as Go folds them (for the policy's
    keys, as ``str.casefold`` does). A value of the wrong type denies, as in toolgate."""
    if not isinstance(reading, dict):
        return False

    def get(obj: Any, key: str) -> Any:
        if not isinstance(obj, dict):
            return MISSING
        if binds_struct:
            found = [v for k, v in obj.items() if k.casefold() == key]
            return found[-1] if found else MISSING
        return obj.get(key, MISSING)

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    amount, to, k, x, a = (get(reading, key) for key in ("amount", "to", "k", "x", "a"))
    s_k = get(get(reading, "s"), "k")
    denied = [
        amount is not MISSING and (not number(amount) or amount > 100),
        to is not MISSING and (not isinstance(to, str) or re.search("(?i)bob", to) is not None),
        k is not MISSING and (not isinstance(k, bool) or k is True),
        x is not MISSING and (not number(x) or x == TWO_53),
        a is not MISSING
        and (
            json_equal(a, [1])
            if isinstance(a, list)
            else json_equal(a, {"s": 1})
            if isinstance(a, dict)
            else True
        ),
        s_k is not MISSING and (not isinstance(s_k, str) or s_k != "ok"),
    ]
    return not any(denied)


def denied_readings(text: bytes, oracle: GoOracle) -> list[str]:
    """The readings of ``text`` the policy does not allow."""
    return [
        f"{who} reads {reading!r}, which the policy denies"
        for who, reading in readings(text, oracle)
        if not reference_allows(reading, binds_struct=who == "Go struct")
    ]


# --- JSON text ------------------------------------------------------------------------------


@st.composite
def argument_texts(draw: st.DrawFn, oracle: GoOracle) -> bytes:
    """Arguments as JSON text, with the mutations of the body tests: keys respelled by case or
    repeated, odd numbers, escapes, deep nesting, bad bytes, trailing data."""
    tree = draw(argument_objects)
    if rarely(draw, 3):
        items = draw(st.lists(argument_objects, min_size=1, max_size=2))
        tree.members.append((Key("items"), Arr(items)))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 2, 3]))):
        event(f"mutation: {mutate(draw, tree, orbits_for(oracle))}")
    text = serialize(tree, draw(st.sampled_from(WHITESPACE)))
    if rarely(draw, 15):
        text += draw(st.sampled_from(TRAILING))
    body = text.encode()
    if MARKER in text:
        body = body.replace(MARKER.encode(), draw(st.sampled_from(BAD_BYTES)))
    return body


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_argument_text_toolgate_allows_every_reader_allows(
    engine: _core.Engine, go_oracle: GoOracle, data: st.DataObject
) -> None:
    text = data.draw(argument_texts(go_oracle), label="arguments_json")
    answer = decide_wire(engine, text)
    verdict = pb.Verdict.Name(answer.verdict)
    event(f"toolgate: {verdict} {pb.Code.Name(answer.code)}")
    # Engine.decide reads JSON text the same way.
    try:
        assert verdict_of(engine, text) == verdict, answer.reason
    except ValueError as e:
        assert answer.code == pb.INVALID_REQUEST, f"{e} / {answer.reason}"
    if verdict != "ALLOW":
        return
    denied = denied_readings(text, go_oracle)
    assert not denied, f"{text!r} allowed, but:\n" + "\n".join(denied)


#: Argument texts every reader reads alike: each must be allowed.
CLEAN_TEXTS = [
    b"{}",
    b'{"amount": 5, "to": "alice"}',
    b'{"amount": 100.0, "x": 9007199254740991, "k": false}',
    b'{"\\u0061mount": 5, "s": {"k": "ok"}}',
    b'{"a": [2], "kind": "\xc5\xbf"}',
    b'{"items": [{"amount": 1}, {"amount": 2}]}',
]


@pytest.mark.parametrize("text", CLEAN_TEXTS)
def test_clean_argument_text_is_allowed(engine: _core.Engine, text: bytes) -> None:
    answer = decide_wire(engine, text)
    assert pb.Verdict.Name(answer.verdict) == "ALLOW", answer.reason


#: Argument texts readers take differently, with the reading that would pay out more.
TWO_WAYS = {
    "exact-duplicate": b'{"amount": 5, "amount": 5000}',
    "duplicate-denied-first": b'{"to": "bob", "to": "alice"}',
    "case-variant-after": b'{"amount": 5, "Amount": 5000}',
    "case-variant-before": b'{"AMOUNT": 5000, "amount": 5}',
    "kelvin-sign": b'{"k": false, "\\u212a": true}',
    "long-s": '{"s": {"k": "ok"}, "\u017f": {"k": "no"}}'.encode(),
    "nested": b'{"s": {"k": "ok", "K": "no"}}',
    "in-an-array": b'{"items": [{"id": 1, "ID": 2}]}',
    "beyond-2-53": b'{"x": 9007199254740993}',
    "beyond-2-53-negative": b'{"amount": -9007199254740993}',
    "beyond-2-53-unread": b'{"note": 18446744073709551616}',
    "float-beyond-2-53": b'{"amount": 1e20}',
}


@pytest.mark.parametrize("text", TWO_WAYS.values(), ids=TWO_WAYS.keys())
def test_argument_text_read_two_ways_is_refused(engine: _core.Engine, text: bytes) -> None:
    answer = decide_wire(engine, text)
    assert (pb.Verdict.Name(answer.verdict), pb.Code.Name(answer.code)) == (
        "DENY",
        "INVALID_REQUEST",
    ), answer.reason
    assert answer.reason.startswith("arguments could be read two ways: "), answer.reason
    with pytest.raises(ValueError, match="could be read two ways"):
        engine.decide("transfer", grant="g", arguments=text)


# --- Python dicts ---------------------------------------------------------------------------

#: Respellings of the policy's keys that Go's encoding/json binds to them.
RESPELLED = ["Amount", "AMOUNT", "amounT", "TO", "tO", "K", "\u212a", "X", "A", "S", "\u017f"]
#: Keys the SDK writes as strings, which may repeat a string key ("1", "true", "null").
NOT_STRINGS = [1, True, None, 0.5]

dict_keys = st.one_of(
    st.sampled_from(["amount", "to", "k", "x", "a", "s", "note"]),
    st.sampled_from(RESPELLED),
    texts,
    st.sampled_from(NOT_STRINGS),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.integers(-(2**200), 2**200),
    st.sampled_from([TWO_53 - 1, TWO_53, TWO_53 + 1, -TWO_53 - 1, 2**63, 2**64 + 1]),
    st.integers(0, 200),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from(["bob", "alice", "ok"]),
    # Not JSON, but the SDK writes them out: a dataclass as an object, a set as an array.
    st.builds(lambda v: Flag(k=v), st.booleans()),
    st.frozensets(st.integers(0, 3), max_size=2),
)
dict_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(dict_keys, inner, max_size=3)
    ),
    max_leaves=6,
)
argument_dicts = st.dictionaries(dict_keys, dict_values, max_size=5)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arguments=argument_dicts)
def test_argument_dict_toolgate_allows_every_reader_allows(
    engine: _core.Engine, go_oracle: GoOracle, arguments: dict[Any, Any]
) -> None:
    verdict = verdict_of(engine, arguments)
    event(f"toolgate: {verdict}")
    if verdict != "ALLOW":
        return
    try:
        text = pydantic_core.to_json(arguments)
    except pydantic_core.PydanticSerializationError:
        return  # the SDK cannot send it: the call never runs
    denied = denied_readings(text, go_oracle)
    assert not denied, f"{arguments!r} allowed, sent as {text!r}, but:\n" + "\n".join(denied)


#: Dicts whose JSON readers take differently where the policy looks.
TWO_WAY_DICTS = {
    "case-variant": {"amount": 5, "Amount": 5000},
    "case-variant-first": {"TO": "bob", "to": "alice"},
    "kelvin-sign": {"k": False, "\u212a": True},
    "nested": {"s": {"k": "ok", "K": "no"}},
    "key-not-a-string": {"x": 1, 1: 2},
    "beyond-2-53": {"x": TWO_53 + 1},
    "beyond-2-53-in-a-list": {"a": [TWO_53 + 1]},
    "twins-in-a-compared-object": {"a": {"s": 1, "S": 2}},
    "beyond-i128": {"amount": 10**40},
    "beyond-i128-negative": {"x": -(10**40)},
    "a-dataclass-on-the-path": {"s": Flag(k=True)},
    "a-set-compared": {"a": frozenset([1])},
}


@pytest.mark.parametrize("arguments", TWO_WAY_DICTS.values(), ids=TWO_WAY_DICTS.keys())
def test_argument_dict_read_two_ways_where_the_policy_looks_is_denied(
    engine: _core.Engine, arguments: dict[Any, Any]
) -> None:
    d = engine.decide("transfer", grant="g", arguments=arguments)
    assert (str(d.verdict), str(d.code)) == ("DENY", "CONDITION_FAILED"), d.reason
    assert "cannot be read one way" in d.reason or "could be read two ways" in d.reason, d.reason


def test_argument_dict_clean_is_allowed(engine: _core.Engine) -> None:
    for arguments in (
        {"amount": 5, "to": "alice", "x": TWO_53 - 1, "s": {"k": "ok"}},
        {"a": [2], "note": 2**64, "Note": 1},  # big or doubled where the policy does not look
    ):
        assert verdict_of(engine, arguments) == "ALLOW", arguments
