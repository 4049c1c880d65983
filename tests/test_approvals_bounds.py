"""What an unauthenticated agent can do to approvals, through a real sidecar (its
admin API, real SQLite, a real HTTP receiver): it cannot deceive an approver
(forged rows, Slack mentions and links), jam the approvals of others (a full table, a
webhook backlog, messages over gRPC's limit, rows never purged, admin slots held without a
message), or learn a credential from an approval's key. (The text rules as properties:
test_approvals_text.py.)
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import sqlite3
import subprocess
import threading
import unicodedata
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import hypothesis.strategies as st
from conftest import make_engine, policy
from hypothesis import given, settings
from sidecar import PATIENCE, TOOLGATE, wait_for
from test_approvals import TOKENS, Approving, Receiver, admin  # noqa: F401  (a fixture)
from toolgate._core import argument_digest
from toolgate.v1 import approvals_pb2, approvals_pb2_grpc

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

#: Gates behind globs: whatever tool name an agent makes up reaches them.
DOC = policy(
    {
        "term*": {"action": "require_approval", "approval": {"timeout": "10m"}},
        "restart*": {"action": "require_approval", "approval": {"timeout": "10m"}},
        "flash": {"action": "require_approval", "approval": {"timeout": "1s"}},
    }
)

#: Text a display could act on: controls, format characters, line and paragraph separators.
UNSAFE = ("Cc", "Cf", "Zl", "Zp")

FORGED = "terminate\n\x1b[2K\rapr_00000000000000000000000000000001  PENDING  harmless"


def unsafe(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE]


def cli(sc: Approving, who: str, *args: str, json_out: bool = False) -> list[str]:
    """``toolgate approvals ARGS`` as ``who``: its output lines (it must succeed)."""
    done = subprocess.run(
        [
            *TOOLGATE,
            "approvals",
            "--target",
            f"127.0.0.1:{sc.admin_port}",
            "--token-file",
            str(sc.dir / f"{who}.token"),
            *(["--json"] if json_out else []),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def stub(sc: Approving) -> tuple[grpc.Channel, Any, Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{sc.admin_port}")
    metadata = (("authorization", f"Bearer {TOKENS['alice']}"),)
    return channel, approvals_pb2_grpc.ApprovalsStub(channel), metadata


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    | st.text(alphabet="abc_-.", min_size=126, max_size=132)
)
def test_an_engine_without_approvals_answers_a_tool_name_as_the_sidecar_does(name):
    """``toolgate test`` and a local ``decide`` (no admin listener, no approvals) say what the
    sidecar says for an approval-gated call: a name MCP does not allow is INVALID_REQUEST,
    never APPROVAL_REQUIRED, so a test case cannot pass on what the sidecar refuses."""
    engine = make_engine(policy({"*": {"action": "require_approval"}}))
    mcp = 1 <= len(name) <= 128 and all(c.isascii() and (c.isalnum() or c in "_-.") for c in name)
    code = engine.decide(name, arguments={}).code
    if not name:
        assert code == "INVALID_REQUEST"
    else:
        assert code == ("APPROVAL_REQUIRED" if mcp else "INVALID_REQUEST"), name


def test_a_forged_tool_name_opens_no_approval_and_agent_text_forges_no_row(admin):  # noqa: F811
    with Approving(admin, doc=DOC) as sc:
        forged = sc.sidecar.client.decide(FORGED, grant="mallory", arguments={})
        assert (forged.code, forged.approval_id) == ("INVALID_REQUEST", None)
        # The other fields an agent chooses are shown, inert.
        hostile = "x\n\x1b[31mapr_00000000000000000000000000000002  APPROVED\u202e\u2028"
        ids = {
            sc.sidecar.client.decide(
                "terminate",
                grant="mallory",
                agent=hostile,
                session=hostile,
                arguments={"note": hostile},
            ).approval_id,
            sc.sidecar.client.decide("terminate", grant="alice", arguments={}).approval_id,
        }
        wait_for(lambda: len(cli(sc, "alice", "list")) == 2)
        rows = cli(sc, "alice", "list")
        assert {row.split()[0] for row in rows} == ids, "one line per approval"
        for row in rows:
            assert not unsafe(row), row
        assert not any(row.startswith("apr_0000") for row in rows)

        watch = sc.watch("bob")
        try:
            assert watch.stdout is not None
            watched = [watch.stdout.readline() for _ in ids]
        finally:
            watch.kill()
            watch.wait()
        assert {row.split()[0] for row in watched} == ids
        for row in watched:
            assert row.endswith("\n") and not unsafe(row[:-1]), row


def test_slack_text_carries_no_mention_link_or_markup_from_an_agent(admin):  # noqa: F811
    note = "<!channel> <https://evil.example/approve|click to approve> `x` *bold* &amp;"
    with (
        Receiver() as receiver,
        Approving(
            admin,
            "--approval-webhook",
            receiver.url,
            "--approval-webhook-format",
            "slack",
            doc=DOC,
        ) as sc,
    ):
        id = sc.sidecar.client.decide(
            "terminate", grant="mallory", agent="<!here>", arguments={"note": note}
        ).approval_id
        wait_for(lambda: len(receiver.posts) >= 1, timeout=30)
    ((_, body),) = receiver.posts
    text = json.loads(body)["text"]
    assert id in text
    assert "<" not in text and ">" not in text, text
    assert "&lt;!channel&gt;" in text and "&lt;!here&gt;" in text
    assert "&amp;amp;" in text, "an agent's entity is shown as typed"
    # Six code spans (who, tool, arguments, rule, approve, deny): no backtick of the agent's.
    assert text.count("`") == 12, text


def test_one_grant_cannot_fill_the_table_nor_one_rule_take_every_slot(admin):  # noqa: F811
    with Approving(admin, "--approval-pending-per-rule", "100", doc=DOC) as sc:
        flood = sc.sidecar.client.decide_batch(
            [{"tool": "terminate", "grant": "mallory", "arguments": {"n": n}} for n in range(4200)]
        )
        opened = {d.approval_id for d in flood if d.approval_id}
        assert len(opened) == 32, "the default cap per grant"
        assert "this caller has 32 waiting already" in flood[-1].reason
        assert sc.sidecar.client.decide("terminate", grant="alice").approval_id

        # Many grants through one rule: credentials the client chose (these: nothing verified
        # or vouched for them) take half the rule's room, which keeps the rest for trusted
        # callers, and the other rules keep theirs.
        many = sc.sidecar.client.decide_batch(
            [{"tool": "terminate", "grant": f"g-{n}", "arguments": {}} for n in range(200)]
        )
        assert sum(1 for d in many if d.approval_id) == 50 - 33
        assert (
            "callers with an unverified credential have 50 waiting on this rule already"
            in many[-1].reason
        )
        assert sc.sidecar.client.decide("restart", grant="alice").approval_id


def test_huge_arguments_are_kept_as_a_preview_and_list_pages(admin):  # noqa: F811
    big = "é" * 400_000  # 800 kB of JSON text each
    with Approving(admin, doc=DOC) as sc:
        whole = [
            json.dumps({"blob": big, "n": n}, separators=(",", ":"), ensure_ascii=False)
            for n in range(12)
        ]
        ids = [
            sc.sidecar.client.decide("terminate", grant=f"g-{n}", arguments=text).approval_id
            for n, text in enumerate(whole)
        ]
        assert all(ids)
        wait_for(lambda: len(cli(sc, "alice", "list")) == 12)
        listed = [json.loads(line) for line in cli(sc, "alice", "list", json_out=True)]
        key = (admin / "state" / "grant.key").read_bytes()
        sizes = {(len(w.encode()), argument_digest(key, w)) for w in whole}
        for a in listed:
            assert len(a["arguments_json"].encode()) <= 2048 and a["arguments_cut"]
            assert a["arguments_json"].startswith('{"blob":"éé')
            assert (int(a["arguments_bytes"]), a["arguments_digest"]) in sizes
        with sqlite3.connect(admin / "state" / "approvals.db") as db:
            (longest,) = db.execute("SELECT MAX(LENGTH(CAST(arguments AS BLOB))) FROM approvals")
        assert longest[0] <= 2048

        channel, approvals, metadata = stub(sc)
        with channel:
            seen: list[str] = []
            token = ""
            while True:
                page = approvals.List(
                    approvals_pb2.ListApprovalsRequest(limit=5, page_token=token),
                    metadata=metadata,
                    timeout=PATIENCE,
                )
                assert len(page.approvals) <= 5
                seen += [a.id for a in page.approvals]
                token = page.next_page_token
                if not token:
                    break
        assert sorted(seen) == sorted(ids), "every approval once, newest first"
        assert len(cli(sc, "alice", "list", "--limit", "7")) == 7


def test_finished_approvals_are_purged_after_their_retention(admin):  # noqa: F811
    with Approving(admin, "--approval-retention", "1", doc=DOC) as sc:
        used = sc.sidecar.client.decide("restart", grant="alice").approval_id
        lapsing = sc.sidecar.client.decide("flash", grant="alice").approval_id
        waiting = sc.sidecar.client.decide("terminate", grant="alice").approval_id
        wait_for(lambda: len(cli(sc, "alice", "list")) == 3)
        cli(sc, "alice", "approve", used)
        assert sc.sidecar.client.decide("restart", grant="alice").verdict == "ALLOW"
        store = admin / "state" / "approvals.db"

        def ids() -> set[str]:
            with sqlite3.connect(store) as db:
                return {id for (id,) in db.execute("SELECT id FROM approvals")}

        wait_for(lambda: ids() == {waiting}, timeout=30)
        with sqlite3.connect(store) as db:
            changed = {id for (id,) in db.execute("SELECT id FROM changes")}
        assert used not in changed and lapsing not in changed
        assert sc.sidecar.metric("toolgate_approvals", state="PENDING") == 1
        assert sc.sidecar.metric("toolgate_approvals", state="USED") == 0


class HoldingReceiver(Receiver):
    """A slow receiver of a flood: it holds every POST about a "noise" call until one about
    another call has come (or a minute has passed), and notes the order they came in."""

    def __init__(self) -> None:
        self.order: list[tuple[str, str]] = []  # (kind, approval id)
        self.other_came = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                approval = json.loads(body)["approval"]
                noise = '"noise"' in approval["arguments"]
                receiver.order.append(("noise" if noise else "real", approval["id"]))
                if noise:
                    receiver.other_came.wait(60)
                else:
                    receiver.other_came.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.posts = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __exit__(self, *exc: object) -> None:
        self.other_came.set()
        super().__exit__(*exc)


def test_a_webhook_flood_does_not_hold_back_another_callers_approval(admin):  # noqa: F811
    """150 approvals from one grant, their receiver holding each; then one from another
    grant: it is delivered after at most the deliveries under way and one in turn, long
    before the flood's are done; then every one of them is delivered too."""
    workers = 4
    with (
        HoldingReceiver() as receiver,
        Approving(
            admin,
            "--approval-pending-per-grant",
            "200",
            "--approval-webhook",
            receiver.url,
            "--approval-webhook-workers",
            str(workers),
            "--approval-webhook-timeout",
            "1",
            doc=DOC,
        ) as sc,
    ):
        flood = [
            {"tool": "terminate", "grant": "mallory", "arguments": {"noise": n}} for n in range(150)
        ]
        noise = {d.approval_id for d in sc.sidecar.client.decide_batch(flood)}
        assert len(noise) == 150 and None not in noise
        # Every worker is held by the flood now.
        wait_for(lambda: len(receiver.order) >= workers, timeout=30)
        real = sc.sidecar.client.decide("terminate", grant="alice", arguments={}).approval_id
        assert receiver.other_came.wait(60), "the real approval was never delivered"
        came = [kind for kind, _ in receiver.order]
        before = came.index("real")
        assert before <= 2 * workers, f"{before} deliveries of the flood went first"
        delivered = wait_for(
            lambda: (ids := {id for _, id in receiver.order}) >= noise | {real} and ids,
            timeout=120,
        )
        assert delivered == noise | {real}


