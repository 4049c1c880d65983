"""agentgateway's ExtMCP, spoken to a real ``toolgate serve`` as agentgateway's client speaks
it (tests/ext_mcp.py): calls decided from the same engine as Envoy's (the same policy,
counters, approvals, decision log and metrics, under ``api="extmcp"``), params read strictly,
tool lists filtered for their caller (one server or several, multiplexed), and a tool error
giving its spend back only with the reservation the request hook signed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import cond, limit, policy
from ext_mcp import Code, ExtMcp, decision, outcome, pb
from grpc_health.v1 import health_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar import Sidecar, free_port, toolgate_cli, wait_for
from test_approvals import TOKENS
from toolgate.sidecar.decision_log import log_files, verify

SERVING = health_pb2.HealthCheckResponse.SERVING
SPEND = limit("spend", 100, "day", "grant", cost="args.amount")

POLICY = policy(
    {
        "echo": {},
        "run_command": {
            "deny_if": [cond("args.command", "regex", r"(^|\s)rm\s")],
            "reason": "Destructive shell commands are not allowed.",
        },
        "search": {"limits": [limit("search_rate", 2, "minute", "grant")]},
        "pay": {"release_on_failure": "tool_error", "limits": [SPEND]},
        "pay_kept": {"limits": [limit("kept", 100, "day", "grant", cost="args.amount")]},
        "terminate": {"action": "require_approval", "approval": {"timeout": "10m"}},
        "ops_only": {"require": [cond("subject.agent", "eq", "ops-bot")]},
    },
    hide=["secret_*"],
    servers={"billing": {"version": "1", "default": "deny", "tools": {"invoice": {}}}},
)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Any:
    state = tmp_path_factory.mktemp("state")
    (state / "tokens").write_text("".join(f"{n} {t}\n" for n, t in TOKENS.items()))
    (state / "alice.token").write_text(TOKENS["alice"])
    admin = free_port()
    with Sidecar(
        POLICY,
        "--state-dir",
        str(state / "dir"),
        "--admin-listen",
        f"127.0.0.1:{admin}",
        "--admin-tokens",
        str(state / "tokens"),
        "--decision-log",
        str(state / "decisions.jsonl"),
    ) as s:
        s.admin = admin
        s.alice = state / "alice.token"
        s.decisions = state / "decisions.jsonl"
        yield s


@pytest.fixture
def gw(sidecar: Any) -> Any:
    with ExtMcp(sidecar.target) as client:
        yield client


# --- tools/call, the request hook ------------------------------------------------------------


def test_an_allowed_call_passes_and_is_counted_as_extmcp(sidecar: Any, gw: ExtMcp) -> None:
    labels = {"api": "extmcp", "verdict": "ALLOW", "code": "ALLOWED"}
    before = sidecar.metric("toolgate_decisions_total", **labels) or 0
    answer = gw.call("echo", {"text": "hi"}, headers=bearer("t-allowed"))
    assert outcome(answer) == "pass"
    assert not answer.HasField("header_mutation")
    assert sidecar.metric("toolgate_decisions_total", **labels) == before + 1


def test_a_denied_call_tells_the_model_why_and_a_program_the_code(gw: ExtMcp) -> None:
    answer = gw.call("run_command", {"command": "rm -rf /"}, headers=bearer("t-deny"))
    assert outcome(answer) == "error"
    assert answer.error.code == Code.PERMISSION_DENIED
    assert answer.error.reason == "Destructive shell commands are not allowed."
    d = decision(answer)
    assert (d["verdict"], d["code"], d["rule"]) == (
        "DENY",
        "CONDITION_FAILED",
        "/tools/run_command/deny_if/0",
    )
    assert "revision" in d
    assert (
        outcome(gw.call("run_command", {"command": "ls -la"}, headers=bearer("t-deny"))) == "pass"
    )


def told_decision(answer: Any) -> dict[str, Any] | None:
    """The decision in the result's ``metadata``, as agentgateway's CEL reads it
    (``mcpGuardrails.toolgate_decision``)."""
    if not answer.HasField("metadata") or "toolgate_decision" not in answer.metadata.fields:
        return None
    return dict(answer.metadata.fields["toolgate_decision"].struct_value)


def test_the_gateway_is_told_every_decision_in_the_results_metadata(gw: ExtMcp) -> None:
    allowed = gw.call("echo", {"text": "hi"}, headers=bearer("t-told"))
    denied = gw.call("run_command", {"command": "rm -rf /"}, headers=bearer("t-told"))
    hidden = gw.call("secret_keys", {}, headers=bearer("t-told"))
    assert told_decision(allowed) == {
        "verdict": "ALLOW",
        "code": "ALLOWED",
        "rule": "/tools/echo",
        "revision": decision(denied)["revision"],
    }
    told = told_decision(denied)
    assert told is not None
    assert {k: told[k] for k in ("verdict", "code", "rule", "revision")} == {
        k: decision(denied)[k] for k in ("verdict", "code", "rule", "revision")
    }
    # The gateway's own, not the client's: the refusal the client gets still tells nothing.
    assert told_decision(hidden) == {
        **told,
        "code": "HIDDEN",
        "rule": told_decision(hidden)["rule"],
    }
    assert not hidden.error.HasField("mcp_error")
    # Plumbing is not decided: nothing to tell.
    assert told_decision(gw.request("ping", None, headers=bearer("t-told"))) is None
    # A call whose reservation may be given back carries both.
    paid = gw.call("pay", {"amount": 1}, headers=bearer("t-told"))
    assert told_decision(paid)["code"] == "ALLOWED"
    assert paid.metadata.fields["toolgate_release"].string_value


def test_a_tool_the_policy_does_not_name_is_denied_by_default(gw: ExtMcp) -> None:
    answer = gw.call("drop_tables", {}, headers=bearer("t-default"))
    assert answer.error.code == Code.PERMISSION_DENIED
    assert decision(answer)["code"] == "DEFAULT_DENY"


def test_a_hidden_tool_is_answered_as_an_unknown_one(gw: ExtMcp) -> None:
    answer = gw.call("secret_keys", {}, headers=bearer("t-hidden"))
    assert answer.error.code == Code.INVALID
    assert answer.error.reason == "Unknown tool: secret_keys"
    assert not answer.error.HasField("mcp_error"), "nothing tells it apart from a missing tool"


def test_a_limit_is_resource_exhausted_with_its_retry_after(gw: ExtMcp) -> None:
    for _ in range(2):
        assert outcome(gw.call("search", {"q": "x"}, headers=bearer("t-limit"))) == "pass"
    answer = gw.call("search", {"q": "x"}, headers=bearer("t-limit"))
    assert answer.error.code == Code.RESOURCE_EXHAUSTED
    d = decision(answer)
    # Sliding: the oldest call leaves the window within a window and a sub-bucket (65 s).
    assert d["code"] == "RATE_LIMITED" and 0 < d["retry_after_ms"] <= 65_000
    # Counted per grant: another caller has its own room.
    assert outcome(gw.call("search", {"q": "x"}, headers=bearer("t-limit-2"))) == "pass"


def test_one_limit_is_counted_whichever_proxy_asks(sidecar: Any, gw: ExtMcp) -> None:
    """Envoy's path (here toolgate.v1, the same engine) and ExtMCP share one counter."""
    assert outcome(gw.call("search", {"q": "x"}, headers=bearer("t-shared"))) == "pass"
    assert sidecar.client.decide("search", grant="t-shared").verdict == "ALLOW"
    answer = gw.call("search", {"q": "x"}, headers=bearer("t-shared"))
    assert decision(answer)["code"] == "RATE_LIMITED"


