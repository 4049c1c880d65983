"""What callers can make the sidecar hold, against a real ``toolgate serve``: open calls,
messages declared and half sent, ext_proc streams that keep large parts open. Each is charged
to one budget (48 MiB for large messages, 96 MiB more for small calls: docs/sidecar.md); past
it calls are refused with RESOURCE_EXHAUSTED, the sidecar stays within its memory and keeps
deciding, and what a call held comes back when it ends."""

from __future__ import annotations

import queue
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2
from h2_client import RawGrpc
from sidecar import PATIENCE, Sidecar, wait_for
from toolgate.v1 import decider_pb2

DECIDE = "/toolgate.v1.Decider/Decide"
PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
BUDGET = 48 << 20
HEADROOM = 96 << 20
#: The sidecar's memory limit as deployed (deploy/kubernetes, the Helm chart).
MEMORY_LIMIT_KIB = 256 << 10
RESOURCE_EXHAUSTED = str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])

POLICY = {"version": "1", "default": "deny", "tools": {"read": {}}}


@pytest.fixture(scope="module")
def sc() -> Iterator[Sidecar]:
    with Sidecar(POLICY) as s:
        yield s


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def still_deciding(sc: Sidecar) -> None:
    assert sc.alive, sc.stderr
    assert sc.client.decide("read").verdict == "ALLOW"


def half_sent(conn: RawGrpc, calls: int, declared: int) -> tuple[list[int], list[int]]:
    """Open ``calls`` Decide calls on ``conn``, each sending the header of a message of
    ``declared`` bytes and one byte of it; returns (refused, still open) once every call the
    budget cannot hold has been refused."""
    streams = []
    for _ in range(calls):
        s = conn.open(DECIDE)
        conn.send_bytes(s, b"\0" + struct.pack(">I", declared) + b"x")
        streams.append(s)
    fit = BUDGET // declared
    while len(conn.ended) < calls - fit - 1:
        conn._read()
    conn.ping()
    refused = [s for s in streams if s in conn.ended]
    for s in refused:
        assert conn.answers[s].get("grpc-status") == RESOURCE_EXHAUSTED, conn.answers[s]
    return refused, [s for s in streams if s not in conn.ended]


def held_bytes(sc: Sidecar) -> float:
    """What the sidecar's open calls hold, as its budget charges it (its gauge)."""
    held = sc.metric("toolgate_held_bytes")
    assert held is not None
    return held


def given_back(sc: Sidecar, before: float) -> None:
    """Wait until the sidecar holds no more than ``before`` again: it sees a closed
    connection's calls end a moment after the client closed it (a leak never gets there)."""
    wait_for(lambda: held_bytes(sc) <= before, timeout=PATIENCE)


def test_messages_half_sent_are_charged_what_they_declare_and_given_back(sc):
    """tonic reserves a message's declared length when its header arrives: 4 MB declared and
    one byte sent, 60 times, would reserve 240 MB. The budget holds 12 such calls; the rest
    are refused at once, and closing the connection gives every byte back (a second round
    holds as many)."""
    before = rss_kib(sc.proc.pid)
    held_before = held_bytes(sc)
    fit = BUDGET // 4_000_000
    for _ in range(2):
        counted = sc.metric(
            "toolgate_grpc_errors_total", api="decider", status="RESOURCE_EXHAUSTED"
        )
        with RawGrpc(sc.port) as conn:
            refused, held = half_sent(conn, 60, 4_000_000)
            assert fit - 2 <= len(held) <= fit, (len(held), len(refused))
            # Each call held is charged what it declared, and all of them no more than the budget.
            assert len(held) * 4_000_000 <= held_bytes(sc) - held_before <= BUDGET + HEADROOM
        assert sc.metric(
            "toolgate_grpc_errors_total", api="decider", status="RESOURCE_EXHAUSTED"
        ) == (counted or 0) + len(refused)
        assert rss_kib(sc.proc.pid) < MEMORY_LIMIT_KIB
        still_deciding(sc)
        given_back(sc, held_before)
    assert rss_kib(sc.proc.pid) - before < BUDGET // 1024 * 2


def ext_proc_message(body: bytes, note: dict[str, Any] | None) -> bytes:
    """An ext_proc message as Envoy sends an answer's part (not its last): ``body``, with
    ``note`` as the Check's note in its metadata (none if ``None``)."""
    request = external_processor_pb2.ProcessingRequest()
    request.response_body.body = body
    if note is not None:
        namespace = request.metadata_context.filter_metadata["envoy.filters.http.ext_authz"]
        namespace.update({"toolgate": note})
    return request.SerializeToString()


def list_part(size: int, server: str | None = None) -> bytes:
    """An ext_proc message as Envoy sends a tools/list answer's part (the Check's note in its
    metadata, naming ``server`` if given): ``size`` bytes of an event that does not end."""
    note: dict[str, Any] = {"exchange": "tools/list", "grant_verified": False}
    if server is not None:
        note["server"] = server
    return ext_proc_message(b"data: " + b" " * (size - 6), note)


