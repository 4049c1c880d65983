"""Differential tests of toolgate's body reader: every JSON-RPC body toolgate forwards must be
read the same way (method, tool name, arguments) by the servers behind it.

Three readers besides toolgate's own (``toolgate._core.read_mcp_request``):

- Go: tests/go_oracle, decoding as mark3labs/mcp-go does with encoding/json (keys match struct
  fields under Unicode simple case folding, the last of several wins), and flagging any object
  with two keys encoding/json would take for one field;
- the official Python SDK's Streamable HTTP transport for handshake sessions
  (``pydantic_core.from_json``, ``jsonrpc_message_adapter``, then the server runner's
  validation of the request against the negotiated version and the handler's params type);
- the same SDK's transport for 2026-07-28 per-request sessions, which reads the body with the
  standard library's ``json.loads`` instead.

A body toolgate refuses needs nothing: refusing is always safe. The regression cases are
bodies that must be refused, each with what Go makes of it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic_core
import pytest
from go_oracle import GoOracle, build_go_oracle, run_go_oracle_tests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp.types import (
    CallToolRequestParams,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from mcp.types.methods import SPEC_CLIENT_METHODS, validate_client_request
from mcp.types.version import LATEST_HANDSHAKE_VERSION
from pydantic import ValidationError
from toolgate import _core

# --- the readers --------------------------------------------------------------------------------


def toolgate_read(body: bytes) -> dict[str, Any]:
    # Looked up at call time: without it each test fails on its own, the module still loads.
    return _core.read_mcp_request(body)


def _first_line(e: Exception) -> str:
    if isinstance(e, ValidationError):
        # The first failure in full (where and why): the summary line only counts them.
        first = e.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"]))
        return f"{e.title}: {where}: {first['msg']} ({e.error_count()} errors)"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


#: The version an SDK session negotiates with a current client (the initialize handshake).
SDK_VERSION = LATEST_HANDSHAKE_VERSION


def sdk_read(body: bytes) -> dict[str, Any]:
    """How the SDK's handshake-era Streamable HTTP server reads ``body``
    (``StreamableHTTPServerTransport._handle_post_request``, then ``ServerRunner._on_request``).

    ``ok``: the transport took the message; then ``kind`` (``request``, ``notification``,
    ``response``), ``id``, ``method``. For a request ``params_ok`` says whether the runner's
    second validation passed (``params_error`` if not) and for tools/call gives ``name`` and
    ``arguments`` as the handler receives them."""
    try:
        raw = pydantic_core.from_json(body)
    except ValueError as e:
        return {"ok": False, "error": f"parse error: {_first_line(e)}"}
    try:
        message = jsonrpc_message_adapter.validate_python(raw, by_name=False)
    except ValidationError as e:
        return {"ok": False, "error": f"invalid message: {_first_line(e)}"}
    if isinstance(message, JSONRPCResponse | JSONRPCError):
        return {"ok": True, "kind": "response", "id": message.id, "method": None}
    if isinstance(message, JSONRPCNotification):
        return {"ok": True, "kind": "notification", "id": None, "method": message.method}
    out: dict[str, Any] = {
        "ok": True,
        "kind": "request",
        "id": message.id,
        "method": message.method,
        "params_ok": True,
    }
    params = message.params
    try:
        # The runner checks spec methods against the negotiated version's schema, then
        # validates params with the handler's type (absent params as {}).
        if message.method in SPEC_CLIENT_METHODS:
            validate_client_request(message.method, SDK_VERSION, params)
        if message.method == "tools/call":
            typed = CallToolRequestParams.model_validate(
                {} if params is None else params, by_name=False
            )
            out["name"], out["arguments"] = typed.name, typed.arguments
    except KeyError:
        out["params_ok"], out["params_error"] = False, f"method not found at {SDK_VERSION}"
    except ValidationError as e:
        out["params_ok"], out["params_error"] = False, _first_line(e)
    return out


def sdk_modern_read(body: bytes) -> dict[str, Any]:
    """How the SDK's 2026-07-28 Streamable HTTP entry reads ``body``
    (mcp/server/_streamable_http_modern.py): ``json.loads``, an object without ``id`` taken as a
    notification, anything else validated as a request (so posted responses are refused), then
    the same params type for tools/call. Its per-request ``_meta`` and header checks are left
    out: they refuse on other grounds than how the body reads."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as e:
        return {"ok": False, "error": f"parse error: {_first_line(e)}"}
    try:
        if isinstance(decoded, dict) and "id" not in decoded:
            note = JSONRPCNotification.model_validate(decoded)
            return {"ok": True, "kind": "notification", "id": None, "method": note.method}
        request = JSONRPCRequest.model_validate(decoded)
    except ValidationError as e:
        return {"ok": False, "error": f"invalid message: {_first_line(e)}"}
    out: dict[str, Any] = {
        "ok": True,
        "kind": "request",
        "id": request.id,
        "method": request.method,
        "params_ok": True,
    }
    if request.method == "tools/call":
        params = request.params
        try:
            typed = CallToolRequestParams.model_validate(
                {} if params is None else params, by_name=False
            )
            out["name"], out["arguments"] = typed.name, typed.arguments
        except ValidationError as e:
            out["params_ok"], out["params_error"] = False, _first_line(e)
    return out