def test_an_approval_is_asked_then_the_approved_call_runs_once(sidecar: Any, gw: ExtMcp) -> None:
    args = {"ids": ["i-ext-mcp"]}
    first = gw.call("terminate", args, headers=bearer("t-approval"))
    assert first.error.code == Code.PERMISSION_DENIED
    d = decision(first)
    assert d["code"] == "APPROVAL_REQUIRED" and d["approval_id"].startswith("apr_")
    assert d["approval_id"] in first.error.reason
    done = toolgate_cli(
        "approvals",
        "--target",
        f"127.0.0.1:{sidecar.admin}",
        "--token-file",
        sidecar.alice,
        "approve",
        d["approval_id"],
    )
    assert done.returncode == 0 and "APPROVED" in done.stdout, done.stderr
    assert outcome(gw.call("terminate", args, headers=bearer("t-approval"))) == "pass"
    again = gw.call("terminate", args, headers=bearer("t-approval"))
    assert decision(again)["code"] == "APPROVAL_REQUIRED"
    assert decision(again)["approval_id"] != d["approval_id"], "used once, then asked anew"


def test_a_call_names_exactly_one_server_and_each_server_has_its_policy(gw: ExtMcp) -> None:
    assert outcome(gw.call("invoice", {}, servers=["billing"], headers=bearer("t-s"))) == "pass"
    assert decision(gw.call("invoice", {}, headers=bearer("t-s")))["code"] == "DEFAULT_DENY"
    for servers in ([], ["billing", "srv"]):
        answer = gw.call("echo", {}, servers=servers, headers=bearer("t-s"))
        assert answer.error.code == Code.INVALID
        assert decision(answer)["code"] == "INVALID_REQUEST"


