"""Approvals in a running sidecar: a call needing approval is refused with its id; an
approver decides with ``toolgate approvals`` on the admin listener (tokens, per-rule
approvers); the approved call runs once, even when copies race on many connections served by
different threads; pending and approved state survives SIGKILL; a webhook tells a
receiver, signed, retried. (Below the sidecar: test_approvals_store.py. Through Envoy:
test_approvals_e2e.py.)
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import toolgate
from conftest import policy
from sidecar import PATIENCE, TOOLGATE, Sidecar, free_port, toolgate_cli, wait_for
from toolgate.cli import exits

DOC = policy(
    {
        "terminate_instances": {
            "action": "require_approval",
            "reason": "Terminating instances needs a human's approval.",
            "approval": {"timeout": "10m", "approvers": ["alice"]},
        },
        "restart": {"action": "require_approval"},
        "list_images": {},
    }
)

TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}


@pytest.fixture
def admin(tmp_path: Path) -> Path:
    """The admin tokens file, and each approver's own token file beside it."""
    (tmp_path / "tokens").write_text(
        "# approvers\n" + "".join(f"{n} {t}\n" for n, t in TOKENS.items())
    )
    for name, token in TOKENS.items():
        (tmp_path / f"{name}.token").write_text(token + "\n")
    (tmp_path / "mallory.token").write_text("not-a-token-of-this-sidecar\n")
    return tmp_path


def approve_with_cli(admin_port: int, token_file: Path, id: str) -> None:
    """``toolgate approvals approve ID`` against the admin listener on ``admin_port``, as the
    holder of ``token_file``: it must say APPROVED."""
    done = toolgate_cli(
        "approvals",
        "--target",
        f"127.0.0.1:{admin_port}",
        "--token-file",
        token_file,
        "approve",
        id,
    )
    assert done.returncode == 0 and "APPROVED" in done.stdout, done.stderr


