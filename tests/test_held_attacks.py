"""An unauthenticated client with the sidecar's gRPC port, trying to take it past its memory
(256 MiB as deployed), crash it, stall it, or make it keep the budget (``HeldBytes``: 48 MiB,
and 96 MiB more for small holders) after the client has gone. Each test asserts what should
hold; the three memory tests failed before the review that wrote them (a unary call charged
6 KiB where it takes 9.3, answers never taken not charged at all, large messages given 128
MiB of room where the allocator keeps what they free), and pass since.

Each test that measures memory starts its own sidecar: the allocator keeps what a process
once took, so VmRSS after one attack says little about the next."""

from __future__ import annotations

import selectors
import struct
from collections.abc import Iterator

import pytest
from h2_client import RawGrpc, frame
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)
from sidecar import PATIENCE, Sidecar
from test_sidecar_held import (
    BUDGET,
    DECIDE,
    MEMORY_LIMIT_KIB,
    POLICY,
    PROCESS,
    RESOURCE_EXHAUSTED,
    given_back,
    half_sent,
    held_bytes,
    rss_kib,
    still_deciding,
)
from toolgate.v1 import decider_pb2

REQUEST = decider_pb2.DecideRequest(tool="read").SerializeToString()
#: h2's error code for a peer that resets streams too fast.
ENHANCE_YOUR_CALM = 11


@pytest.fixture
def fresh() -> Iterator[Sidecar]:
    with Sidecar(POLICY) as s:
        yield s


@pytest.fixture(scope="module")
def shared() -> Iterator[Sidecar]:
    with Sidecar(POLICY) as s:
        yield s


def connect(port: int, window: int | None = None) -> RawGrpc:
    """A raw connection whose SETTINGS exchange is done (so the server's 1 MiB windows are in
    force), with an initial stream window of ``window`` for the server's answers if given."""
    conn = RawGrpc(port)
    if window is not None:
        conn.sock.sendall(
            SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: window}).serialize()
        )
    conn.ping()
    return conn


def headers(conn: RawGrpc, stream: int, path: str, end_headers: bool = True) -> bytes:
    block = conn.encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    return HeadersFrame(stream, block, flags=["END_HEADERS"] if end_headers else []).serialize()


def open_many(conn: RawGrpc, count: int, each: bytes = b"") -> list[int]:
    """``count`` Decide calls on ``conn``: each its headers and, if ``each`` is given, that as
    its one DATA frame with END_STREAM; written in batches, returns the streams once the server
    has read them all."""
    streams, out = [], b""
    for _ in range(count):
        stream, conn.next_stream = conn.next_stream, conn.next_stream + 2
        out += headers(conn, stream, DECIDE)
        if each:
            out += DataFrame(stream, each, flags=["END_STREAM"]).serialize()
        streams.append(stream)
        if len(out) > 1 << 16:
            conn.sock.sendall(out)
            out = b""
    conn.sock.sendall(out)
    conn.ping()
    return streams


def settled_rss(sidecar: Sidecar, conn: RawGrpc) -> int:
    """VmRSS once the server has taken up what it was sent (hyper opens the calls h2 has
    read on its own time): the most seen over a few quiet reads."""
    most = 0
    for _ in range(4):
        read_for(conn, 0.5)
        most = max(most, rss_kib(sidecar.proc.pid))
    return most


def read_all(conns: list[RawGrpc], quiet: float) -> None:
    """Read (and record) what the server sends on any of ``conns`` until none of them has
    sent anything for ``quiet`` seconds: one wait over every socket, not one per socket."""
    selector = selectors.DefaultSelector()
    for conn in conns:
        # A frame whose first bytes came is read whole (the server writes whole frames).
        conn.sock.settimeout(PATIENCE)
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    try:
        while events := selector.select(quiet):
            for key, _ in events:
                conn = key.data
                conn._read()
                # Frames already buffered are read too: the socket will not show them.
                while len(conn._buffer) >= 9:
                    conn._read()
    finally:
        selector.close()