def test_the_plumbing_passes_and_every_other_method_is_decided(gw: ExtMcp) -> None:
    for method, params in [
        ("tools/list", None),
        ("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}}),
        ("server/discover", {}),
        ("ping", None),
        ("notifications/initialized", None),
    ]:
        assert outcome(gw.request(method, params)) == "pass", method
    # The policy names no resource, prompt or method: under default deny, each is denied.
    for method, params in [
        ("prompts/get", {"name": "secret_prompt"}),
        ("resources/read", {"uri": "file:///x"}),
        ("completion/complete", {"ref": {"type": "ref/prompt", "name": "p"}}),
        ("tasks/get", {"taskId": "t"}),
        ("x-vendor/exec", {}),
    ]:
        answer = gw.request(method, params, headers=bearer("t-methods"))
        assert answer.error.code == Code.PERMISSION_DENIED, method
        assert decision(answer)["code"] == "DEFAULT_DENY", method
    # Another spelling of a resource's URI is refused, not decided.
    answer = gw.request("resources/read", {"uri": "file:///a/../x"}, headers=bearer("t-methods"))
    assert answer.error.code == Code.INVALID
    assert decision(answer)["code"] == "INVALID_REQUEST"


def test_resources_prompts_and_their_lists_follow_their_rules(tmp_path: Path) -> None:
    document = policy(
        {},
        hide={"prompts": ["secret_*"]},
        resources={"file:///public/*": {}, "file:///etc/*": {"action": "deny"}},
        prompts={"*": {}},
    )
    with Sidecar(document) as sidecar, ExtMcp(sidecar.target) as gw:
        read = gw.request("resources/read", {"uri": "file:///public/a"})
        assert outcome(read) == "pass"
        denied = gw.request("resources/read", {"uri": "file:///etc/hosts"})
        assert decision(denied)["code"] == "RULE_DENY"
        hidden = gw.request("prompts/get", {"name": "secret_x"})
        assert (hidden.error.code, hidden.error.reason) == (
            Code.INVALID,
            "Unknown prompt: secret_x",
        )
        listen = gw.request(
            "subscriptions/listen",
            {"notifications": {"resourceSubscriptions": ["file:///public/a", "file:///etc/a"]}},
        )
        assert decision(listen)["code"] == "RULE_DENY"
        lists = {
            "resources/list": {
                "resources": [
                    {"uri": "file:///public/a", "name": "a"},
                    {"uri": "file:///etc/hosts", "name": "h"},
                ]
            },
            "resources/templates/list": {
                "resourceTemplates": [{"uriTemplate": "file:///etc/{n}", "name": "e"}]
            },
            "prompts/list": {"prompts": [{"name": "secret_x"}, {"name": "review"}]},
        }
        shown = {}
        for method, result in lists.items():
            answer = gw.response(method, result)
            assert outcome(answer) == "mutated", method
            shown[method] = json.loads(answer.mutated)
        assert shown["resources/list"]["resources"] == [{"uri": "file:///public/a", "name": "a"}]
        assert shown["resources/templates/list"]["resourceTemplates"] == []
        assert shown["prompts/list"]["prompts"] == [{"name": "review"}]
        # A list answer that lists something else is refused.
        wrong = gw.response("prompts/list", {"tools": []})
        assert outcome(wrong) == "error"
        # A read's answer that may be cached for everyone is made the caller's own.
        contents = [{"uri": "file:///public/a", "text": "a"}]
        public = gw.response("resources/read", {"contents": contents, "cacheScope": "public"})
        assert outcome(public) == "mutated"
        assert json.loads(public.mutated) == {"contents": contents, "cacheScope": "private"}
        mine = gw.response("resources/read", {"contents": contents, "cacheScope": "private"})
        assert outcome(mine) == "pass"
        twin = gw.response("resources/read", {"contents": contents, "CacheScope": "public"})
        assert outcome(twin) == "error"
        # What agentgateway sends on before asking is decided on its answer, by its method.
        for method in ("completion/complete", "resources/subscribe", "tasks/get"):
            answered = gw.response(method, {"completion": {"values": ["x"]}})
            assert outcome(answered) == "error", method
            assert answered.error.code == Code.PERMISSION_DENIED, method
    allowing = policy({}, methods={"completion/complete": {}})
    with Sidecar(allowing) as sidecar, ExtMcp(sidecar.target) as gw:
        answered = gw.response("completion/complete", {"completion": {"values": ["x"]}})
        assert outcome(answered) == "pass"
        assert outcome(gw.response("tasks/get", {"taskId": "t"})) == "error"


def test_a_task_is_reached_only_by_the_caller_whose_call_created_it() -> None:
    """Behind agentgateway the task methods reach their server first: each is decided on its
    answer, by the task the answer is of; a created task is noted as its caller's as the
    call's answer passes."""
    document = policy({"research": {}}, methods={"tasks/*": {}})
    alice, mallory = (
        {"authorization": "Bearer alice"},
        {"authorization": "Bearer mallory"},
    )
    related = "io.modelcontextprotocol/related-task"
    with Sidecar(document) as sidecar, ExtMcp(sidecar.target) as gw:
        created = {"task": {"taskId": "t-a", "status": "working"}}
        assert outcome(gw.response("tools/call", created, metadata=alice)) == "pass"
        answers = {
            "tasks/get": {"taskId": "t-a", "status": "working"},
            "tasks/cancel": {"taskId": "t-a", "status": "cancelled"},
            "tasks/result": {"content": [], "_meta": {related: {"taskId": "t-a"}}},
        }
        for method, answer in answers.items():
            assert outcome(gw.response(method, answer, metadata=alice)) == "pass", method
            refused = gw.response(method, answer, metadata=mallory)
            assert outcome(refused) == "error", method
            assert refused.error.reason == "Task not found", method
            # On another server, the same id is another task.
            other = gw.response(method, answer, servers=["other"], metadata=alice)
            assert outcome(other) == "error", method
        # An answer that names its task in no one way is refused.
        for answer in (
            {"content": []},
            {"content": [], "_meta": {related: {"taskId": 7}}},
            b'{"taskId": "t-a", "taskId": "t-b"}',
        ):
            assert outcome(gw.response("tasks/result", answer, metadata=alice)) == "error"
        listed = {"tasks": [{"taskId": "t-a"}, {"taskId": "t-b"}]}
        mine = gw.response("tasks/list", listed, metadata=alice)
        assert json.loads(mine.mutated)["tasks"] == [{"taskId": "t-a"}]
        theirs = gw.response("tasks/list", listed, metadata=mallory)
        assert json.loads(theirs.mutated)["tasks"] == []
    # Without a methods rule for them, the task methods follow the default first.
    with Sidecar(policy({"research": {}})) as sidecar, ExtMcp(sidecar.target) as gw:
        assert outcome(gw.response("tools/call", created, metadata=alice)) == "pass"
        denied = gw.response("tasks/list", listed, metadata=alice)
        assert decision(denied)["code"] == "DEFAULT_DENY"


# --- who is calling ----------------------------------------------------------------------------


def test_a_credential_that_is_not_one_is_refused(gw: ExtMcp) -> None:
    for headers in (
        [("authorization", "Basic YWxhZGRpbg==")],
        bearer("a") + bearer("b"),
        [("authorization", b"Bearer \xff\xfe")],
    ):
        answer = gw.call("echo", {}, headers=headers)
        assert answer.error.code == Code.INVALID, headers
        assert decision(answer)["code"] == "INVALID_REQUEST"


def test_without_headers_the_caller_comes_from_the_metadata(gw: ExtMcp) -> None:
    """A stdio upstream gets no headers; the gateway's `metadata` stands in for them."""
    for _ in range(2):
        who = {"authorization": "Bearer t-meta"}
        assert outcome(gw.call("search", {}, metadata=who)) == "pass"
    answer = gw.call("search", {}, metadata={"authorization": "Bearer t-meta"})
    assert decision(answer)["code"] == "RATE_LIMITED"
    # The agent condition reads the metadata too.
    assert outcome(gw.call("ops_only", {}, metadata={"x-agent-id": "ops-bot"})) == "pass"
    assert decision(gw.call("ops_only", {}, metadata={"x-agent-id": "bot"}))["code"] == (
        "CONDITION_FAILED"
    )


def test_grant_from_a_verified_claim_reads_the_gateways_jwt(tmp_path: Path) -> None:
    """`--grant-from jwt:sub`: agentgateway verifies the JWT and passes its claims in
    `metadata` (`jwt_payload: jwt`); the grant is the issuer and subject, and a call without
    them is refused."""
    with Sidecar(POLICY, "--grant-from", "jwt:sub") as s, ExtMcp(s.target) as gw:
        claims = {"jwt_payload": {"iss": "https://idp", "sub": "alice"}}
        for _ in range(2):
            assert outcome(gw.call("search", {}, metadata=claims)) == "pass"
        # A bearer header is not the verified identity: the same caller, limited.
        answer = gw.call("search", {}, metadata=claims, headers=bearer("other"))
        assert decision(answer)["code"] == "RATE_LIMITED"
        refused = gw.call("search", {}, headers=bearer("x"))
        assert refused.error.code == Code.INVALID
        assert "verified token" in refused.error.reason


# --- params read strictly --------------------------------------------------------------------

#: Params that decoders read two ways, or that are not a call's params at all.
RUN = b'{"name": "run_command", "arguments": '
TWO_WAYS = {
    "duplicate-argument": RUN + b'{"command": "ls", "command": "rm -rf /"}}',
    "case-twin-argument": RUN + b'{"command": "ls", "Command": "rm -rf /"}}',
    "duplicate-name": b'{"name": "echo", "name": "run_command", "arguments": {}}',
    "case-twin-name": b'{"name": "echo", "NAME": "run_command"}',
    # "arguments" with a long s, which case folding reads as "arguments".
    "folded-key": b'{"name": "echo", "argument\xc5\xbf": {}}',
    "beyond-2-53": b'{"name": "pay", "arguments": {"amount": 9007199254740993}}',
    "not-an-object": b'["echo"]',
    "arguments-not-an-object": b'{"name": "echo", "arguments": [1]}',
    "no-name": b'{"arguments": {}}',
    "empty-name": b'{"name": ""}',
    "trailing-data": b'{"name": "echo"} {}',
    "cut": b'{"name": "echo", "argum',
}


@pytest.mark.parametrize("params", TWO_WAYS.values(), ids=TWO_WAYS.keys())
def test_params_that_could_be_read_two_ways_are_refused(gw: ExtMcp, params: bytes) -> None:
    answer = gw.request("tools/call", params, headers=bearer("t-strict"))
    assert answer.error.code == Code.INVALID
    assert decision(answer)["code"] == "INVALID_REQUEST"


def test_a_call_without_params_is_refused(gw: ExtMcp) -> None:
    answer = gw.request("tools/call", None, headers=bearer("t-strict"))
    assert answer.error.code == Code.INVALID


KEYS = st.sampled_from(["command", "Command", "COMMAND", "commanD", "c", "x"])


@settings(max_examples=80, deadline=None)
@given(pairs=st.lists(st.tuples(KEYS, st.sampled_from(["ls", "rm -rf /"])), min_size=1, max_size=4))
def test_whatever_toolgate_passes_every_reader_reads_as_safe(sidecar: Any, pairs: list) -> None:
    """Generated argument objects with repeated and case-twin keys: a call toolgate lets
    through reads as safe to a first-wins, a last-wins and a case-folding decoder alike."""
    text = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    params = f'{{"name": "run_command", "arguments": {text}}}'.encode()
    with ExtMcp(sidecar.target) as gw:
        answer = gw.request("tools/call", params, headers=bearer("t-gen"))
    if outcome(answer) != "pass":
        return
    readings = [
        {k: v for k, v in pairs},  # last wins (Python, serde_json maps)
        {k: v for k, v in reversed(pairs)},  # first wins
        {k.lower(): v for k, v in pairs},  # Go's case-insensitive field match
    ]
    for reading in readings:
        assert "rm" not in reading.get("command", ""), (text, reading)


# --- tools/list, the response hook -----------------------------------------------------------


def listed(result: Any) -> list[str]:
    assert outcome(result) == "mutated", result
    return [t["name"] for t in json.loads(result.mutated)["tools"]]


def tools(*names: str, **top: Any) -> dict[str, Any]:
    return {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names], **top}