class Approving:
    """A sidecar with approvals on: state in ``dir/state``, admin tokens from ``dir``."""

    def __init__(
        self, dir: Path, *extra: str, admin_port: int | None = None, doc: Any = DOC
    ) -> None:
        self.dir = dir
        self.admin_port = admin_port or free_port()
        self.sidecar = Sidecar(
            doc,
            "--state-dir",
            str(dir / "state"),
            "--admin-listen",
            f"127.0.0.1:{self.admin_port}",
            "--admin-tokens",
            str(dir / "tokens"),
            *extra,
        )

    def approvals(self, who: str, *args: str) -> Any:
        """``toolgate approvals --json ARGS`` as ``who``: the JSON lines it printed, or the
        failed process."""
        done = toolgate_cli(
            "approvals",
            "--target",
            f"127.0.0.1:{self.admin_port}",
            "--token-file",
            self.dir / f"{who}.token",
            "--json",
            *args,
        )
        if done.returncode != 0:
            return done
        return [json.loads(line) for line in done.stdout.splitlines()]

    def watch(self, who: str, *args: str) -> subprocess.Popen[str]:
        """``toolgate approvals ARGS watch`` as ``who``, its output a pipe to read lines from."""
        return subprocess.Popen(
            [
                *TOOLGATE,
                "approvals",
                "--target",
                f"127.0.0.1:{self.admin_port}",
                "--token-file",
                str(self.dir / f"{who}.token"),
                *args,
                "watch",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    def listed(self, state: str) -> list[dict[str, Any]]:
        out = self.approvals("alice", "list", "--state", state)
        assert isinstance(out, list), out.stderr
        return out

    def call(self, tool: str = "terminate_instances", ids: tuple[str, ...] = ("i-1",)) -> Any:
        return self.sidecar.client.decide(tool, grant="agent-key", arguments={"ids": list(ids)})

    def __enter__(self) -> Approving:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sidecar.stop()


def wait_listed(sc: Approving, id: str, state: str = "PENDING") -> dict[str, Any]:
    """The approval once the store holds it (its news is recorded off the decision path)."""
    return wait_for(lambda: next((a for a in sc.listed(state) if a["id"] == id), None))


def race(target: str, copies: int, request: dict[str, Any]) -> list[str]:
    """``copies`` identical calls at once, each on its own connection: their verdicts."""
    clients = [toolgate.Client(target, timeout=PATIENCE) for _ in range(copies)]
    barrier = threading.Barrier(copies)
    verdicts: list[str] = []

    def one(client: toolgate.Client) -> None:
        barrier.wait()
        r = client.decide("terminate_instances", **request)
        verdicts.append(r.verdict)

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=PATIENCE)
    for c in clients:
        c.close()
    return sorted(verdicts)


def test_an_approver_approves_with_the_cli_and_the_call_runs_once(admin):
    with Approving(admin) as sc:
        first = sc.call()
        assert first.code == "APPROVAL_REQUIRED"
        id = first.approval_id
        assert id.startswith("apr_") and id in first.reason
        assert sc.call().approval_id == id, "the same call waits on the same approval"
        shown = wait_listed(sc, id)
        assert (shown["tool"], json.loads(shown["arguments_json"])) == (
            "terminate_instances",
            {"ids": ["i-1"]},
        )
        assert shown["approvers"] == ["alice"] and shown["grant"].startswith("hmac-sha256:")

        refused = sc.approvals("mallory", "approve", id)
        assert refused.returncode == exits.UNUSABLE and "UNAUTHENTICATED" in refused.stderr
        refused = sc.approvals("bob", "approve", id)
        assert refused.returncode == exits.UNUSABLE and "PERMISSION_DENIED" in refused.stderr
        assert sc.call().verdict == "REQUIRE_APPROVAL"

        (approved,) = sc.approvals("alice", "approve", id, "--reason", "change 42")
        assert (approved["state"], approved["decided_by"]) == ("APPROVED", "alice")
        assert approved["reason"] == "change 42"
        again = sc.approvals("alice", "approve", id)
        assert again.returncode == exits.UNUSABLE and "FAILED_PRECONDITION" in again.stderr

        # Other arguments are another call: they need their own approval.
        other = sc.call(ids=("i-2",))
        assert other.verdict == "REQUIRE_APPROVAL"
        assert other.approval_id != id

        request = {"grant": "agent-key", "arguments": {"ids": ["i-1"]}}
        assert race(sc.sidecar.target, 12, request) == ["ALLOW"] + ["REQUIRE_APPROVAL"] * 11
        after = sc.call()
        assert after.approval_id not in (None, id), "a fourth try opens a new approval"
        used = wait_listed(sc, id, "USED")
        assert int(used["used_ms"]) >= int(used["decided_ms"])
        assert sc.sidecar.metric("toolgate_approvals", state="USED") == 1


def test_a_denied_call_stays_denied_and_anyone_may_decide_a_rule_without_approvers(admin):
    with Approving(admin) as sc:
        id = sc.call().approval_id
        wait_listed(sc, id)
        (denied,) = sc.approvals("alice", "deny", id, "--reason", "not today")
        assert (denied["state"], denied["reason"]) == ("DENIED", "not today")
        for _ in range(2):
            d = sc.call()
            assert (d.code, d.approval_id) == ("APPROVAL_DENIED", id)
        open_to_all = sc.call("restart").approval_id
        wait_listed(sc, open_to_all)
        (shown,) = sc.approvals("bob", "approve", open_to_all)
        assert shown["decided_by"] == "bob"
        assert sc.call("restart").verdict == "ALLOW"


def test_watch_streams_each_new_approval(admin):
    with Approving(admin) as sc:
        watch = sc.watch("bob", "--json")
        try:
            id = sc.call().approval_id
            assert watch.stdout is not None
            line = json.loads(watch.stdout.readline())
            assert (line["id"], line["state"]) == (id, "PENDING")
            sc.approvals("alice", "approve", id)
            line = json.loads(watch.stdout.readline())
            assert (line["id"], line["state"]) == (id, "APPROVED")
        finally:
            watch.kill()
            watch.wait()


def test_pending_and_approved_state_survive_sigkill(admin):
    port = free_port()
    with Approving(admin, admin_port=port) as sc:
        pending = sc.call(ids=("i-1",)).approval_id
        approved = sc.call(ids=("i-2",)).approval_id
        wait_listed(sc, approved)
        sc.approvals("alice", "approve", approved)
        sc.sidecar.signal(signal.SIGKILL)
        sc.sidecar.wait(PATIENCE)
    with Approving(admin, admin_port=port) as sc:
        assert sc.call(ids=("i-1",)).approval_id == pending
        assert [a["id"] for a in sc.listed("PENDING")] == [pending]
        ran = sc.call(ids=("i-2",))
        assert (ran.verdict, ran.approval_id) == ("ALLOW", approved)
        assert sc.call(ids=("i-2",)).verdict == "REQUIRE_APPROVAL"


def test_approvals_acknowledged_before_a_sigkill_are_kept(admin):
    """The sidecar is killed while an approver approves one approval after another: every
    approval the CLI reported approved runs after the restart, exactly once; none is half
    decided."""
    port = free_port()
    with Approving(admin, admin_port=port) as sc:
        ids = [sc.call(ids=(f"i-{n}",)).approval_id for n in range(8)]
        for id in ids:
            wait_listed(sc, id)
        acknowledged: list[int] = []

        def approve_all() -> None:
            for n, id in enumerate(ids):
                out = sc.approvals("alice", "approve", id)
                if not isinstance(out, list):
                    return
                acknowledged.append(n)

        approver = threading.Thread(target=approve_all)
        approver.start()
        wait_for(lambda: len(acknowledged) >= 3, timeout=60)
        sc.sidecar.signal(signal.SIGKILL)
        approver.join(timeout=60)
        sc.sidecar.wait(PATIENCE)
    assert 3 <= len(acknowledged) < len(ids), "the kill came mid-way"
    with Approving(admin, admin_port=port) as sc:
        states = {a["id"]: a["state"] for a in sc.approvals("alice", "list")}
        for n, id in enumerate(ids):
            first, second = sc.call(ids=(f"i-{n}",)), sc.call(ids=(f"i-{n}",))
            if n in acknowledged or states[id] == "APPROVED":
                assert states[id] == "APPROVED", (n, states[id])
                assert first.verdict == "ALLOW"
                assert second.approval_id != id
            else:
                assert states[id] == "PENDING", (n, states[id])
                assert first.approval_id == second.approval_id == id


def test_an_approved_call_runs_once_across_serving_threads(admin):
    with Approving(admin, "--threads", "4") as sc:
        id = sc.call().approval_id
        wait_listed(sc, id)
        sc.approvals("alice", "approve", id)
        request = {"grant": "agent-key", "arguments": {"ids": ["i-1"]}}
        assert race(sc.sidecar.target, 16, request) == ["ALLOW"] + ["REQUIRE_APPROVAL"] * 15
        wait_listed(sc, id, "USED")


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST; answers 500 to the first
    ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(receiver.posts) <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=1) as r:
        yield r


