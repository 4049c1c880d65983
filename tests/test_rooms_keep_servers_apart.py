"""The rooms keep MCP servers apart: one server's harmful answers cannot make toolgate refuse
another server's lists, nor keep the budget after its streams end.

A second outside review of the rooms (``HeldBytes::room``, commits 96c7c95 and e6a1b0b:
each MCP server's ext_proc streams share half of each of the budget's limits), against a
real ``toolgate serve``: an MCP server whose answers mean harm, or a client with the
sidecar's gRPC port, trying to make one server's answers refuse another server's lists,
take the sidecar past its memory (256 MiB as deployed), or keep the budget after streams
end. The angles of tests/test_rooms_bound_memory.py are not repeated.

The first three tests are findings that failed against c1068ce and pass since: what a room
charged a stream was not what the whole budget charges it (the answers it passed on, its
fixed share), and what an exchange keeps of the Check's note was charged to neither. A
room now charges each of a stream's holdings as the budget does, and the note's text is
part of what the exchange holds. The rest are attacks it withstood. Each test that fills
the whole budget or measures memory starts its own sidecar."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2
from sidecar import Sidecar
from test_rooms_bound_memory import ROOM_STREAMS, call_note, one_stream
from test_sidecar_held import (
    MEMORY_LIMIT_KIB,
    POLICY,
    PROCESS,
    ext_proc_message,
    list_part,
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


def body_part(body: bytes, note: dict[str, Any] | None) -> bytes:
    """An ext_proc message carrying ``body`` as a part of an answer's body (not its last),
    with ``note`` as the Check's note in its metadata (none if ``None``)."""
    return ext_proc_message(body, note)


def events(size: int) -> bytes:
    """``size`` bytes of an event stream: one whole event, a server's notification (which a
    list filter passes on as it is, and a call's watcher reads past)."""
    head = (
        b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"d":"'
    )
    tail = b'"}}\n\n'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def get_note(server: str, **caller: str) -> dict[str, Any]:
    """The Check's note for a server's GET stream (a list stream that answers no request)."""
    return {"exchange": "tools/list", "grant_verified": False, "server": server, **caller}


def list_answer(channel: grpc.Channel, message: bytes) -> str | bytes:
    """One ext_proc stream sent ``message`` (and left open until read): the body its answer
    puts in place of the part (``b""``: held until the rest comes), or the status it was
    ended with."""
    call = channel.stream_stream(
        PROCESS, response_deserializer=external_processor_pb2.ProcessingResponse.FromString
    )(iter([message]))
    try:
        for answer in call:
            return answer.response_body.response.body_mutation.body
        return "ENDED"
    except grpc.RpcError as e:
        return e.code().name
    finally:
        call.cancel()


def test_the_answers_a_server_has_passed_on_count_in_its_room(fresh):
    """FINDING (fixed). A stream keeps two buffers: one as large as the largest part it was
    sent (its room is charged it) and one as large as the largest answer it sent (the whole
    budget is charged it, by the gRPC layer, but the room was not). A server whose GET streams carry
    whole events of 4 MB (notifications: the filter passes them on as they are, so each
    answer is as large as its part) fills its room with 6 streams, which hold 48 MB of the
    large holders' 48 MiB: another server's list with a 2 MB part (an event not yet whole,
    held until the rest comes, as with no harm about) is then refused by the filter ("the
    proxy holds as many unfinished answers as it may": a JSON-RPC error event in place of
    the list). The room should charge a stream what the budget charges it for its answers."""
    evil, close = open_streams(fresh.port, 12, body_part(events(4_000_000), get_note("evil")))
    try:
        assert set(evil) == {"answered", "RESOURCE_EXHAUSTED"}, evil
        assert evil["answered"] <= ROOM_STREAMS, evil
        with grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as channel:
            good = list_answer(channel, list_part(2_000_000, server="good"))
        assert good == b"", (evil, good)
    finally:
        close()
    still_deciding(fresh)


def test_a_servers_parts_just_under_64_kib_are_large_to_its_room_as_to_the_budget(fresh):
    """FINDING (fixed). A room charges a stream its buffer past the first 1 KiB (and its unfinished
    message) as one holding; the budget charges the stream's share (6 KiB) and that buffer as
    one. A part of 64,000 bytes is then small to the room (62.9 KB, under 64 KiB: the room's
    large limit never sees it) and large to the budget (69 KB). A server whose call answers
    are whole notifications of 64 KB (a long tool call's progress, which the watcher reads
    past without holding) on 1,300 streams: 726 of them fill the large holders' 48 MiB, the
    rest are refused by the budget (not by the room, which holds 46 MB of small holdings,
    within its 72 MiB), and another server's list with a 70 KB part is refused
    RESOURCE_EXHAUSTED. The room should split a stream's holding as the budget does."""
    evil, close = open_streams(fresh.port, 1300, body_part(events(64_000), call_note("evil")))
    try:
        assert set(evil) <= {"answered", "RESOURCE_EXHAUSTED"}, evil
        with grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as channel:
            good = list_answer(channel, list_part(70_000, server="good"))
        assert good == b"", (evil, good)
    finally:
        close()
    still_deciding(fresh)