def test_a_list_loses_what_the_caller_can_never_call(gw: ExtMcp) -> None:
    answer = gw.response(
        "tools/list",
        tools("echo", "secret_keys", "drop_tables", "run_command", nextCursor="p2"),
        metadata={"authorization": "Bearer t-list"},
    )
    assert listed(answer) == ["echo", "run_command"]
    assert json.loads(answer.mutated)["nextCursor"] == "p2"


def test_a_list_every_tool_of_which_is_shown_passes_unchanged(gw: ExtMcp) -> None:
    assert outcome(gw.response("tools/list", tools("echo", "search"))) == "pass"


def test_a_list_filtered_by_who_asks_is_marked_private(gw: ExtMcp) -> None:
    shared = tools("echo", "ops_only", cacheScope="shared")
    ops = gw.response("tools/list", shared, metadata={"x-agent-id": "ops-bot"})
    assert listed(ops) == ["echo", "ops_only"]
    assert json.loads(ops.mutated)["cacheScope"] == "private"
    other = gw.response("tools/list", shared, metadata={"x-agent-id": "bot"})
    assert listed(other) == ["echo"]


def test_a_multiplexed_list_is_filtered_by_each_servers_policy(gw: ExtMcp) -> None:
    merged = tools("srv_echo", "srv_invoice", "billing_invoice", "billing_echo", "echo")
    answer = gw.response("tools/list", merged, servers=["srv", "billing"])
    # srv's section (the top level) has echo; billing's has invoice only. An unprefixed
    # name is shown only where every server would show it: echo is not billing's.
    assert listed(answer) == ["srv_echo", "billing_invoice"]