def test_a_webhook_tells_of_each_new_approval_signed_and_retried(admin, receiver):
    secret = b"webhook-secret-0123456789abcdef"
    (admin / "hook.secret").write_bytes(secret + b"\n")
    with Approving(
        admin,
        "--approval-webhook",
        receiver.url,
        "--approval-webhook-secret",
        str(admin / "hook.secret"),
    ) as sc:
        id = sc.call().approval_id
        sc.call()  # the same call: no second approval, no second webhook
        wait_for(lambda: len(receiver.posts) >= 2, timeout=30)
        # The receiver records a post before it answers; the delivery counts on the answer.
        delivered = lambda: sc.sidecar.metric(  # noqa: E731
            "toolgate_approval_webhook_deliveries_total", result="ok"
        )
        wait_for(lambda: delivered() >= 1, timeout=30)
        assert delivered() == 1
        assert (
            sc.sidecar.metric("toolgate_approval_webhook_deliveries_total", result="retried") == 1
        )
    assert len(receiver.posts) == 2, "the failed first attempt, then the retry"
    for headers, body in receiver.posts:
        ts = headers["x-toolgate-timestamp"]
        want = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["x-toolgate-signature"] == f"v1={want}"
        message = json.loads(body)
        assert message["type"] == "approval.opened"
        assert (message["approval"]["id"], message["approval"]["state"]) == (id, "PENDING")
        assert message["approval"]["tool"] == "terminate_instances"
        assert "agent-key" not in body.decode(), "the credential is never sent"


