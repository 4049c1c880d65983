"""The OpenID AuthZEN Authorization API (``toolgate serve --authzen-listen``), against a real
sidecar over HTTP: the working group's Todo interop cases, an AuthZEN client from PyPI
(decern), the COAZ-MCP binding's mapping of MCP requests, limits reserved and given back,
batches and their semantics, authentication, and what is refused (docs/authzen.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import decern
import pytest
from authzen_client import authzen_address, send
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar import Sidecar, free_port

HERE = Path(__file__).resolve().parent
TODO_POLICY = HERE / "authzen" / "todo-policy.json"
#: The AuthZEN working group's Todo interop cases (openid/authzen, MIT, © Aserto), as the
#: final 1.0 API shapes them: 40 evaluations and 3 batches.
TODO_CASES = json.loads((HERE / "authzen" / "todo-decisions.json").read_text())

TOKEN = "pep-token-0123456789abcdef"

MCP_POLICY: dict[str, Any] = {
    "version": "1",
    "default": "deny",
    "hide": ["secret_*"],
    "tools": {
        "run_command": {
            "limits": [{"counter": "runs", "window": "minute", "max": 2, "scope": "grant"}],
            "deny_if": [{"path": "args.cmd", "op": "regex", "value": "rm -rf"}],
            "reason": "no recursive deletes",
        },
        "lookup": {"require": [{"path": "subject.attributes.team", "op": "eq", "value": "ops"}]},
        "terminate": {"action": "require_approval", "reason": "a person approves this"},
    },
    "resources": {"file:///public/*": {}},
}


def serving(policy: Path | dict[str, Any], *extra: str) -> Sidecar:
    return Sidecar(policy, "--authzen-listen", "127.0.0.1:0", *extra)


def evaluate(address: str, request: dict[str, Any], **headers: str) -> dict[str, Any]:
    status, _, body = send(address, "POST", "/access/v1/evaluation", request, headers)
    assert status == 200, body
    return body


def call(tool: str, subject: str = "alice", arguments: Any = None, **context: Any) -> dict:
    """A tools/call evaluation as the COAZ-MCP binding's default mapping makes it, with the
    request's params in its context."""
    params: dict[str, Any] = {"name": tool}
    if arguments is not None:
        params["arguments"] = arguments
    return {
        "subject": {"type": "identity", "id": subject, **context.pop("subject_extra", {})},
        "action": {"name": "tools/call"},
        "resource": {"type": "tool", "id": tool},
        "context": {"agent": "agent-app", "params": params, **context},
    }


def test_the_working_groups_todo_interop_cases_all_pass():
    with serving(TODO_POLICY) as sc:
        address = authzen_address(sc)
        for case in TODO_CASES["evaluation"]:
            got = evaluate(address, case["request"])["decision"]
            assert got is case["expected"], case
        for case in TODO_CASES["evaluations"]:
            status, _, body = send(address, "POST", "/access/v1/evaluations", case["request"])
            assert status == 200, body
            assert [{"decision": e["decision"]} for e in body["evaluations"]] == case["expected"]


def test_an_authzen_client_nobody_here_wrote_gets_the_policys_decisions(tmp_path: Path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"gateway {TOKEN}\n")
    with serving(MCP_POLICY, "--authzen-tokens", str(tokens)) as sc:
        client = decern.Client(f"http://{authzen_address(sc)}", token=TOKEN)
        subject = {"type": "identity", "id": "alice"}
        tool = {"type": "tool", "id": "run_command"}
        allowed = client.evaluate(
            subject, "tools/call", tool, {"params": {"arguments": {"cmd": "ls"}}}
        )
        assert allowed.allowed
        assert allowed.context["toolgate"]["code"] == "ALLOWED"
        refused = client.evaluate(
            subject, "tools/call", tool, {"params": {"arguments": {"cmd": "rm -rf /"}}}
        )
        assert not refused.allowed
        assert refused.context["toolgate"]["code"] == "CONDITION_FAILED"
        assert refused.context["reason_user"] == {"en": "no recursive deletes"}
        # Without the token the API answers 401, never a decision.
        with pytest.raises(decern.DecernError) as refused_call:
            decern.Client(f"http://{authzen_address(sc)}").evaluate(subject, "tools/call", tool)
        assert refused_call.value.status_code == 401