def read_for(conn: RawGrpc, seconds: float) -> None:
    """Read (and record) what the server sends for ``seconds`` of quiet."""
    conn.sock.settimeout(seconds)
    try:
        while True:
            conn._read()
    except TimeoutError:
        pass


def test_headers_only_calls_stay_within_memory(fresh):
    """Headers and no message: each call is charged its fixed share and nothing else."""
    with connect(fresh.port) as conn:
        open_many(conn, 26_000)
        rss = settled_rss(fresh, conn)
        assert fresh.alive, fresh.stderr
        assert rss < MEMORY_LIMIT_KIB, f"{rss >> 10} MiB"


def test_unary_answers_never_read_stay_within_memory(fresh):
    """Complete Decide calls (headers, the message, END_STREAM) with a window of 0 for their
    answers: each answer waits for a WINDOW_UPDATE that never comes."""
    with connect(fresh.port, window=0) as conn:
        open_many(conn, 50_000, frame(REQUEST))
        rss = settled_rss(fresh, conn)
        assert fresh.alive, fresh.stderr
        assert rss < MEMORY_LIMIT_KIB, f"{rss >> 10} MiB"


def test_bad_message_headers_get_a_clear_error_and_hold_nothing(shared):
    """Declared lengths past the 4 MiB limit (up to 0xFFFFFFFF, which the budget is charged
    for a moment and refuses) and the compressed or an invalid flag: each call gets an error
    at once, and the budget is whole afterwards (as many 4 MB half-sent calls fit)."""
    expected = {
        (0, 5 << 20): RESOURCE_EXHAUSTED,  # tonic: decoded message length too large
        (0, (4 << 20) + 1): RESOURCE_EXHAUSTED,
        (0, 0xFFFFFFFF): RESOURCE_EXHAUSTED,  # the budget
        (1, 100): "13",  # compressed, no compression negotiated
        (2, 100): "13",
        (0xFF, 5 << 20): "13",
        (1, 0xFFFFFFFF): RESOURCE_EXHAUSTED,
    }
    with connect(shared.port) as conn:
        for (flag, length), status in expected.items():
            stream = conn.open(DECIDE)
            conn.send_bytes(stream, bytes([flag]) + struct.pack(">I", length) + b"x")
            assert conn.wait(stream).get("grpc-status") == status, (flag, length)
    still_deciding(shared)
    with RawGrpc(shared.port) as conn:
        _, held = half_sent(conn, 40, 4_000_000)
    assert len(held) >= BUDGET // 4_000_000 - 1, len(held)


def test_streams_reset_right_after_a_large_header_give_the_budget_back(shared):
    """Reset at once after declaring 3 MB, thousands of times: h2 ends the connection with
    ENHANCE_YOUR_CALM (rapid reset), and whatever the calls were charged comes back."""
    before = held_bytes(shared)
    for _ in range(3):
        conn = connect(shared.port)
        out = b""
        for _ in range(2000):
            stream, conn.next_stream = conn.next_stream, conn.next_stream + 2
            out += headers(conn, stream, DECIDE)
            out += DataFrame(stream, b"\0" + struct.pack(">I", 3_000_000) + b"x").serialize()
            out += RstStreamFrame(stream, error_code=8).serialize()
        try:
            conn.sock.sendall(out)
            read_for(conn, 2)
        except OSError:
            pass
        conn.sock.close()
        assert conn.goaways and conn.goaways[0][1] == ENHANCE_YOUR_CALM, conn.goaways
    given_back(shared, before)
    still_deciding(shared)
    with RawGrpc(shared.port) as conn:
        _, held = half_sent(conn, 40, 4_000_000)
    assert len(held) >= BUDGET // 4_000_000 - 1, len(held)