def json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values, numbers by value (5 == 5.0; 2**53 + 1 != 2.0**53)."""
    if isinstance(a, bool) or isinstance(b, bool):
        # Before numbers: True == 1 in Python.
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@dataclass
class Readings:
    body: bytes
    toolgate: dict[str, Any]
    go: dict[str, Any]
    sdk: dict[str, Any]
    sdk_modern: dict[str, Any]

    @classmethod
    def of(cls, body: bytes, oracle: GoOracle) -> Readings:
        return cls(
            body, toolgate_read(body), oracle.read(body), sdk_read(body), sdk_modern_read(body)
        )

    def describe(self) -> str:
        return "\n".join(
            [
                f"body:       {self.body!r}",
                f"toolgate:   {self.toolgate!r}",
                f"Go:         {self.go!r}",
                f"SDK:        {self.sdk!r}",
                f"SDK (2026): {self.sdk_modern!r}",
            ]
        )

    def disagreements(self) -> list[str]:
        """Why this body must not be forwarded; empty if toolgate refuses it or all agree."""
        tg = self.toolgate
        kind = tg["kind"]
        if kind == "refused":
            return []
        out: list[str] = []
        go = self.go
        if not go["ok"]:
            out.append(f"Go cannot decode it: {go['error']}")
        elif go["ambiguous"]:
            out.append(f"Go binds two keys to one field: {go['ambiguous_where']}")
        sdks = [("SDK", self.sdk)]
        if kind != "response":
            # The 2026-07-28 entry refuses posted responses by design.
            sdks.append(("SDK (2026)", self.sdk_modern))
        for who, r in sdks:
            if not r["ok"]:
                out.append(f"{who} refuses it: {r['error']}")
        readers = [(who, r) for who, r in [("Go", go), *sdks] if r["ok"]]
        if kind == "call":
            for who, r in readers:
                if r.get("kind") != "request" or r.get("method") != "tools/call":
                    out.append(f"{who} reads no tools/call: {r.get('kind')} {r.get('method')!r}")
                elif who != "Go" and not r["params_ok"]:
                    out.append(f"{who} refuses the params: {r['params_error']}")
                elif r.get("name") != tg["name"]:
                    out.append(f"{who} reads tool {r.get('name')!r}, toolgate {tg['name']!r}")
                elif not json_equal(r.get("arguments"), tg["arguments"]):
                    out.append(f"{who} reads other arguments: {r.get('arguments')!r}")
        elif kind in ("other", "named", "listen"):
            # A request decided by what it names (a resource, a prompt, a method) or passed as
            # plumbing: every reader routes it to the same method.
            expected = "notification" if tg["id"] is None else "request"
            for who, r in readers:
                if r.get("method") != tg["method"]:
                    out.append(f"{who} reads method {r.get('method')!r}, toolgate {tg['method']!r}")
                if r.get("kind") != expected:
                    out.append(f"{who} reads a {r.get('kind')}, toolgate id {tg['id']!r}")
        elif kind == "response":
            if go["ok"] and go["method"] != "":
                # Older mcp-go routes on the method without looking at the result.
                out.append(f"Go reads method {go['method']!r} in a response")
            if self.sdk["ok"] and self.sdk["kind"] != "response":
                out.append(f"SDK reads a {self.sdk['kind']} {self.sdk.get('method')!r}")
        else:
            out.append(f"toolgate answered an unknown kind {kind!r}")
        return out


# --- bodies, serialized by hand -----------------------------------------------------------------
# A small tree of JSON text: keys keep their spelling (escapes), objects may repeat keys, and
# literals are written as they will appear (numbers in any spelling, even invalid ones).


@dataclass
class Key:
    #: The key as a decoder sees it once unescaped.
    text: str
    #: Its literal, quotes included, when spelled other than plainly.
    raw: str | None = None

    def literal(self) -> str:
        return self.raw if self.raw is not None else json.dumps(self.text, ensure_ascii=False)


@dataclass
class Lit:
    text: str


@dataclass
class Arr:
    items: list[Node] = field(default_factory=list)


@dataclass
class Obj:
    members: list[tuple[Key, Node]] = field(default_factory=list)

    def get(self, name: str) -> Node | None:
        for key, value in self.members:
            if key.text == name:
                return value
        return None


Node = Lit | Arr | Obj


def serialize(node: Node, ws: str) -> str:
    if isinstance(node, Lit):
        return node.text
    if isinstance(node, Arr):
        inner = f"{ws},{ws}".join(serialize(item, ws) for item in node.items)
        return f"[{ws}{inner}{ws}]"
    members = f"{ws},{ws}".join(
        f"{key.literal()}{ws}:{ws}{serialize(value, ws)}" for key, value in node.members
    )
    return f"{{{ws}{members}{ws}}}"


def objects(node: Node) -> list[Obj]:
    """Every object in the tree, outermost first."""
    found: list[Obj] = []
    if isinstance(node, Obj):
        found.append(node)
        for _, value in node.members:
            found += objects(value)
    elif isinstance(node, Arr):
        for item in node.items:
            found += objects(item)
    return found


def plain(text: str) -> Key:
    return Key(text)


def obj(*members: tuple[str, Node]) -> Obj:
    return Obj([(Key(k), v) for k, v in members])


def lit(value: Any) -> Lit:
    return Lit(json.dumps(value, ensure_ascii=False))


def spell(text: str, escape: list[bool], upper_hex: bool) -> str:
    """``text`` as a JSON string literal, the characters flagged in ``escape`` as ``\\uXXXX``
    (astral ones as a surrogate pair)."""
    out = ['"']
    for ch, esc in zip(text, escape, strict=True):
        cp = ord(ch)
        if esc or ch in '"\\' or cp < 0x20:
            units = (
                [cp] if cp <= 0xFFFF else [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + (cp & 0x3FF)]
            )
            for unit in units:
                out.append(f"\\u{unit:04X}" if upper_hex else f"\\u{unit:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


#: Characters that look like a fold partner but are not one for encoding/json (Go's simple
#: folding leaves U+0130 and U+0131 alone; ß has no simple fold to "ss").
NEAR_MISSES: dict[str, tuple[str, ...]] = {
    "i": ("\u0131", "\u0130"),
    "I": ("\u0131", "\u0130"),
    "s": ("\u00df",),
}


class Orbits:
    """Each folding character's orbit: every character encoding/json matches it with."""

    def __init__(self, folds: list[tuple[int, int]]) -> None:
        groups: dict[int, list[int]] = {}
        for rune, fold in folds:
            groups.setdefault(fold, [fold]).append(rune)
        self.of = {chr(r): tuple(map(chr, members)) for members in groups.values() for r in members}

    def __repr__(self) -> str:
        # Strategies show their arguments when a test fails; 2,900 characters would drown it.
        return f"Orbits(<{len(self.of)} characters>)"