def test_mcp_requests_are_decided_as_the_policy_decides_them_and_counted_per_subject():
    with serving(MCP_POLICY) as sc:
        address = authzen_address(sc)
        for _ in range(2):
            assert evaluate(address, call("run_command", arguments={"cmd": "ls"}))["decision"]
        limited = evaluate(address, call("run_command", arguments={"cmd": "ls"}))
        assert limited["decision"] is False
        assert limited["context"]["toolgate"]["code"] == "RATE_LIMITED"
        assert limited["context"]["toolgate"]["retry_after_ms"] > 0
        # The limit is alice's (scope grant: the subject's id), not bob's.
        assert evaluate(address, call("run_command", "bob", {"cmd": "ls"}))["decision"]
        for tool, code in [("unknown", "DEFAULT_DENY"), ("secret_keys", "HIDDEN")]:
            denied = evaluate(address, call(tool))
            assert (denied["decision"], denied["context"]["toolgate"]["code"]) == (False, code)
        # Subject properties are its attributes.
        lookup = call("lookup", subject_extra={"properties": {"team": "ops"}})
        assert evaluate(address, lookup)["decision"]
        assert not evaluate(address, call("lookup"))["decision"]
        # Resources by their URI; the plumbing passes undecided; other methods by name.
        read = {
            "subject": {"type": "identity", "id": "alice"},
            "action": {"name": "resources/read"},
            "resource": {"type": "resource", "id": "file:///public/a.txt"},
        }
        assert evaluate(address, read)["decision"]
        read["resource"]["id"] = "file:///etc/passwd"
        assert not evaluate(address, read)["decision"]
        for method, kind in [("ping", "mcp_server"), ("notifications/initialized", "mcp_server")]:
            plumbing = {**read, "action": {"name": method}, "resource": {"type": kind, "id": "s"}}
            assert evaluate(address, plumbing) == {"decision": True}
        decided = sc.series("toolgate_decisions_total")
        assert any(dict(labels).get("api") == "authzen" for labels in decided)


def test_an_allowed_calls_limits_are_given_back_once_with_its_release_token():
    with serving(MCP_POLICY) as sc:
        address = authzen_address(sc)
        tokens = []
        for _ in range(2):
            allowed = evaluate(address, call("run_command", "carol", {"cmd": "ls"}))
            tokens.append(allowed["context"]["toolgate"]["release"])
        assert not evaluate(address, call("run_command", "carol", {"cmd": "ls"}))["decision"]

        def release(token: str, failure: str = "error") -> tuple[int, Any]:
            status, _, body = send(
                address, "POST", "/toolgate/v1/release", {"release": token, "failure": failure}
            )
            return status, body

        # The rule gives limits back for failed calls, not for a tool's error result.
        assert release(tokens[0], "tool_error") == (200, {"released": False})
        assert release(tokens[0]) == (200, {"released": True})
        assert release(tokens[0]) == (200, {"released": False})
        assert evaluate(address, call("run_command", "carol", {"cmd": "ls"}))["decision"]
        forged = tokens[1][:18] + "0" * 32
        status, body = release(forged)
        assert status == 400 and "not a release token" in body["error"]


def test_a_list_is_allowed_and_filtered_for_its_caller_as_the_proxies_filter_it():
    with serving(MCP_POLICY) as sc:
        address = authzen_address(sc)
        listing = {
            "subject": {"type": "identity", "id": "alice"},
            "action": {"name": "tools/list"},
            "resource": {"type": "mcp_server", "id": "https://mcp.example.com"},
        }
        answer = evaluate(address, listing)
        assert answer == {
            "decision": True,
            "context": {"toolgate": {"filter": "/toolgate/v1/filter"}},
        }
        tools = [
            {"name": name, "inputSchema": {"type": "object"}}
            for name in ["run_command", "secret_keys", "unknown", "terminate"]
        ]
        asked = {"subject": listing["subject"], "method": "tools/list", "result": {"tools": tools}}
        status, _, body = send(address, "POST", "/toolgate/v1/filter", asked)
        assert status == 200, body
        assert [t["name"] for t in body["result"]["tools"]] == ["run_command", "terminate"]
        # A result read two ways is refused, not filtered: it is not to be forwarded.
        twice = {**asked, "result": {"tools": tools, "Tools": []}}
        status, _, body = send(address, "POST", "/toolgate/v1/filter", twice)
        assert status == 400 and "differ only by case" in body["error"]
        nothing = {**asked, "result": {"prompts": []}}
        status, _, body = send(address, "POST", "/toolgate/v1/filter", nothing)
        assert status == 400 and "cannot be filtered" in body["error"]


def test_a_call_waiting_for_approval_is_a_requestable_denial(tmp_path: Path):
    with serving(MCP_POLICY, "--state-dir", str(tmp_path / "state")) as sc:
        answer = evaluate(authzen_address(sc), call("terminate", arguments={"id": "i-1"}))
        assert answer["decision"] is False
        context = answer["context"]
        assert context["toolgate"]["code"] == "APPROVAL_REQUIRED"
        assert context["access_request"]["approval_id"] == context["toolgate"]["approval_id"]