def test_what_an_exchange_keeps_of_the_checks_note_is_charged(fresh):
    """FINDING (fixed). A list's exchange keeps the caller the note names (server, grant, session,
    agent: copies of the note's text, which Envoy's Check took from the agent's headers) for
    as long as its stream is open, charged to nothing: not to the budget, which charges the
    message's buffer, nor to the room. 2,700 streams (three servers, so that no room is full)
    whose first message is a note with 57 KB of caller and a 7-byte part: the budget holds
    2,422 of them (each a small holding: its buffer and share), and the sidecar then holds
    the notes' text twice, 327 MB of RSS (182 MB when the same 57 KB are in a namespace the
    sidecar does not keep), past its 256 MiB."""
    caller = {key: key[0] * 19_000 for key in ("grant", "session", "agent")}
    closes = []
    try:
        for server in ("a", "b", "c"):
            seen, close = open_streams(
                fresh.port, 900, body_part(b"data: x", get_note(server, **caller))
            )
            closes.append(close)
            assert set(seen) <= {"answered", "RESOURCE_EXHAUSTED"}, seen
        assert rss_kib(fresh.proc.pid) < MEMORY_LIMIT_KIB
        still_deciding(fresh)
    finally:
        for close in closes:
            close()


def test_a_stream_whose_parts_grow_one_after_another_is_ended_at_its_room(shared):
    """Withstood. A stream opens with a tiny part naming its server, then sends parts of a
    growing event (up to 4 MB, alternating with tiny ones, which leave the largest as it was):
    its room is charged the largest part and the event at each, and the second such stream
    is ended RESOURCE_EXHAUSTED once their room is past 24 MiB; another server's list is read
    meanwhile, and both rooms are whole again after (the same two streams go as far)."""
    sizes = [100, 1_000_000, 100, 2_000_000, 100, 3_000_000, 100, 4_000_000, 100]
    note = get_note("grower")
    parts = [
        body_part(b"data: " + b" " * size, note if i == 0 else None) for i, size in enumerate(sizes)
    ]

    def two_rounds() -> list[list[str]]:
        with grpc.insecure_channel(f"127.0.0.1:{shared.port}") as channel:
            # The first stream, left open, holds 10 MB of event and a 4 MB buffer.
            requests: queue.Queue[bytes | None] = queue.Queue()
            for message in parts:
                requests.put(message)
            first = channel.stream_stream(PROCESS)(iter(requests.get, None))
            answers = iter(first)
            held = []
            for _ in parts:
                next(answers)
                held.append("answered")
            second = one_stream(channel, *parts)
            good = list_answer(channel, list_part(2_000_000, server="good"))
            assert good == b"", good
            requests.put(None)
            first.cancel()
            return [held, second]

    before = two_rounds()
    assert before[0] == ["answered"] * len(parts), before
    assert before[1][-1] == "RESOURCE_EXHAUSTED", before
    for _ in range(20):
        if two_rounds() == before:
            break
    assert two_rounds() == before
    still_deciding(shared)


def test_notes_that_name_no_server_share_one_room(shared):
    """Withstood. A note whose server is missing, empty, or not a string (a number, a list)
    is held in one room (the unnamed server's), not in none and not in one of its own: a
    client cannot step out of the rooms that way (a note that cannot be read at all gets no
    room, and the answer nothing but a refusal). With that room filled by 2 MB parts of
    notes naming no server, a note naming the server 5 is ended, and a named server's list
    is read."""
    evil, close = open_streams(
        shared.port, 20, body_part(b"data: " + b" " * 2_000_000, get_note(""))
    )
    try:
        assert set(evil) == {"answered", "RESOURCE_EXHAUSTED"}, evil
        assert evil["answered"] <= ROOM_STREAMS, evil
        with grpc.insecure_channel(f"127.0.0.1:{shared.port}") as channel:
            for server in (5, [], None):
                note = get_note("x")
                if server is None:
                    del note["server"]
                else:
                    note["server"] = server
                ended = list_answer(channel, body_part(b"data: " + b" " * 2_000_000, note))
                assert ended == "RESOURCE_EXHAUSTED", (server, ended)
            good = list_answer(channel, list_part(2_000_000, server="good"))
            assert good == b"", good
    finally:
        close()
    still_deciding(shared)


def test_one_servers_large_first_parts_at_once_leave_the_sidecar_within_its_memory(fresh):
    """Withstood. 300 streams of one server whose first parts (4 MB each) come at once: each
    is charged to the whole budget as its header arrives and to its room once read, so for a
    moment they count against the whole budget only. Three such waves while another server
    sends lists of 300 KB parts: the server keeps at most its room's streams, the sidecar
    stays within its memory, and after the waves the other server's list is read (no
    assertion on the lists sent during the waves: the docs say one may be refused then;
    none of about 600 was, in each of two runs measured)."""
    stop = threading.Event()
    goods: list[str | bytes] = []

    def other_server() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as channel:
            while not stop.is_set():
                goods.append(list_answer(channel, list_part(300_000, server="good")))

    lists = threading.Thread(target=other_server, daemon=True)
    lists.start()
    try:
        for _ in range(3):
            evil, close = open_streams(fresh.port, 300, list_part(4_000_000, server="evil"))
            close()
            assert set(evil) == {"answered", "RESOURCE_EXHAUSTED"}, evil
            assert evil["answered"] <= ROOM_STREAMS, evil
            assert rss_kib(fresh.proc.pid) < MEMORY_LIMIT_KIB
    finally:
        stop.set()
        lists.join()
    assert goods.count(b"") > 0, goods
    with grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as channel:
        assert list_answer(channel, list_part(300_000, server="good")) == b""
    assert rss_kib(fresh.proc.pid) < MEMORY_LIMIT_KIB
    still_deciding(fresh)
