"""The rooms of the ext_proc budget (``HeldBytes::room``) bound memory: what an MCP server's
streams hold is forgotten when they end, and no client or server takes the sidecar past its
memory or crashes it.

An outside review of the rooms of commit 96c7c95 (``HeldBytes::room``: each MCP server's
ext_proc streams share half of the large holders' 48 MiB for what they hold that is large),
against a real ``toolgate serve``: an unauthenticated client with the sidecar's gRPC port, or
an MCP server whose answers mean harm, trying to take the sidecar past its memory (256 MiB as
deployed), make the rooms or the budget keep bytes after streams end, make one server's harm
refuse another server's lists, or crash it.

The first two tests failed against 96c7c95 (findings) and pass since: a room is forgotten
when its last exchange leaves, server names past 128 bytes share one room, and a room
counts every holding, small ones too, within half the large holders' limit and the headroom. The
rest are attacks it withstood. Each test that measures memory or fills the whole budget
starts its own sidecar."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from sidecar import Sidecar
from test_sidecar_held import (
    BUDGET,
    MEMORY_LIMIT_KIB,
    POLICY,
    PROCESS,
    ext_proc_message,
    list_part,
    open_streams,
    rss_kib,
    still_deciding,
)

#: A part of 2 MB is held twice (the stream's buffer, the event not yet whole): a room of
#: half the budget holds at most this many such streams.
ROOM_STREAMS = (BUDGET // 2) // 4_000_000


@pytest.fixture
def fresh() -> Iterator[Sidecar]:
    with Sidecar(POLICY) as s:
        yield s


@pytest.fixture(scope="module")
def shared() -> Iterator[Sidecar]:
    with Sidecar(POLICY) as s:
        yield s


def part(size: int, note: dict[str, Any] | None) -> bytes:
    """An ext_proc message carrying ``size`` bytes of an answer's body (an event that does not
    end), with ``note`` as the Check's note in its metadata (none if ``None``)."""
    return ext_proc_message(b"data: " + b" " * (size - 6), note)


def call_note(server: str) -> dict[str, Any]:
    """The Check's note for a ``tools/call`` to ``server``."""
    return {
        "exchange": "tools/call",
        "id": "1",
        "reservation": "0",
        "tool_errors": False,
        "server": server,
    }


def one_stream(channel: grpc.Channel, *messages: bytes) -> list[str]:
    """One ext_proc stream sent ``messages`` and ended: how it was answered (``answered`` for
    each answer, then the status it was ended with, if any)."""
    call = channel.stream_stream(PROCESS)(iter(messages))
    seen = []
    try:
        for _ in call:
            seen.append("answered")
    except grpc.RpcError as e:
        seen.append(e.code().name)
    return seen


def test_long_server_names_are_not_kept_after_their_streams_end(fresh):
    """FINDING (fixed). The table of rooms kept each by its server's name (a copy of the
    note's text) and forgot rooms no stream held only when it reached a power of two of at
    least 64 entries. A client that names, one stream after another, 63 servers with names of nearly
    4 MiB (a gRPC message's most) leaves all 63 names in the table after every stream has
    ended, charged to nothing: about 250 MiB (measured 304 MiB of RSS; the same 63 streams
    naming one long name, or short names with 4 MB bodies, leave 53 to 60 MiB)."""
    with grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as channel:
        for i in range(63):
            server = f"{i:03}" + "s" * 4_100_000
            assert one_stream(channel, list_part(1000, server=server)) == ["answered"]
    assert rss_kib(fresh.proc.pid) < MEMORY_LIMIT_KIB
    still_deciding(fresh)


def test_one_servers_many_small_holdings_leave_room_for_the_others(fresh):
    """FINDING (fixed). A room counted only what is large (over 64 KiB each); an MCP server whose
    answers are events of 58 KB that never end, on many streams (a GET stream per session,
    or lists never finished), holds about 120 KiB per stream (its buffer and its event), all
    of it small: none of it was its room's. 1,500 such streams filled the budget's headroom
    (144 MiB in all, far past the server's room of 24 MiB), and another server's list with a
    200 KB part was then refused RESOURCE_EXHAUSTED ("the sidecar holds as much for its
    callers as it may"): the harm of one server refused another's lists, which rooms were
    to prevent."""
    evil, close = open_streams(fresh.port, 1500, list_part(58_000, server="evil"))
    try:
        assert set(evil) <= {"answered", "RESOURCE_EXHAUSTED"}, evil
        with grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as channel:
            good = one_stream(channel, list_part(200_000, server="good"))
        assert good == ["answered"], (evil, good)
    finally:
        close()