@pytest.mark.parametrize(
    ("semantic", "answered"),
    [
        ("execute_all", [True, False, True]),
        ("deny_on_first_deny", [True, False]),
        ("permit_on_first_permit", [True]),
    ],
)
def test_a_batch_runs_as_its_semantic_says(semantic: str, answered: list[bool]):
    batch = {
        "subject": {"type": "identity", "id": "dave"},
        "action": {"name": "tools/call"},
        "evaluations": [
            {
                "resource": {"type": "tool", "id": "lookup"},
                "subject": {"type": "x", "id": "y", "properties": {"team": "ops"}},
            },
            {"resource": {"type": "tool", "id": "unknown"}},
            {
                "resource": {"type": "tool", "id": "run_command"},
                "context": {"params": {"arguments": {"cmd": "ls"}}},
            },
        ],
        "options": {"evaluations_semantic": semantic},
    }
    with serving(MCP_POLICY) as sc:
        status, _, body = send(authzen_address(sc), "POST", "/access/v1/evaluations", batch)
    assert status == 200, body
    assert [e["decision"] for e in body["evaluations"]] == answered


def test_a_batch_entry_that_cannot_be_read_is_denied_and_the_others_decided():
    batch = {
        "subject": {"type": "identity", "id": "erin"},
        "action": {"name": "tools/call"},
        "evaluations": [
            {"resource": {"type": "prompt", "id": "run_command"}},
            {"resource": {"type": "tool", "id": "run_command"}, "surprise": 1},
            {
                "resource": {"type": "tool", "id": "lookup"},
                "subject": {"type": "identity", "id": "erin", "properties": {"team": "ops"}},
            },
        ],
    }
    with serving(MCP_POLICY) as sc:
        status, _, body = send(authzen_address(sc), "POST", "/access/v1/evaluations", batch)
    assert status == 200
    first, second, third = body["evaluations"]
    assert (
        first["decision"] is False
        and "resource.type is tool" in first["context"]["error"]["message"]
    )
    assert second["decision"] is False and "surprise" in second["context"]["error"]["message"]
    assert third == {**third, "decision": True}


def test_callers_must_present_a_token_and_refusals_are_never_decisions(tmp_path: Path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# gateways\ngateway {TOKEN}\n")
    with serving(MCP_POLICY, "--authzen-tokens", str(tokens)) as sc:
        address = authzen_address(sc)
        request = call("run_command", arguments={"cmd": "ls"})
        for headers in [
            {},
            {"authorization": "Bearer wrong-token-0123456789"},
            {"authorization": TOKEN},
            {"authorization": f"bearer {TOKEN}x"},
            {"authorization": f"Basic {TOKEN}"},
        ]:
            status, received, body = send(
                address, "POST", "/access/v1/evaluation", request, headers
            )
            assert status == 401, headers
            assert received["www-authenticate"].startswith("Bearer")
            assert "decision" not in body
        ok = {"authorization": f"Bearer {TOKEN}", "x-request-id": "req-1"}
        status, received, body = send(address, "POST", "/access/v1/evaluation", request, ok)
        assert (status, body["decision"], received["x-request-id"]) == (200, True, "req-1")
        # The PDP's metadata is public.
        status, _, body = send(address, "GET", "/.well-known/authzen-configuration")
        assert status == 200
        assert body["access_evaluation_endpoint"] == f"http://{address}/access/v1/evaluation"
        assert body["access_evaluations_endpoint"] == f"http://{address}/access/v1/evaluations"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--authzen-listen", "0.0.0.0:0"], "its callers must authenticate"),
        (
            ["--authzen-listen", "127.0.0.1:0", "--authzen-tokens", "/nonexistent"],
            "--authzen-tokens",
        ),
        (["--authzen-tokens", "/nonexistent"], "--authzen-tokens is for --authzen-listen"),
        (["--authzen-listen", "localhost:80"], "--authzen-listen"),
    ],
)
def test_a_listener_that_would_be_open_or_misconfigured_refuses_to_start(
    args: list[str], message: str
):
    with pytest.raises(AssertionError) as failed:
        Sidecar(MCP_POLICY, *args)
    assert message in str(failed.value)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "why"),
    [
        ("POST", "/access/v1/evaluation", b"{", {}, 400, "cannot be read"),
        ("POST", "/access/v1/evaluation", b"[]", {}, 400, "a JSON object"),
        (
            "POST",
            "/access/v1/evaluation",
            b'{"subject":{"type":"identity","id":"a","id":"b"},"action":{"name":"x"},'
            b'"resource":{"type":"t","id":"1"}}',
            {},
            400,
            "duplicate key",
        ),
        (
            "POST",
            "/access/v1/evaluation",
            b'{"subject":{"type":"identity","id":"a","ID":"b"},"action":{"name":"x"},'
            b'"resource":{"type":"t","id":"1"}}',
            {},
            400,
            "differ only by case",
        ),
        (
            "POST",
            "/access/v1/evaluation",
            {"action": {"name": "x"}},
            {},
            400,
            "subject is a required",
        ),
        (
            "POST",
            "/access/v1/evaluation",
            {**call("run_command"), "context": {"params": {"name": "lookup"}}},
            {},
            400,
            "name different targets",
        ),
        (
            "POST",
            "/access/v1/evaluation",
            "{}",
            {"content-type": "text/plain"},
            415,
            "application/json",
        ),
        ("GET", "/access/v1/evaluation", None, {}, 405, "use POST"),
        ("POST", "/access/v1/nothing", "{}", {}, 404, "no such endpoint"),
        ("POST", "/access/v1/evaluation", b" " * (1 << 20) + b"{}", {}, 413, "over 1 MiB"),
        ("POST", "/access/v1/evaluation", "{}", {"x-request-id": "a b"}, 400, "X-Request-ID"),
        ("POST", "/access/v1/evaluation", "{}", {"x-request-id": "a" * 257}, 400, "X-Request-ID"),
        (
            "POST",
            "/access/v1/evaluations",
            {"evaluations": [{}] * 257},
            {},
            400,
            "at most 256 evaluations",
        ),
        (
            "POST",
            "/access/v1/evaluations",
            {"options": {"evaluations_semantic": "first"}},
            {},
            400,
            "evaluations_semantic is",
        ),
    ],
)
def test_what_the_api_cannot_take_is_a_clear_400_never_a_decision(
    listening: str, method: str, path: str, body: Any, headers: dict, status: int, why: str
):
    got, _, answer = send(listening, method, path, body, headers)
    assert got == status, answer
    assert why in answer["error"]
    assert "decision" not in answer