def test_a_slack_webhook_gets_text(admin):
    with (
        Receiver() as receiver,
        Approving(
            admin, "--approval-webhook", receiver.url, "--approval-webhook-format", "slack"
        ) as sc,
    ):
        id = sc.call().approval_id
        wait_for(lambda: len(receiver.posts) >= 1, timeout=30)
    ((headers, body),) = receiver.posts
    text = json.loads(body)["text"]
    assert id in text and "terminate_instances" in text and "approve" in text
    assert "x-toolgate-signature" not in headers, "no secret, no signature"


def test_bad_admin_tokens_files_are_refused_at_start(tmp_path):
    for content, why in [
        ("alice short\n", "at least 16"),
        ("alice a-token-long-enough-1\nalice a-token-long-enough-2\n", "twice"),
        ("just-one-word\n", "NAME TOKEN"),
        ("# nothing\n", "no tokens"),
    ]:
        (tmp_path / "tokens").write_text(content)
        done = toolgate_cli(
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--metrics-listen",
            "off",
            "--admin-listen",
            f"127.0.0.1:{free_port()}",
            "--admin-tokens",
            tmp_path / "tokens",
            "--state-dir",
            tmp_path / "state",
        )
        assert done.returncode == 2 and why in done.stderr, (content, done.stderr)


MARKED = policy(
    {
        # Exporting the CRM waits for a person; once approved and run, it marks the session.
        "crm_export": {
            "action": "require_approval",
            "marks": [{"name": "private_data", "scope": "session", "ttl": "8h"}],
        },
        # Mail leaving a marked session waits for a person too.
        "send_email": {
            "action": "require_approval",
            "require": [{"path": "marks", "op": "not_contains", "value": "private_data"}],
        },
        "list_images": {},
    }
)


def test_an_approval_gated_call_sets_its_marks_only_when_the_approved_call_runs(admin):
    with Approving(admin, doc=MARKED) as sc:
        client = sc.sidecar.client
        mail = client.decide("send_email", grant="k", session="s")
        assert mail.code == "APPROVAL_REQUIRED"
        assert mail.marks == {"read": {"private_data": "unset"}, "set": []}

        export = client.decide("crm_export", grant="k", session="s")
        assert export.code == "APPROVAL_REQUIRED"
        assert export.marks is None, "waiting for approval sets nothing (and it read none)"
        # Mail is still only waiting for its approval: the session is not marked.
        assert client.decide("send_email", grant="k", session="s").code == "APPROVAL_REQUIRED"

        wait_listed(sc, export.approval_id)
        sc.approvals("alice", "approve", export.approval_id)
        ran = client.decide("crm_export", grant="k", session="s")
        assert (ran.verdict, ran.approval_id) == ("ALLOW", export.approval_id)
        assert ran.marks == {"read": {}, "set": ["private_data"]}

        # Marked now: mail from this session is refused outright, before any approval.
        refused = client.decide("send_email", grant="k", session="s")
        assert (refused.verdict, refused.code) == ("DENY", "CONDITION_FAILED")
        assert refused.approval_id is None
        assert refused.marks == {"read": {"private_data": "set"}, "set": []}
        assert client.decide("send_email", grant="k", session="t").code == "APPROVAL_REQUIRED"