def _h2_calls(
    port: int, count: int, token: str | None, method: str = "List"
) -> tuple[socket.socket, Any]:
    """``count`` calls of ``method`` on one raw HTTP/2 connection: headers sent, the request
    message never."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", f"127.0.0.1:{port}"),
        (":path", f"/toolgate.v1.Approvals/{method}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    if token is not None:
        headers.append(("authorization", f"Bearer {token}"))
    for n in range(count):
        conn.send_headers(1 + 2 * n, headers, end_stream=False)
    sock.sendall(conn.data_to_send())
    return sock, conn


def _statuses(sock: socket.socket, conn: Any, count: int) -> dict[int, str]:
    """The grpc-status each stream ended with, read until ``count`` have ended."""
    ended: dict[int, str] = {}
    while len(ended) < count:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.StreamReset):
                ended.setdefault(event.stream_id, "reset")
            if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                status = dict(
                    (k.decode() if isinstance(k, bytes) else k, v) for k, v in event.headers
                ).get("grpc-status")
                if status is not None:
                    ended[event.stream_id] = (
                        status.decode() if isinstance(status, bytes) else status
                    )
        sock.sendall(conn.data_to_send())
    return ended


def test_admin_calls_that_never_send_their_message_hold_no_other_tokens_share(admin):  # noqa: F811
    with Approving(admin, doc=DOC) as sc:
        sc.sidecar.client.decide("terminate", grant="alice")
        # Unauthenticated: refused from their headers, at once, holding nothing.
        sock, conn = _h2_calls(sc.admin_port, 20, token=None)
        with sock:
            statuses = _statuses(sock, conn, 20)
            refused = {str(c.value[0]) for c in (UNAUTHENTICATED, RESOURCE_EXHAUSTED)}
            assert len(statuses) == 20 and set(statuses.values()) <= refused, statuses
            assert len(cli(sc, "alice", "list")) == 1, "an approver is answered meanwhile"
        # Another token's holder opens every call and Watch stream it can, and never sends a
        # message: its share is held (and cancelled after 5 s), and the approver, with a
        # share of her own, is answered at once all the same.
        calls, calls_conn = _h2_calls(sc.admin_port, 30, token=TOKENS["bob"])
        watches, watches_conn = _h2_calls(sc.admin_port, 10, TOKENS["bob"], method="Watch")
        with calls, watches:
            channel, approvals, metadata = stub(sc)
            with channel:
                listed = approvals.List(
                    approvals_pb2.ListApprovalsRequest(), metadata=metadata, timeout=PATIENCE
                )
                (pending,) = listed.approvals
                # With the pending one first: once it has come, the stream watches from before
                # the approval (a Watch served only after it would never see it).
                watch = approvals_pb2.WatchApprovalsRequest(include_pending=True)
                stream = approvals.Watch(watch, metadata=metadata, timeout=PATIENCE)
                assert next(stream).id == pending.id, "her Watch stream was served too"
                approved = approvals.Approve(
                    approvals_pb2.DecideApprovalRequest(id=pending.id),
                    metadata=metadata,
                    timeout=PATIENCE,
                )
                assert approved.state == "APPROVED"
                decided = next(stream)
                assert (decided.id, decided.state) == (pending.id, "APPROVED")
                stream.cancel()
            for sock, conn, count in ((calls, calls_conn, 30), (watches, watches_conn, 10)):
                statuses = _statuses(sock, conn, count)
                assert len(statuses) == count and "0" not in statuses.values(), statuses
                refused_at_once = str(RESOURCE_EXHAUSTED.value[0])
                assert refused_at_once in statuses.values(), "past the share: refused"


def _unkeyed_key(tool: str, grant: str, arguments: str) -> str:
    """The approval key as it was before it was keyed: SHA-256 over the call's fields."""
    h = hashlib.sha256()
    for part in (None, tool, grant, None, None, arguments):
        if part is None:
            h.update(b"\0")
        else:
            h.update(b"\1" + len(part.encode()).to_bytes(8, "big") + part.encode())
    d = h.digest()
    return f"{max(int.from_bytes(d[:8], 'big'), 1):016x}{d[8:16].hex()}"