def one_by_one(port: int, count: int, message: bytes) -> dict[str, int]:
    """``count`` ext_proc streams opened one after another, each sent ``message`` and kept
    open until the last has been answered: how they ended up (one at a time, so how many fit
    does not hang on which of them the serving threads read first). All are ended then."""
    seen: dict[str, int] = {}
    closes = []
    try:
        for _ in range(count):
            outcome, close = open_streams(port, 1, message)
            closes.append(close)
            for name, n in outcome.items():
                seen[name] = seen.get(name, 0) + n
    finally:
        for close in closes:
            close()
    return seen


def test_a_servers_room_is_given_back_when_its_streams_end(shared):
    """Withstood. A server fills its room with 2 MB parts of events that never end (4 MB a
    stream: its buffer and the event); those past it are ended RESOURCE_EXHAUSTED. Once the
    streams end (cancelled, as Envoy does when the client goes), the room is whole again: a
    second round holds as many (a leak would keep the count down however many times it is
    asked)."""
    message = list_part(2_000_000, server="leaky")
    first = one_by_one(shared.port, 10, message)
    assert first == {"answered": ROOM_STREAMS, "RESOURCE_EXHAUSTED": 10 - ROOM_STREAMS}, first
    for _ in range(20):
        again = one_by_one(shared.port, 10, message)
        if again == first:
            break
    assert again == first, (first, again)
    still_deciding(shared)


def test_a_later_note_does_not_move_a_stream_out_of_its_servers_room(shared):
    """Withstood. The room is the one the stream's first note names: with "evil"'s room full,
    a stream that names "evil" first and "good" in its next message (a large one) is still
    charged to "evil" and ended; "good"'s own lists are read."""
    evil, close = open_streams(shared.port, 20, list_part(2_000_000, server="evil"))
    try:
        assert "RESOURCE_EXHAUSTED" in evil, evil
        with grpc.insecure_channel(f"127.0.0.1:{shared.port}") as channel:
            moved = one_stream(
                channel,
                list_part(1000, server="evil"),
                list_part(2_000_000, server="good"),
            )
            assert moved[-1] == "RESOURCE_EXHAUSTED", moved
            good = one_stream(channel, list_part(2_000_000, server="good"))
            assert good == ["answered"], good
    finally:
        close()
    still_deciding(shared)


def test_a_servers_calls_and_lists_share_its_room(shared):
    """Withstood. A call's answer is held in its server's room too: a server whose call
    answers (2 MB events that never end) fill its room has its own lists ended, while another
    server's lists are read, and the sidecar goes on deciding."""
    calls, close = open_streams(shared.port, 20, part(2_000_000, call_note("caller")))
    try:
        assert set(calls) == {"answered", "RESOURCE_EXHAUSTED"}, calls
        assert calls["answered"] <= ROOM_STREAMS, calls
        with grpc.insecure_channel(f"127.0.0.1:{shared.port}") as channel:
            own = one_stream(channel, list_part(2_000_000, server="caller"))
            assert own == ["RESOURCE_EXHAUSTED"], own
            other = one_stream(channel, list_part(2_000_000, server="other"))
            assert other == ["answered"], other
        still_deciding(shared)
    finally:
        close()


def test_many_server_names_are_forgotten_once_their_streams_end(fresh):
    """Withstood. 5,000 streams, ten at a time, each naming a server of its
    own: the table of rooms forgets the rooms no stream holds, and the sidecar stays
    within its memory and goes on deciding."""
    with grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as channel:
        stub = channel.stream_stream(PROCESS)
        for i in range(500):
            calls = [stub(iter([list_part(100, server=f"s{i}-{j}")])) for j in range(10)]
            for call in calls:
                assert len(list(call)) == 1
    assert rss_kib(fresh.proc.pid) < MEMORY_LIMIT_KIB
    still_deciding(fresh)
