"""The rooms count everything an exchange holds: on odd paths too, and in streams that step
around their room.

A third outside review of the rooms (``HeldBytes::room``, commits 96c7c95 to 79ee931),
against a real ``toolgate serve``: what an exchange holds that neither its room nor the
budget counts, accounting on odd paths, and streams that step around their room. The angles
of tests/test_rooms_bound_memory.py and tests/test_rooms_keep_servers_apart.py are not repeated.

Tests marked FINDING failed at 12ed045 and pass since: a note's id must read back as the
Check writes it (a string or an integer), its text charged twice (a list's filter answers
under a copy), and a room holds, beside half the large holders' limit, the whole headroom
(the streams Envoy lets open). The rest are attacks it withstood. Each test that measures
memory starts its own sidecar."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from h2_client import RawGrpc, frame
from sidecar import Sidecar
from test_rooms_bound_memory import ROOM_STREAMS, one_stream, part
from test_sidecar_held import (
    MEMORY_LIMIT_KIB,
    POLICY,
    PROCESS,
    open_streams,
    rss_kib,
    still_deciding,
)


@pytest.fixture
def fresh() -> Iterator[Sidecar]:
    with Sidecar(POLICY) as s:
        yield s


@pytest.fixture(scope="module")
def shared() -> Iterator[Sidecar]:
    with Sidecar(POLICY) as s:
        yield s


def array_id(size: int) -> str:
    """A JSON-RPC id of about ``size`` bytes of text: an array of zeros (2 bytes each in the
    note, a 32-byte ``serde_json::Value`` each once read)."""
    return "[" + ",".join(["0"] * (size // 2)) + "]"


def test_an_ids_text_is_charged_but_not_the_values_it_is_read_into(fresh):
    """FINDING (fixed). An exchange is charged the note's text (``note``: the id's bytes
    among them), but kept the id read into a ``serde_json::Value``: an array of zeros takes 2
    bytes a zero as text and 32 (or more, the vector grown by doubling) as values, and a list's
    stream keeps it twice once its filter is made (the id, and the filter's copy it replies
    with). Streams whose notes carry ids of 1.9 MB (each charged about 4 MB: its buffer and
    the note), one per server so no room is full and within the budget's 48 MiB, hold well
    past 256 MiB. What is kept of the id should be charged as it is held (or the id bounded
    when read)."""
    before = rss_kib(fresh.proc.pid)
    streams = []
    for i in range(6):
        note = {"exchange": "tools/list", "grant_verified": False, "server": f"s{i}"}
        note["id"] = array_id(1_900_000)
        streams.append(open_streams(fresh.port, 1, part(100, note)))
    try:
        seen = [s for s, _ in streams]
        used = rss_kib(fresh.proc.pid)
        assert used < MEMORY_LIMIT_KIB, (before, used, seen)
    finally:
        for _, close in streams:
            close()
    still_deciding(fresh)


def get_note(server: str) -> dict[str, object]:
    """The Check's note for a server's GET stream (a list stream that answers no request)."""
    return {"exchange": "tools/list", "grant_verified": False, "server": server}


def test_the_stream_cap_the_headroom_was_sized_for_no_longer_keeps_a_servers_agents_in(fresh):
    """FINDING (fixed). ``HeldBytes::HEADROOM`` is sized so that the shipped Envoy configs'
    cap on open ext_proc streams (20,000, ``toolgate-answers``' circuit breaker) at 6 KiB each
    (117 MiB) fits within what all holders may hold (144 MiB): no number of plain streams Envoy lets
    open can fill it. A room had half (72 MiB), which 12,000 plain streams fill: the shipped
    configs route one server ("example"), and an agent of it that opens 12,500 GET streams
    (a GET per session, held open by the server: no large header, no large answer, nothing
    a server or Envoy refuses) leaves every other agent of that server without its lists,
    where before rooms the same streams left them theirs. A room's small holders should
    have room for what Envoy lets open (or the cap be set to the room)."""
    message = part(100, get_note("example"))
    conns = [RawGrpc(fresh.port) for _ in range(100)]
    try:
        streams = []
        for conn in conns:
            for _ in range(125):
                stream = conn.open(PROCESS)
                conn.send_bytes(stream, frame(message))
                streams.append((conn, stream))
        for conn in conns:
            mine = [s for c, s in streams if c is conn]
            while sum(s in conn.bodies or s in conn.ended for s in mine) < len(mine):
                conn._read()
        refused = sum(s in c.ended for c, s in streams)
        used = rss_kib(fresh.proc.pid)
        # The budget itself has room (before rooms, the victim's list was read)...
        other, close = open_streams(fresh.port, 1, part(100, get_note("other")))
        close()
        assert other == {"answered": 1}, (refused, other)
        # ...but the server's own agents are refused.
        victim, close = open_streams(fresh.port, 1, message)
        close()
        assert victim == {"answered": 1}, (refused, used, victim)
        assert used < MEMORY_LIMIT_KIB
    finally:
        for conn in conns:
            conn.sock.close()
    still_deciding(fresh)


def test_streams_ended_by_a_message_that_cannot_be_read_give_their_room_back(shared):
    """Withstood. A stream charged to its room (a 2 MB part of an event not yet whole) whose
    next message is not a protobuf the codec can read ends with the codec's error, not
    through the exchange's own end: 30 such streams, five times a room's worth, and the room
    still holds as many streams of 2 MB parts as it did (nothing of theirs kept)."""
    note = get_note("garbled")
    with grpc.insecure_channel(f"127.0.0.1:{shared.port}") as channel:
        for _ in range(30):
            seen = one_stream(channel, part(2_000_000, note), b"\xff\xff\xff")
            assert seen[-1] != "RESOURCE_EXHAUSTED", seen
    held, close = open_streams(shared.port, ROOM_STREAMS, part(2_000_000, note))
    close()
    assert held == {"answered": ROOM_STREAMS}, held
    still_deciding(shared)