def test_a_header_block_that_never_ends_is_refused(shared):
    """CONTINUATION frames, 16 KB each, never END_HEADERS: the connection is closed once the
    block passes the 16 KiB header list limit, not buffered."""
    conn = connect(shared.port)
    sent = 0
    with pytest.raises(OSError):
        conn.sock.sendall(headers(conn, 1, DECIDE, end_headers=False))
        for _ in range(2000):  # 32 MB if it were all taken
            literal = b"\x40\x0aaaaaaaaaaa\x7f\x81\x7f" + b"z" * 16_000
            conn.sock.sendall(ContinuationFrame(1, literal).serialize())
            sent += 1
        read_for(conn, 2)
        conn._read()
    conn.sock.close()
    # Sent before the close was seen: what the kernel's buffers took while a busy sidecar had
    # not read yet (164 frames on a loaded machine), far from the 2000 a buffering one takes.
    assert sent < 1000, sent
    still_deciding(shared)
    assert rss_kib(shared.proc.pid) < MEMORY_LIMIT_KIB


def test_a_ping_flood_whose_acks_are_never_read_is_bounded(shared):
    """300,000 PINGs, no ACK read: the server stops reading the connection when its answers
    back up (TCP), rather than queueing them."""
    before = rss_kib(shared.proc.pid)
    conn = connect(shared.port)
    conn.sock.settimeout(5)
    try:
        for _ in range(300):
            conn.sock.sendall(PingFrame(0, b"12345678").serialize() * 1000)
    except OSError:
        pass  # blocked (the server stopped reading) or closed: either bounds it
    still_deciding(shared)
    assert rss_kib(shared.proc.pid) - before < 32 << 10
    conn.sock.close()


def ext_proc_wave(sidecar: Sidecar, connections: int = 300) -> tuple[int, int]:
    """``connections`` connections, each an ext_proc stream with a window of 0 for its answers,
    sent a message that is answered and then 1 MiB of another; returns (streams held, VmRSS in
    KiB with them all open), checking that those not held were refused RESOURCE_EXHAUSTED and
    that the sidecar decides meanwhile; closes them all."""
    conns = []
    size = (1 << 20) - 1024
    data = frame(b"\x12\x00") + b"\0" + struct.pack(">I", size - 5) + bytes(size - 5)
    try:
        for _ in range(connections):
            conn = connect(sidecar.port, window=0)
            stream = conn.open(PROCESS)
            conn.sock.sendall(
                b"".join(
                    DataFrame(stream, data[i : i + 16384]).serialize()
                    for i in range(0, len(data), 16384)
                )
            )
            conns.append(conn)
        for conn in conns:
            conn.ping()
        rss = rss_kib(sidecar.proc.pid)
        still_deciding(sidecar)
        held = 0
        # A held stream is answered nothing (its answer cannot go out); a refusal may come
        # late on a busy machine: read until the server has been quiet for a while.
        read_all(conns, 2)
        for conn in conns:
            status = conn.answers.get(1, {}).get("grpc-status")
            assert status in (None, RESOURCE_EXHAUSTED), conn.answers
            held += status is None
        return held, rss
    finally:
        for conn in conns:
            conn.sock.close()


def test_ext_proc_streams_whose_answers_cannot_go_out_give_the_budget_back(shared):
    """The large messages such streams are sent are charged and those past the budget refused
    (about 45 of 300 held); closing the connections gives it all back: a second wave holds as
    many, and the sidecar decides throughout."""
    first, _ = ext_proc_wave(shared)
    assert 0 < first <= BUDGET >> 20
    second, _ = ext_proc_wave(shared)
    assert second >= first - 2, (first, second)
    still_deciding(shared)


def test_ext_proc_streams_whose_answers_cannot_go_out_stay_within_memory(fresh):
    """Three waves of the attack above, one after the other: the sidecar should stay within
    its memory through all of them."""
    for _ in range(3):
        _, rss = ext_proc_wave(fresh)
        assert fresh.alive, fresh.stderr
        assert rss < MEMORY_LIMIT_KIB, f"{rss >> 10} MiB"