def test_a_list_that_cannot_be_read_is_not_passed_on(sidecar: Any, gw: ExtMcp) -> None:
    before = sidecar.metric("toolgate_tool_lists_total", result="refused") or 0
    for bad in (
        b'{"tools": [{"name": "echo"}, {"name": "secret_keys", "name": "echo"}]}',
        b'{"tools": [{"NAME": "secret_keys"}]}',
        b'{"Tools": []}',
        b'{"tools": {}}',
        b"[]",
        b"not json",
    ):
        answer = gw.response("tools/list", bad)
        assert outcome(answer) == "error", bad
        assert answer.error.code == Code.UNKNOWN
    after = sidecar.metric("toolgate_tool_lists_total", result="refused")
    assert after == before + 6


# --- tools/call, the response hook -----------------------------------------------------------


def release_token(answer: Any) -> str:
    assert outcome(answer) == "pass"
    return answer.metadata.fields["toolgate_release"].string_value


def test_a_tool_error_gives_the_spend_back_with_the_signed_reservation(gw: ExtMcp) -> None:
    who = bearer("t-spend")
    token = release_token(gw.call("pay", {"amount": 80}, headers=who))
    failed = {"content": [{"type": "text", "text": "card declined"}], "isError": True}
    assert outcome(gw.response("tools/call", failed, metadata={"toolgate_release": token})) == (
        "pass"
    )
    # The 80 came back: another 80 fits.
    token2 = release_token(gw.call("pay", {"amount": 80}, headers=who))
    # Given back once only; a success gives nothing back.
    gw.response("tools/call", failed, metadata={"toolgate_release": token})
    ok = {"content": [{"type": "text", "text": "paid"}]}
    gw.response("tools/call", ok, metadata={"toolgate_release": token2})
    assert decision(gw.call("pay", {"amount": 30}, headers=who))["code"] == "RATE_LIMITED"