@pytest.fixture(scope="module")
def listening():
    with serving(MCP_POLICY) as sc:
        yield authzen_address(sc)


TOOLS = ["run_command", "lookup", "terminate", "unknown", "secret_x", "Run_Command", "run_command "]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tool=st.sampled_from(TOOLS) | st.text(min_size=1, max_size=12),
    cmd=st.sampled_from(["ls", "rm -rf /", "echo rm -rf x"]) | st.text(max_size=8),
    team=st.sampled_from(["ops", "dev", "OPS"]),
    subject=st.text(min_size=1, max_size=10),
)
def test_an_evaluation_decides_as_the_native_api_decides_the_same_call(
    tool: str, cmd: str, team: str, subject: str
):
    """The class: whatever the tool, arguments and subject, AuthZEN's decision is the one
    toolgate.v1 gives the same call (a policy of the same rules without limits, so that
    both sides see the same counts)."""
    policy = json.loads(json.dumps(MCP_POLICY))
    policy["tools"]["run_command"].pop("limits")
    sc = _shared_sidecar(policy)
    request = call(tool, subject, {"cmd": cmd}, subject_extra={"properties": {"team": team}})
    status, _, answer = send(authzen_address(sc), "POST", "/access/v1/evaluation", request)
    native = sc.client.decide(
        tool,
        grant=f"identity:{subject}",
        agent="agent-app",
        attributes={"team": team},
        arguments={"cmd": cmd},
    )
    if status == 400:
        # Only what no MCP request could carry: a subject id or tool name AuthZEN refuses.
        assert not tool.strip() or not subject
        return
    assert answer["decision"] is (native.verdict == "ALLOW"), (answer, native)
    assert answer["context"]["toolgate"]["code"] == native.code


_SHARED: dict[str, Sidecar] = {}


def _shared_sidecar(policy: dict[str, Any]) -> Sidecar:
    key = json.dumps(policy, sort_keys=True)
    if key not in _SHARED:
        _SHARED.clear()
        _SHARED[key] = serving(policy)
    return _SHARED[key]


@pytest.fixture(scope="module", autouse=True)
def _stop_shared():
    yield
    for sc in _SHARED.values():
        sc.stop()
    _SHARED.clear()


def test_the_listener_binds_the_address_given_and_a_taken_one_fails_clearly():
    port = free_port()
    with Sidecar(MCP_POLICY, "--authzen-listen", f"127.0.0.1:{port}") as one:
        assert authzen_address(one) == f"127.0.0.1:{port}"
        with pytest.raises(AssertionError) as failed:
            Sidecar(MCP_POLICY, "--authzen-listen", f"127.0.0.1:{port}")
        assert "--authzen-listen" in str(failed.value)