def open_streams(port: int, count: int, message: bytes) -> tuple[dict[str, int], Callable]:
    """``count`` ext_proc streams, each sent ``message`` and kept open: how each ended up
    (answered, or the status it was refused with), and what ends them all."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(4)]
    outcomes: queue.Queue[str] = queue.Queue()
    senders: list[tuple[queue.Queue[bytes | None], grpc.Future]] = []
    for i in range(count):
        requests: queue.Queue[bytes | None] = queue.Queue()
        requests.put(message)
        call = channels[i % len(channels)].stream_stream(PROCESS)(iter(requests.get, None))

        def read(call=call) -> None:
            try:
                next(iter(call))
                outcomes.put("answered")
            except grpc.RpcError as e:
                outcomes.put(e.code().name)

        threading.Thread(target=read, daemon=True).start()
        # Kept: grpcio cancels a call that is garbage collected.
        senders.append((requests, call))

    def close() -> None:
        for requests, _ in senders:
            requests.put(None)
        for channel in channels:
            channel.close()

    seen: dict[str, int] = {}
    try:
        for _ in range(count):
            outcome = outcomes.get(timeout=PATIENCE * 4)
            seen[outcome] = seen.get(outcome, 0) + 1
    except BaseException:
        close()
        raise
    return seen, close


def test_streams_that_keep_large_parts_open_stay_within_the_budget(sc):
    """A server that sends many answers' 2 MB parts and never ends them: each stream holds the
    part twice (tonic's buffer and the event not yet whole). Without the budget 100 such
    streams took the sidecar past its memory limit; with it, those past the budget are refused
    and the sidecar stays within its memory, deciding; what they held comes back when they
    end (a second round fits again)."""
    held_before = held_bytes(sc)
    for _ in range(2):
        seen, close = open_streams(sc.port, 100, list_part(2_000_000))
        try:
            assert seen.get("answered", 0) > 0, seen
            assert seen.get("RESOURCE_EXHAUSTED", 0) > 0, seen
            assert set(seen) <= {"answered", "RESOURCE_EXHAUSTED"}, seen
            held = held_bytes(sc) - held_before
            assert seen["answered"] * 2_000_000 <= held <= BUDGET + HEADROOM, (seen, held)
            assert rss_kib(sc.proc.pid) < MEMORY_LIMIT_KIB
            still_deciding(sc)
        finally:
            close()
        given_back(sc, held_before)


def test_small_calls_go_on_beside_large_ones_up_to_the_headroom(sc):
    """Large messages stop at the budget; small calls (every Check and decision) go on past
    it into a headroom of 96 MiB, so a caller holding large messages cannot keep them out;
    the headroom has an end too, past which small calls are refused as well."""
    request = decider_pb2.DecideRequest(tool="read").SerializeToString()
    with RawGrpc(sc.port) as large:
        for _ in range(BUDGET // 4_000_000 + 2):
            large.send_bytes(large.open(DECIDE), b"\0" + struct.pack(">I", 4_000_000) + b"x")
        large.ping()
        with RawGrpc(sc.port) as other:
            assert other.call(DECIDE, request).get("grpc-status") == "0"
        # Small half-sent calls (50 KB declared) fill the headroom: about 96 MiB of them.
        with RawGrpc(sc.port) as small:
            streams = []
            for _ in range(HEADROOM // 59_000 + 200):
                s = small.open(DECIDE)
                small.send_bytes(s, b"\0" + struct.pack(">I", 50_000) + b"x")
                streams.append(s)
            while len(small.ended) < 100:
                small._read()
            assert all(
                small.answers[s].get("grpc-status") == RESOURCE_EXHAUSTED for s in small.ended
            )
            assert rss_kib(sc.proc.pid) < MEMORY_LIMIT_KIB
    still_deciding(sc)


def test_one_servers_answers_leave_room_for_the_others(sc):
    """An MCP server whose answers mean harm (many 2 MB parts of events that never end, each
    held twice: the stream's buffer and the event) fills its own room, half of what large
    holders get, and no more: its streams past it are ended RESOURCE_EXHAUSTED, while another
    server's answers of the same size are still read. Before rooms, the one server took all
    48 MiB (12 such streams) and the other's were refused."""
    refusals = ("toolgate_grpc_errors_total", {"api": "ext_proc", "status": "RESOURCE_EXHAUSTED"})
    counted = sc.metric(refusals[0], **refusals[1]) or 0
    evil, close_evil = open_streams(sc.port, 30, list_part(2_000_000, server="evil"))
    try:
        assert set(evil) == {"answered", "RESOURCE_EXHAUSTED"}, evil
        assert evil["answered"] <= (BUDGET // 2) // 4_000_000, evil
        # Each stream ended is counted, whichever limit ended it.
        assert sc.metric(refusals[0], **refusals[1]) == counted + evil["RESOURCE_EXHAUSTED"]
        good, close_good = open_streams(sc.port, 3, list_part(2_000_000, server="good"))
        close_good()
        assert good == {"answered": 3}, good
        assert rss_kib(sc.proc.pid) < MEMORY_LIMIT_KIB
        still_deciding(sc)
    finally:
        close_evil()