def variants(text: str, orbits: Orbits) -> list[str]:
    """Spellings of ``text`` that differ from it by case: whole-key ASCII and Unicode case
    changes, and one character swapped for a fold partner or near miss."""
    found = {text.upper(), text.lower(), text.swapcase(), text.capitalize()}
    for i, ch in enumerate(text):
        for alt in orbits.of.get(ch, ()) + NEAR_MISSES.get(ch, ()):
            found.add(text[:i] + alt + text[i + 1 :])
    found.discard(text)
    return sorted(found)


#: The envelope and params keys a Go server binds (the ones a folded spelling could smuggle).
KNOWN_KEYS = ["jsonrpc", "id", "method", "params", "result", "error", "name", "arguments", "_meta"]

#: Numbers every reader takes alike, in several spellings.
COMMON_SPELLINGS = [
    "0", "-0", "0.0", "-0.0", "1", "1.0", "1.00", "1e0", "1E0", "1e+0", "1e2", "1E2", "1e+2",
    "1e-2", "100e-2", "5", "5.0", "5e0", "50e-1", "0.1", "0.30000000000000004441", "-1.5",
    "9007199254740991", "0.1e1", "1e-7", "4.9e-324", "2.2250738585072011e-308",
]  # fmt: skip
#: Numbers some readers round or refuse, and some that are not JSON numbers at all.
ODD_SPELLINGS = [
    "9007199254740992", "9007199254740993", "-9007199254740993", "9007199254740993.0",
    "18446744073709551616", "123456789012345678901234567890", "1" + "0" * 400, "1e308",
    "1.7976931348623157e308", "1.7976931348623159e308", "1e400", "-1e400", "1e-400",
    "01", "+1", ".5", "1.", "1e", "-", "NaN", "Infinity", "-Infinity", "0x10",
]  # fmt: skip


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True once in ``one_in`` draws: for the odd cases that most readers refuse, so that enough
    bodies stay well-formed for toolgate to forward."""
    # The top value, not 0: Hypothesis shrinks toward 0, so toward the common case.
    return draw(st.integers(0, one_in - 1)) == one_in - 1


@st.composite
def long_mantissas(draw: st.DrawFn) -> str:
    # Many digits: every reader must round them to the same double.
    whole = draw(st.integers(0, 10**15))
    fraction = draw(st.integers(0, 10**24))
    exponent = draw(st.integers(-30, 30))
    return f"{whole}.{fraction:024d}e{exponent}"


#: Plain numbers every reader takes alike (below 2**53, finite).
common_numbers = st.one_of(
    st.integers(-(2**53) + 1, 2**53 - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15).map(repr),
    st.sampled_from(COMMON_SPELLINGS),
).map(Lit)

#: Numbers in every spelling, huge and invalid ones included.
numbers = st.one_of(
    st.sampled_from(COMMON_SPELLINGS + ODD_SPELLINGS),
    st.integers(-(2**64), 2**64).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    long_mantissas(),
).map(Lit)

#: Characters for generated keys and strings: ASCII letters with interesting folds, their
#: Unicode partners (long s, the Kelvin and Angstrom signs, Greek sigmas and mu), near misses,
#: JSON's special characters and an astral one.
ALPHABET = (
    "askmiAKSMI_-/~ "
    "\u017f\u212a\u212b\u00e5\u00c5\u03c3\u03c2\u03a3\u00b5\u03bc\u0131\u0130\u00df\u00e9"
    '"\\\n\U0001f600'
)

texts = st.text(alphabet=ALPHABET, max_size=5)
keys = st.one_of(
    st.sampled_from(["amount", "kind", "path", "to", "s", "k", "a", "x", "name", "params", "id"]),
    texts,
)


@st.composite
def strings(draw: st.DrawFn) -> Lit:
    return Lit(json.dumps(draw(texts), ensure_ascii=draw(st.booleans())))


def _members(inner: st.SearchStrategy[Node], max_size: int) -> st.SearchStrategy[Obj]:
    # Keys distinct even under case folding (near enough to Go's): duplicates come from the
    # mutations, where they are counted.
    return st.lists(
        st.tuples(keys.map(plain), inner),
        max_size=max_size,
        unique_by=lambda member: member[0].text.casefold(),
    ).map(Obj)


scalars = st.one_of(common_numbers, strings(), st.sampled_from(["true", "false", "null"]).map(Lit))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(Arr), _members(inner, 3)),
    max_leaves=5,
)
arguments = _members(values, 4)

ID_SPELLINGS = [
    '"abc"', '""', '"\\u0031"', "1.0", "1e2", "-0", "null", "true", "[]", "{}",
    "9007199254740993", "1e400",
]  # fmt: skip
JSONRPC_SPELLINGS = ['"2"', '"2.00"', "2.0", "null", '"\\u0032.0"', '"2.0 "']
TOOLS = ["read_file", "transfer", "drop_database", "create-ami", "tr\u00e2nsfer", "", "TRANSFER"]
OTHER_METHODS = ["tools/list", "ping", "initialize", "resources/read", "prompts/get", "x/custom"]
METHOD_VARIANTS = ["TOOLS/CALL", "tools/Call", "tools/call ", "tools\\/call", "tools/ca\\u006cl"]

#: Whitespace between tokens: JSON's four, and characters some decoders take for whitespace.
WHITESPACE = ["", " ", "\n", "\t", "\r\n", "  \n\t"]
NOT_WHITESPACE = ["\x0b", "\x0c", "\u00a0", "\u2028", "\x00"]
TRAILING = ["\n", " ", "x", "{}", ",", "]", "\x00", "\ufeff", '{"jsonrpc":"2.0"}']

#: A private-use character standing for bytes that are not UTF-8 (replaced after encoding).
MARKER = "\ue000"
BAD_BYTES = [b"\xff", b"\x80", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
LONE_SURROGATES = ["\\ud800", "\\udc00", "\\ude00\\ud83d", "\\ud83dx", "\\uD800\\u0041"]


@st.composite
def ids(draw: st.DrawFn) -> Lit:
    if rarely(draw, 6):
        return Lit(draw(st.sampled_from(ID_SPELLINGS)))
    if draw(st.booleans()):
        return lit(draw(st.integers(-(2**53) + 1, 2**53 - 1)))
    return lit(draw(texts))


@st.composite
def envelopes(draw: st.DrawFn) -> Obj:
    """A well-formed message: mostly tools/call requests, some other requests, notifications and
    responses."""
    version = Lit(draw(st.sampled_from(JSONRPC_SPELLINGS))) if rarely(draw, 10) else lit("2.0")
    jsonrpc, id_ = (Key("jsonrpc"), version), (Key("id"), draw(ids()))
    shape = draw(st.sampled_from(["call"] * 6 + ["other", "notification", "response"]))
    if shape == "call":
        call_args = draw(arguments)
        if rarely(draw, 3):
            # Objects inside an array, for duplicates there.
            items = Arr(draw(st.lists(arguments, min_size=1, max_size=2)))
            call_args.members.append((Key("items"), items))
        params = obj(("name", lit(draw(st.sampled_from(TOOLS)))), ("arguments", call_args))
        if rarely(draw, 4):
            params.members.append((Key("_meta"), obj(("progressToken", draw(ids())))))
        return Obj([jsonrpc, id_, (Key("method"), lit("tools/call")), (Key("params"), params)])
    if shape == "other":
        members = [jsonrpc, id_, (Key("method"), lit(draw(st.sampled_from(OTHER_METHODS))))]
        if draw(st.booleans()):
            members.append((Key("params"), draw(arguments)))
        return Obj(members)
    if shape == "notification":
        return Obj([jsonrpc, (Key("method"), lit("notifications/initialized"))])
    result = (Key("result"), obj(("content", Arr())))
    error = (Key("error"), obj(("code", lit(-32000)), ("message", lit("no"))))
    return Obj([jsonrpc, id_, draw(st.sampled_from([result, error]))])


def _pick_object(draw: st.DrawFn, tree: Obj) -> Obj:
    # Outermost first, so shrinking lands on the envelope.
    return draw(st.sampled_from(objects(tree)))


def _pick_member(draw: st.DrawFn, tree: Obj) -> tuple[Obj, int] | None:
    target = _pick_object(draw, tree)
    if not target.members:
        return None
    return target, draw(st.integers(0, len(target.members) - 1))


def mutate(draw: st.DrawFn, tree: Obj, orbits: Orbits) -> str:
    """Apply one mutation that matters to a reader somewhere in ``tree``; its name."""
    what = draw(
        st.sampled_from(
            [
                "case_key", "case_key", "dup_exact", "dup_folded", "dup_folded", "escape_key",
                "known_key", "retype", "number", "drop", "extra", "surrogate", "bad_bytes",
                "method", "nest",
            ]
        )
    )  # fmt: skip
    picked = _pick_member(draw, tree)
    if what in ("case_key", "dup_folded", "known_key") and picked is not None:
        target, i = picked
        key, value = target.members[i]
        text = draw(st.sampled_from(KNOWN_KEYS)) if what == "known_key" else key.text
        spellings = variants(text, orbits)
        if not spellings:
            return "none"
        new = Key(draw(st.sampled_from(spellings)))
        if what == "case_key":
            target.members[i] = (new, value)
        else:
            at = draw(st.integers(0, len(target.members)))
            target.members.insert(at, (new, draw(values)))
        return what
    if what == "dup_exact" and picked is not None:
        target, i = picked
        key = target.members[i][0]
        copy = Key(key.text, key.raw)
        # The duplicate's value: another one, or the same text again.
        value = draw(st.one_of(values, st.just(target.members[i][1])))
        target.members.insert(draw(st.integers(0, len(target.members))), (copy, value))
        return what
    if what == "escape_key" and picked is not None:
        target, i = picked
        key, value = target.members[i]
        escape = draw(st.lists(st.booleans(), min_size=len(key.text), max_size=len(key.text)))
        target.members[i] = (Key(key.text, spell(key.text, escape, draw(st.booleans()))), value)
        return what
    if what == "retype":
        name = draw(st.sampled_from(["params", "arguments", "name", "_meta", "method", "id"]))
        new_value = draw(
            st.one_of(scalars, st.just(Lit("null")), st.just(Arr()), st.just(Obj()), arguments)
        )
        for target in objects(tree):
            for i, (key, _) in enumerate(target.members):
                if key.text == name:
                    target.members[i] = (key, new_value)
                    return what
        return "none"
    if what == "number":
        target = _pick_object(draw, tree)
        target.members.append((Key(draw(keys)), draw(numbers)))
        return what
    if what == "drop" and picked is not None:
        target, i = picked
        del target.members[i]
        return what
    if what == "extra":
        member = draw(
            st.sampled_from(
                [
                    (Key("result"), obj(("content", Arr()))),
                    (Key("result"), Lit("null")),
                    (Key("error"), obj(("code", lit(-1)), ("message", lit("x")))),
                    (Key("params"), Lit("null")),
                    (Key("id"), Lit("null")),
                    (Key("method"), lit("tools/list")),
                ]
            )
        )
        tree.members.insert(draw(st.integers(0, len(tree.members))), member)
        return what
    if what in ("surrogate", "bad_bytes") and picked is not None:
        target, i = picked
        key, value = target.members[i]
        odd = draw(st.sampled_from(LONE_SURROGATES)) if what == "surrogate" else MARKER
        spot = draw(st.sampled_from(["key", "value"]))
        if spot == "key":
            target.members[i] = (Key(key.text + "?", key.literal()[:-1] + odd + '"'), value)
        else:
            target.members[i] = (key, Lit('"v' + odd + '"'))
        return what
    if what == "method":
        for i, (key, _) in enumerate(tree.members):
            if key.text == "method":
                tree.members[i] = (key, Lit(json.dumps(draw(st.sampled_from(METHOD_VARIANTS)))))
                return what
        return "none"
    if what == "nest":
        depth = draw(st.sampled_from([10, 126, 127, 128, 129, 200]))
        nested: Node = lit(1)
        for _ in range(depth):
            nested = Arr([nested]) if draw(st.booleans()) else obj(("n", nested))
        _pick_object(draw, tree).members.append((Key("deep"), nested))
        return what
    return "none"


@st.composite
def bodies(draw: st.DrawFn, orbits: Orbits) -> bytes:
    tree = draw(envelopes())
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 1, 2, 2, 3]))):
        event(f"mutation: {mutate(draw, tree, orbits)}")
    ws = draw(st.sampled_from(NOT_WHITESPACE if rarely(draw, 15) else WHITESPACE))
    text = serialize(tree, ws)
    if rarely(draw, 15):
        text = draw(st.sampled_from([f"[{text}]", f"[{text},{text}]", "[]"]))
    if rarely(draw, 20):
        text = "\ufeff" + text
    if rarely(draw, 10):
        text += draw(st.sampled_from(TRAILING))
    if rarely(draw, 40):
        # Python's json.loads detects UTF-16 and UTF-32 from the first bytes.
        return text.encode(draw(st.sampled_from(["utf-16-le", "utf-16", "utf-32"])))
    body = text.encode("utf-8")
    if MARKER in text:
        body = body.replace(MARKER.encode(), draw(st.sampled_from(BAD_BYTES)))
    return body


@functools.cache
def orbits_for(oracle: GoOracle) -> Orbits:
    return Orbits(oracle.folds())


def test_the_go_oracle_agrees_with_encoding_json() -> None:
    """The oracle's own tests: every pair of its fold table binds in encoding/json, and its
    struct-binding view matches real struct decoding."""
    run_go_oracle_tests()


# --- the property -------------------------------------------------------------------------------


class Misread(AssertionError):
    """A body toolgate forwards that another reader refuses or reads otherwise."""


class MisreadCall(Misread):
    pass


class MisreadOther(Misread):
    pass


class MisreadResponse(Misread):
    pass


MISREAD: dict[str, type[Misread]] = {
    "call": MisreadCall,
    "other": MisreadOther,
    "response": MisreadResponse,
}


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_forwarded_body_reads_the_same_everywhere(
    go_oracle: GoOracle, data: st.DataObject
) -> None:
    body = data.draw(bodies(orbits_for(go_oracle)), label="body")
    readings = Readings.of(body, go_oracle)
    kind = readings.toolgate["kind"]
    event(f"toolgate: {kind}")
    problems = readings.disagreements()
    if problems:
        # One exception type per kind: Hypothesis reports each kind of failure on its own, so
        # a misread notification cannot hide a misread tool call.
        raise MISREAD.get(kind, Misread)("\n".join([*problems, readings.describe()]))


#: Bodies every reader reads alike, which toolgate must forward (the property above would hold
#: for a gate that refuses everything).
CLEAN = {
    "plain": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    b'"params":{"name":"transfer","arguments":{"amount":5,"to":"bob"}}}',
    "string-id-no-arguments": b'{"jsonrpc":"2.0","id":"a","method":"tools/call",'
    b'"params":{"name":"read_file"}}',
    "escaped-keys": b'{"jsonrpc":"2.0","id":1,"\\u006dethod":"tools/call",'
    b'"\\u0070arams":{"n\\u0061me":"transfer","arguments":{"\\u0061mount":5}}}',
    "whitespace": b' \r\n\t{ "jsonrpc" : "2.0" ,\n"id":1,"method":"tools/call","params":'
    b'{"name":"transfer","arguments":{}} }\n',
    "numbers": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer",'
    b'"arguments":{"a":1.0,"b":1e2,"c":-0,"d":0.1,"e":9007199254740991,"f":[1,2.5e-3]}}}',
    "surrogate-pair": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
    b'{"name":"read_file","arguments":{"path":"\\ud83d\\ude00","\\ud83d\\ude00":true}}}',
    "unicode-keys": '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
    '{"name":"read_file","arguments":{"\u017f":1,"\u212a":2,"\u00e5":{"\u03c3":[{"k":3}]}}}}'.encode(),
    "other-method": b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}',
    "notification": b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
}


@pytest.mark.parametrize("body", CLEAN.values(), ids=CLEAN.keys())
def test_clean_bodies_are_forwarded_and_read_alike(go_oracle: GoOracle, body: bytes) -> None:
    readings = Readings.of(body, go_oracle)
    assert readings.toolgate["kind"] != "refused", readings.describe()
    problems = readings.disagreements()
    assert not problems, "\n".join([*problems, readings.describe()])


# --- regression cases: bodies toolgate must refuse, and what Go makes of them -----------------


def call(params: str, extra: str = "", method: str = '"method":"tools/call"') -> bytes:
    """A tools/call envelope around raw ``params`` text (and raw ``extra`` members)."""
    return f'{{"jsonrpc":"2.0","id":1,{method},"params":{params}{extra}}}'.encode()


def args(arguments: str, tool: str = "transfer") -> bytes:
    return call(f'{{"name":"{tool}","arguments":{arguments}}}')


@dataclass
class Case:
    body: bytes
    #: What the Go oracle must read (a subset of its answer).
    go: dict[str, Any]


REFUSE: dict[str, Case] = {
    "params-long-s-hides-a-second-params": Case(
        call(
            '{"name":"read_file","arguments":{"path":"/tmp/x"}}',
            ',"param\u017f":{"name":"drop_database","arguments":{"name":"prod"}}',
        ),
        {"ambiguous": True, "name": "drop_database", "arguments": {"name": "prod"}},
    ),
    "params-long-s-escaped": Case(
        call(
            '{"name":"read_file","arguments":{}}',
            ',"param\\u017F":{"name":"drop_database","arguments":{}}',
        ),
        {"ambiguous": True, "name": "drop_database"},
    ),
    "params-long-s-alone": Case(
        call('{"name":"read_file"}').replace(b'"params"', '"param\u017f"'.encode()),
        {"ambiguous": False, "name": "read_file"},
    ),
    "amount-and-Amount": Case(
        args('{"amount":5,"Amount":5000}'),
        # The map keeps both; a handler binding a struct gets 5000.
        {
            "ambiguous": True,
            "arguments": {"amount": 5, "Amount": 5000},
            "arguments_bound": {"amount": 5000},
        },
    ),
    "kelvin-sign-kind": Case(
        args('{"kind":"a","\u212aind":"b"}'),
        {
            "ambiguous": True,
            "arguments": {"kind": "a", "\u212aind": "b"},
            "arguments_bound": {"kind": "b"},
        },
    ),
    "kelvin-sign-escaped": Case(
        args('{"kind":"a","\\u212Aind":"b"}'), {"ambiguous": True, "arguments_bound": {"kind": "b"}}
    ),
    "long-s-in-arguments": Case(
        args('{"skip":false,"\u017fkip":true}'),
        {"ambiguous": True, "arguments_bound": {"skip": True}},
    ),
    "angstrom-sign": Case(args('{"\u00e5":1,"\u212b":2}'), {"ambiguous": True}),
    "greek-sigmas": Case(
        args('{"\u03c3":1,"\u03c2":2,"\u03a3":3}'),
        {"ambiguous": True, "arguments_bound": {"\u03c3": 3}},
    ),
    "exact-duplicate-in-arguments": Case(args('{"amount":5,"amount":5000}'), {"ambiguous": True}),
    "nested-object-x-X": Case(
        args('{"a":{"x":1,"X":2}}'), {"ambiguous": True, "arguments_bound": {"a": {"x": 2}}}
    ),
    "nested-deeper": Case(args('{"a":{"b":{"c":[{"d":{"url":1,"URL":2}}]}}}'), {"ambiguous": True}),
    "duplicate-in-array-element": Case(
        args('{"items":[{"id":1},{"id":2,"ID":3}]}'),
        {"ambiguous": True, "arguments_bound": {"items": [{"id": 1}, {"id": 3}]}},
    ),
    "exact-duplicate-in-array-element": Case(
        args('{"items":[{"a":1,"a":2}]}'), {"ambiguous": True}
    ),
    "METHOD-overrides-method": Case(
        call(
            '{"name":"drop_database","arguments":{}}',
            method='"method":"tools/list","METHOD":"tools/call"',
        ),
        {"ambiguous": True, "method": "tools/call", "name": "drop_database"},
    ),
    "METHOD-alone": Case(
        call('{"name":"drop_database","arguments":{}}', method='"METHOD":"tools/call"'),
        {"ambiguous": False, "method": "tools/call", "name": "drop_database"},
    ),
    "ID-and-id": Case(call('{"name":"read_file"}', ',"ID":2'), {"ambiguous": True, "id": 2}),
    "jsonrpc-long-s": Case(
        call('{"name":"read_file"}').replace(b'"jsonrpc"', '"j\u017fonrpc"'.encode()),
        {"ambiguous": False, "jsonrpc": "2.0", "name": "read_file"},
    ),
    "exact-duplicate-params": Case(
        call('{"name":"read_file","arguments":{}}', ',"params":{"name":"drop_database"}'),
        {"ambiguous": True, "name": "drop_database"},
    ),
    "name-and-Name": Case(
        call('{"name":"read_file","Name":"drop_database","arguments":{}}'),
        {"ambiguous": True, "name": "drop_database"},
    ),
    "NAME-alone": Case(
        call('{"NAME":"drop_database","arguments":{}}'),
        {"ambiguous": False, "name": "drop_database"},
    ),
    "arguments-long-s": Case(
        call('{"name":"transfer","arguments":{"amount":5},"argument\u017f":{"amount":5000}}'),
        {"ambiguous": True, "arguments": {"amount": 5000}},
    ),
    "meta-and-META": Case(
        call('{"name":"read_file","_meta":{"progressToken":1},"_META":{"progressToken":2}}'),
        {"ambiguous": True},
    ),
    "duplicate-in-meta": Case(
        call('{"name":"read_file","_meta":{"progressToken":1,"progresstoken":2}}'),
        {"ambiguous": True},
    ),
    "method-folds-to-tools-call": Case(
        call('{"name":"drop_database"}', method='"method":"TOOLS/CALL"'),
        {"method": "TOOLS/CALL"},
    ),
    "result-in-a-request": Case(
        call('{"name":"drop_database"}', ',"result":{"content":[]}'),
        {"kind": "response", "method": "tools/call"},
    ),
    "number-beyond-2-53": Case(
        args('{"amount":9007199254740993}'), {"arguments": {"amount": 9007199254740992}}
    ),
    "batch": Case(b"[" + args('{"amount":5}') + b"]", {"ok": False}),
    "bom": Case(b"\xef\xbb\xbf" + args('{"amount":5}'), {"ok": False}),
    "trailing-data": Case(args('{"amount":5}') + b'{"x":1}', {"ok": False}),
    "lone-surrogate": Case(args('{"to":"\\ud800"}'), {"arguments": {"to": "\ufffd"}}),
    "invalid-utf8": Case(
        args('{"to":"X"}').replace(b'"X"', b'"\xff"'), {"arguments": {"to": "\ufffd"}}
    ),
}


@pytest.mark.parametrize("case", REFUSE.values(), ids=REFUSE.keys())
def test_refused(go_oracle: GoOracle, case: Case) -> None:
    readings = Readings.of(case.body, go_oracle)
    go = readings.go
    assert {k: go.get(k) for k in case.go} == case.go, readings.describe()
    assert readings.toolgate["kind"] == "refused", readings.describe()


def test_every_go_fold_pair_is_refused(go_oracle: GoOracle) -> None:
    """Two keys in one arguments object that encoding/json matches as one field: each pair of
    the oracle's fold table, and every two characters of one fold orbit, alone and inside a
    longer key."""
    folds = go_oracle.folds()
    # A sanity check of the table itself: long s, the Kelvin and Angstrom signs, ASCII.
    assert {(0x17F, ord("S")), (0x212A, ord("K")), (0x212B, 0xC5), (ord("a"), ord("A"))} <= set(
        folds
    )
    pairs = set(folds)
    for orbit in set(Orbits(folds).of.values()):
        pairs.update((ord(a), ord(b)) for a in orbit for b in orbit if a < b)
    failures: list[str] = []
    for n, (r, f) in enumerate(sorted(pairs)):
        first, second = chr(r), chr(f)
        if n % 2:
            first, second = second, first
        # The lone characters raw, the longer keys as \u escapes.
        for a, b, escaped in ((first, second, False), (f"x{first}y", f"x{second}y", True)):
            ka, kb = json.dumps(a, ensure_ascii=escaped), json.dumps(b, ensure_ascii=escaped)
            body = args(f"{{{ka}:1,{kb}:2}}")
            go = go_oracle.read(body)
            assert go["ambiguous"], f"the oracle misses {a!r} / {b!r}: {go}"
            tg = toolgate_read(body)
            if tg["kind"] != "refused":
                failures.append(f"U+{r:04X} / U+{f:04X} {a!r} {b!r}: {tg}")
    assert not failures, f"{len(failures)} of {2 * len(pairs)} forwarded:\n" + "\n".join(
        failures[:40]
    )


def _same_reading(go: dict[str, Any], sdk: dict[str, Any]) -> bool:
    """Whether Go and the SDK act alike on a body: both refuse it, or both read the same
    message (a tools/call with the same name and arguments)."""
    if not go["ok"] or not sdk["ok"]:
        return go["ok"] == sdk["ok"]
    if (go["kind"], go["method"]) != (sdk["kind"], sdk["method"]):
        return False
    if go["method"] != "tools/call" or go["kind"] != "request":
        return True
    if not sdk["params_ok"]:
        return False
    return go["name"] == sdk["name"] and json_equal(go["arguments"], sdk["arguments"])


def _evidence() -> None:
    """Print how Go, the SDK and toolgate read each regression body."""
    import tempfile

    def brief(r: dict[str, Any]) -> str:
        if not r["ok"]:
            return f"refused ({r['error'][:70]})"
        if r.get("kind") == "request" and r.get("method") == "tools/call":
            if r.get("params_ok") is False:
                return f"tools/call, params refused ({r['params_error'][:60]})"
            return f"tools/call {r.get('name')!r} {json.dumps(r.get('arguments'))}"
        return f"{r.get('kind')} {r.get('method')!r}"

    with tempfile.TemporaryDirectory() as tmp, GoOracle(build_go_oracle(Path(tmp))) as oracle:
        for name, case in REFUSE.items():
            r = Readings.of(case.body, oracle)
            go = brief(r.go)
            if "arguments_bound" in r.go and r.go["arguments_bound"] != r.go["arguments"]:
                go += f", bound to a struct {json.dumps(r.go['arguments_bound'])}"
            if r.go["ambiguous"]:
                go += f"; ambiguous: {r.go['ambiguous_where']}"
            bound = r.go.get("arguments_bound")
            differs = not _same_reading(r.go, r.sdk) or (
                bound is not None and not json_equal(bound, r.sdk.get("arguments"))
            )
            print(f"{name}{'  <-- Go and the SDK differ' if differs else ''}")
            print(f"  body:     {case.body!r}")
            print(f"  Go:       {go}")
            print(f"  SDK:      {brief(r.sdk)}")
            print(f"  SDK 2026: {brief(r.sdk_modern)}")
            print(f"  toolgate: {r.toolgate}")


if __name__ == "__main__":
    _evidence()