def test_no_unkeyed_digest_of_a_credential_is_kept_or_sent(admin):  # noqa: F811
    token = "sk-live-0123456789"
    with (
        Receiver() as receiver,
        Approving(admin, "--approval-webhook", receiver.url, doc=DOC) as sc,
    ):
        id = sc.sidecar.client.decide("terminate", grant=token, arguments={}).approval_id
        wait_for(lambda: len(receiver.posts) >= 1, timeout=30)
        channel, approvals, metadata = stub(sc)
        with channel:
            shown = approvals.Get(
                approvals_pb2.GetApprovalRequest(id=id), metadata=metadata, timeout=PATIENCE
            )
    with sqlite3.connect(admin / "state" / "approvals.db") as db:
        ((key,),) = db.execute("SELECT key FROM approvals WHERE id = ?", (id,))
    # A dictionary of likely tokens finds nothing: the key is keyed with the deployment's
    # secret.
    for guess in ["sk-live-0000000000", token, "sk-live-9999999999"]:
        assert _unkeyed_key("terminate", guess, "{}") != key
    ((_, body),) = receiver.posts
    sent = json.loads(body)["approval"]
    assert "key" not in sent and "owner" not in sent and key not in body.decode()
    assert key not in shown.SerializeToString().decode(errors="replace")
    assert token not in body.decode()


def test_a_table_file_of_the_old_layout_is_set_aside_at_start(admin):  # noqa: F811
    state = admin / "state"
    state.mkdir()
    old = (0x5447_4150_0000_0001).to_bytes(8, "little") + (4).to_bytes(8, "little")
    # Its header (16 words), then 4 slots of 8 words.
    (state / "approvals.table").write_bytes(old + bytes(16 * 8 - len(old) + 4 * 8 * 8))
    with Approving(admin, doc=DOC) as sc:
        assert sc.sidecar.client.decide("terminate", grant="alice").approval_id
    assert (state / "approvals.table.v1.old").read_bytes().startswith(old)
    assert "set aside" in sc.sidecar.stderr