def test_a_forged_or_absent_reservation_gives_nothing_back(gw: ExtMcp) -> None:
    who = bearer("t-forged")
    token = release_token(gw.call("pay", {"amount": 90}, headers=who))
    reservation, tag = token.split(".")
    failed = {"isError": True, "content": []}
    for forged in (f"{int(reservation) + 1}.{tag}", reservation, f"{reservation}.{'0' * 32}"):
        gw.response("tools/call", failed, metadata={"toolgate_release": forged})
    gw.response("tools/call", failed)
    # A result that says isError twice reads two ways: kept counted.
    gw.response(
        "tools/call",
        b'{"isError": false, "isError": true, "content": []}',
        metadata={"toolgate_release": token},
    )
    assert decision(gw.call("pay", {"amount": 20}, headers=who))["code"] == "RATE_LIMITED"


def test_a_rule_without_tool_error_release_keeps_the_call_counted(gw: ExtMcp) -> None:
    answer = gw.call("pay_kept", {"amount": 90}, headers=bearer("t-kept"))
    assert outcome(answer) == "pass"
    assert "toolgate_release" not in answer.metadata.fields


# --- what is written ---------------------------------------------------------------------------


def test_extmcp_decisions_are_in_the_decision_log_and_it_verifies(sidecar: Any, gw: ExtMcp) -> None:
    def logged() -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for f in log_files(sidecar.decisions)
            for line in f.read_text().splitlines()
            if json.loads(line).get("tool") == "run_command"
        ]

    # Other tests on this sidecar call run_command too: this call's line is the next one.
    before = len(logged()) if sidecar.decisions.exists() else 0
    gw.call("run_command", {"command": "rm -rf /tmp/x"}, headers=bearer("t-log"))
    wait_for(lambda: len(logged()) > before)
    line = logged()[before]
    assert line["code"] == "CONDITION_FAILED" and line["server"] == "srv"
    assert "rm -rf" not in json.dumps(line), "argument values are not logged"
    assert verify(log_files(sidecar.decisions)).problem is None


def test_the_service_answers_health_checks_by_its_name(sidecar: Any) -> None:
    assert sidecar.health(pb.DESCRIPTOR.services_by_name["ExtMcp"].full_name) == SERVING
