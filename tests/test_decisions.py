"""The Python binding's own decision tests: a policy given as a dict, arguments given as Python
values (dicts, tuples, ints beyond 64 bits, floats JSON cannot hold, objects that are not JSON)
and as JSON text, the exceptions the binding raises, its ``reload`` from a Policy, a dict or a
path, ``Decision`` and ``LimitState`` as Python objects, threads deciding at once, and the
manual clock.

What the engine decides for a policy and a call (verdict, code, rule, reason, limits,
retry-after, shadow, approval, reload) is specified in rust/core/tests/decisions.rs, run by
``cargo test -p toolgate-core``."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import toolgate
from conftest import START, cond, limit, make_engine, policy
from toolgate.sidecar.metrics import value

# --- matching precedence -----------------------------------------------------------------------


def test_glob_tie_keeps_document_order_in_a_dict():
    """A Python dict keeps insertion order, as json.loads keeps document order: a policy given
    as a dict must break glob ties the same way as the same policy given as text."""
    doc = {"version": "1", "tools": {"a?y": {}, "a*y": {}}}
    d = make_engine(doc).decide("aby")
    assert d.rule == "/tools/a?y"


def test_dict_and_text_of_one_document_have_one_revision():
    doc = {"version": "1", "tools": {"b": {}, "a": {}}}
    assert (
        toolgate.Policy.from_dict(doc).revision
        == toolgate.Policy.from_str(json.dumps(doc)).revision
    )


# --- conditions: arguments as Python values ----------------------------------------------------


def require_policy(condition: dict[str, Any]) -> dict[str, Any]:
    return policy({"t": {"require": [condition]}})


@pytest.mark.parametrize(
    ("operand", "value"),
    [
        (1, 1.0),
        (1.0, 1),
        (0.5, 0.5),
        (10, 10.000001),
        (5, "5"),
        ("5", 5),
        (1, True),
        (True, 1),
        (None, None),
        (None, 0),
        ([1, 2], [1.0, 2]),
        ({"a": 1}, {"a": 1.0}),
        ({"a": 1}, [1]),
        (2**53 - 1, 2**53 - 1),
        (2**53 - 1, 2**53 - 2),
    ],
)
def test_a_dict_and_its_json_text_compare_alike(operand, value):
    """The binding reads a dict in place and JSON text through the core's reader: numbers,
    booleans, null, arrays and objects compare alike either way (what they compare to is
    rust/core/tests/decisions.rs, eq_compares_numbers_by_value_and_never_coerces)."""
    engine = make_engine(require_policy(cond("args.v", "eq", operand)))
    in_place = engine.decide("t", arguments={"v": value})
    as_text = engine.decide("t", arguments=json.dumps({"v": value}))
    assert (in_place.code, in_place.reason) == (as_text.code, as_text.reason)
    assert in_place.code in ("ALLOWED", "CONDITION_FAILED")


@pytest.mark.parametrize(
    ("op", "operand", "value"),
    [
        ("eq", 2**53, lambda n: n),
        ("neq", 2**53, lambda n: n),
        ("lt", 2**53, lambda n: n),
        ("gte", 2**53, lambda n: n),
        ("in", [1, 2**53], lambda n: n),
        ("contains", 1, lambda n: [1, n]),
        ("eq", [2**53], lambda n: [n]),
        ("neq", {"a": 1}, lambda n: {"a": n}),
    ],
    ids=["eq", "neq", "lt", "gte", "in", "contains", "eq-array", "neq-object"],
)
def test_a_python_integer_beyond_64_bits_is_never_compared(op, operand, value):
    """A Python int holds any integer: one beyond 64 bits, alone or inside a list or dict,
    cannot be evaluated, as integers beyond 2^53 cannot (rust/core/tests/decisions.rs), and as
    JSON text it is refused with a ValueError."""
    value = value(2**64)
    engine = make_engine(require_policy(cond("args.v", op, operand)))
    d = engine.decide("t", arguments={"v": value})
    assert d.code == "CONDITION_FAILED"
    assert "could be read two ways" in d.reason
    with pytest.raises(ValueError, match="beyond 2\\^53"):
        engine.decide("t", arguments=json.dumps({"v": value}))


# --- paths -------------------------------------------------------------------------------------


def test_a_tuple_is_read_as_an_array():
    engine = make_engine(require_policy(cond("args.items[0]", "eq", 7)))
    assert engine.decide("t", arguments={"items": (7, 8)}).code == "ALLOWED"
    assert engine.decide("t", arguments={"items": (8, 7)}).code == "CONDITION_FAILED"


def test_argument_keys_stay_right_across_many_keys_and_policies():
    """The binding remembers argument keys as Python strings per thread (32 of them, by the
    address of the policy's key text). More keys than that, and new policies whose texts
    may reuse freed addresses, must still look up exactly the key the policy names."""
    n = 40

    def doc(shift: int) -> dict[str, Any]:
        return policy(
            {f"t{i}": {"require": [cond(f"args.k{(i + shift) % n}", "eq", i)]} for i in range(n)}
        )

    engine = make_engine(doc(0))
    for shift in (0, 1, 7):
        if shift:
            engine.reload(doc(shift))
        for _ in range(2):
            for i in range(n):
                key = f"k{(i + shift) % n}"
                assert engine.decide(f"t{i}", arguments={key: i}).code == "ALLOWED", (shift, i)
                other = f"k{(i + shift + 1) % n}"
                assert engine.decide(f"t{i}", arguments={other: i}).code == "CONDITION_FAILED"
                assert engine.decide(f"t{i}", arguments={key: i + 1}).code == "CONDITION_FAILED"


# --- limits ------------------------------------------------------------------------------------


def test_limit_state_to_dict_matches_its_attributes():
    engine = make_engine(policy({"t": {"limits": [limit("per_min", 3)]}}))
    (state,) = engine.decide("t", grant="g").limits
    assert (state.counter, state.rule, state.scope, state.max, state.remaining) == (
        "per_min",
        "/tools/t/limits/0",
        "grant",
        3.0,
        2.0,
    )
    assert state.to_dict() == {
        "counter": "per_min",
        "rule": "/tools/t/limits/0",
        "scope": "grant",
        "max": 3.0,
        "window_ms": 60_000,
        "remaining": 2.0,
        "reset_in_ms": state.reset_in_ms,
    }
    assert 60_000 <= state.reset_in_ms <= 65_000


# --- spend limits ------------------------------------------------------------------------------

SPEND = policy(
    {"pay": {"limits": [limit("spend", 500, window="day", scope="agent", cost="args.amount")]}}
)


def test_a_cost_the_servers_could_read_otherwise_spends_nothing():
    """A cost path into a value that is not JSON (the SDK writes a dataclass out as an
    object), beside a case variant, or beyond 2^53 denies without counting."""
    import dataclasses

    @dataclasses.dataclass
    class Order:
        amount: int

    doc = policy(
        {"pay": {"limits": [limit("s", 500, window="day", scope="agent", cost="args.o.amount")]}}
    )
    engine = make_engine(doc)
    for arguments, why in (
        ({"o": Order(amount=900)}, "runs into a value that is not JSON"),
        ({"o": {"amount": 1, "Amount": 900}}, "cannot be read one way"),
        ({"o": {"amount": 2**64 + 1}}, "too large"),
    ):
        d = engine.decide("pay", agent="a", arguments=arguments)
        assert (d.verdict, d.code) == ("DENY", "INVALID_REQUEST"), arguments
        assert why in d.reason, d.reason
    d = engine.decide("pay", agent="a", arguments={"o": {"amount": 500}})
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 0.0)


@pytest.mark.parametrize(
    "arguments",
    [{"amount": float("nan")}, {"amount": float("inf")}],
    ids=["nan", "infinite"],
)
def test_bad_cost_is_an_invalid_request_and_consumes_nothing(arguments):
    """Floats JSON cannot hold (the rest of the bad costs: rust/core/tests/decisions.rs)."""
    engine = make_engine(SPEND)
    d = engine.decide("pay", agent="a", arguments=arguments)
    assert (d.verdict, d.code, d.rule) == ("DENY", "INVALID_REQUEST", "/tools/pay/limits/0/cost")
    assert d.reservation is None
    assert "args.amount" in d.reason
    check = engine.decide("pay", agent="a", arguments={"amount": 500})
    assert (check.code, check.limits[0].remaining) == ("ALLOWED", 0.0)


# --- reload ------------------------------------------------------------------------------------


def test_reload_of_an_invalid_policy_keeps_the_old_one():
    engine = make_engine(policy({"t": {"limits": [limit("c", 3)]}}))
    engine.decide("t", grant="g")
    revision = engine.revision
    bad = policy({"t": {"limits": [limit("c", 3, window="fortnight")]}}, default="allow")
    with pytest.raises(toolgate.PolicyError) as info:
        engine.reload(bad)
    assert [e.pointer for e in info.value.errors] == ["/tools/t/limits/0/window"]
    assert engine.revision == revision
    assert engine.policy.revision == revision
    d = engine.decide("t", grant="g")
    assert (d.code, d.limits[0].remaining, d.revision) == ("ALLOWED", 1.0, revision)
    assert engine.decide("unknown").code == "DEFAULT_DENY"


def test_reload_from_a_policy_object_and_a_path(tmp_path):
    engine = make_engine(policy({}))
    p = toolgate.Policy.from_dict(policy({"a": {}}))
    assert engine.reload(p) == p.revision
    assert engine.decide("a").code == "ALLOWED"
    path = tmp_path / "p.yaml"
    path.write_text('version: "1"\ndefault: allow\n')
    engine.reload(path)
    assert engine.decide("zzz").code == "ALLOWED"
    engine.reload(str(path))
    assert engine.revision == toolgate.Policy.from_file(path).revision


def test_reload_of_a_missing_file_keeps_the_old_policy(tmp_path):
    engine = make_engine(policy({"a": {}}))
    revision = engine.revision
    with pytest.raises(toolgate.PolicyError):
        engine.reload(tmp_path / "missing.json")
    assert engine.revision == revision
    assert engine.decide("a").code == "ALLOWED"


# --- servers -----------------------------------------------------------------------------------


def test_server_list_of_a_policy():
    servers = policy(
        {"shared": {}},
        servers={
            "github": {"default": "allow", "tools": {"github.delete_*": {"action": "deny"}}},
            "sandbox": {"mode": "shadow"},
            "locked": {"default": "deny", "hide": ["shared"]},
        },
    )
    assert toolgate.Policy.from_dict(servers).servers == ["github", "sandbox", "locked"]


# --- malformed requests and arguments ----------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    ['{"amount": 300, "currency": "USD"}', b'{"amount": 300, "currency": "USD"}'],
    ids=["str", "bytes"],
)
def test_arguments_as_json_text(arguments):
    doc = policy(
        {
            "pay": {
                "require": [cond("args.currency", "eq", "USD")],
                "limits": [limit("spend", 500, scope="agent", cost="args.amount")],
            }
        }
    )
    engine = make_engine(doc)
    d = engine.decide("pay", agent="a", arguments=arguments)
    assert (d.code, d.limits[0].remaining) == ("ALLOWED", 200.0)
    d = engine.decide("pay", agent="a", arguments=arguments)
    assert d.code == "RATE_LIMITED"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("not json", ValueError),
        (b"{", ValueError),
        ("[1, 2]", ValueError),
        ('"text"', ValueError),
        ("null", ValueError),
        (5, TypeError),
        ([("a", 1)], TypeError),
        (object(), TypeError),
    ],
)
def test_arguments_that_are_not_a_json_object_raise(arguments, error):
    engine = make_engine(policy({"t": {}}))
    with pytest.raises(error):
        engine.decide("t", arguments=arguments)


def test_attributes_must_map_strings_to_strings():
    engine = make_engine(policy({"t": {}}))
    with pytest.raises(TypeError):
        engine.decide("t", attributes={"team": 5})
    with pytest.raises(TypeError):
        engine.decide("t", attributes={1: "x"})


def test_decision_to_dict_matches_its_attributes():
    engine = make_engine(policy({"t": {"limits": [limit("c", 3)]}}))
    d = engine.decide("t", grant="g")
    assert d.to_dict() == {
        "verdict": "ALLOW",
        "code": "ALLOWED",
        "reason": d.reason,
        "rule": "/tools/t",
        "retry_after_ms": None,
        "limits": [d.limits[0].to_dict()],
        "revision": engine.revision,
        "shadow": False,
        "reservation": d.reservation,
        "approval_id": None,
        "marks": None,
    }
    assert json.loads(json.dumps(d.to_dict())) == d.to_dict()


# --- concurrency -------------------------------------------------------------------------------


def test_threads_on_one_key_get_exactly_max():
    engine = make_engine(policy({"t": {"limits": [limit("c", 100)]}}))
    barrier = threading.Barrier(8)
    allowed = [0] * 8

    def hammer(i: int) -> None:
        barrier.wait()
        for _ in range(50):
            if engine.decide("t", grant="shared").allowed:
                allowed[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100
    assert value(engine.metrics(), "toolgate_decisions", code="RATE_LIMITED") == 300


def test_manual_clock():
    clock = toolgate.ManualClock(START)
    assert clock.now == START
    clock.advance(1.5)
    assert clock.now == START + 1.5
    with pytest.raises(ValueError):
        clock.advance(-1)
