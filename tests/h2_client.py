"""gRPC over a raw HTTP/2 connection, frame by frame: for tests that need what a gRPC client
library hides (any header, such as ``grpc-timeout``; a call held open with its message still
to come; the GOAWAY frames a server sends as it stops, after which a call already open may
still send its message, which an HTTP/2 state machine such as h2's would refuse)."""

from __future__ import annotations

import socket
import struct

import hpack
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)
from sidecar import PATIENCE

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return b"\0" + struct.pack(">I", len(message)) + message


class RawGrpc:
    """One HTTP/2 connection to a gRPC server on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.next_stream = 1
        self.answers: dict[int, dict[str, str]] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        # (last stream id, error code) of each GOAWAY, in order.
        self.goaways: list[tuple[int, int]] = []
        self._buffer = b""
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def __enter__(self) -> RawGrpc:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def open(
        self, path: str, headers: list[tuple[str, str]] = (), message: bytes | None = None
    ) -> int:
        """Send a call's headers and, if given, its one message in the same write (else the
        call stays open, its message to come); returns its stream."""
        stream, self.next_stream = self.next_stream, self.next_stream + 2
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", f"127.0.0.1:{self.port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *headers,
            ]
        )
        out = HeadersFrame(stream, block, flags=["END_HEADERS"]).serialize()
        if message is not None:
            out += DataFrame(stream, frame(message), flags=["END_STREAM"]).serialize()
        self.sock.sendall(out)
        return stream

    def send(self, stream: int, message: bytes) -> None:
        """Send the call's one message and end the request."""
        self.sock.sendall(DataFrame(stream, frame(message), flags=["END_STREAM"]).serialize())

    def send_bytes(self, stream: int, data: bytes) -> None:
        """Send ``data`` on the call as it is (part of a message, say), the request left open."""
        self.sock.sendall(DataFrame(stream, data).serialize())

    def ping(self) -> None:
        """Return once the server has acknowledged a PING: frames are read in order, so by
        then it has read every frame sent before it (a call's headers: the call is open)."""
        payload = b"tg-probe"
        self.sock.sendall(PingFrame(0, payload).serialize())
        while True:
            f = self._read()
            if isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == payload:
                return

    def call(self, path: str, message: bytes, headers: list[tuple[str, str]] = ()) -> dict:
        """One unary call; its response headers and trailers merged."""
        return self.wait(self.open(path, headers, message))

    def wait(self, stream: int) -> dict[str, str]:
        """Read until the call on ``stream`` ends (or is reset); its response headers and
        trailers merged."""
        while stream not in self.ended:
            self._read()
        return self.answers.get(stream, {})

    def wait_goaway(self, last_below: int = 2**31 - 1) -> tuple[int, int]:
        """Read until a GOAWAY whose last stream is below ``last_below``; it."""
        while not any(last < last_below for last, _ in self.goaways):
            self._read()
        return next(g for g in self.goaways if g[0] < last_below)

    def _read(self) -> Frame:
        head = self._recv(9)
        f, length = Frame.parse_frame_header(memoryview(head))
        f.parse_body(memoryview(self._recv(length)))
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(f, PingFrame) and "ACK" not in f.flags:
            self.sock.sendall(PingFrame(0, f.opaque_data, flags=["ACK"]).serialize())
        elif isinstance(f, HeadersFrame):
            self.answers.setdefault(f.stream_id, {}).update(
                (k.decode(), v.decode()) for k, v in self.decoder.decode(f.data, raw=True)
            )
        elif isinstance(f, DataFrame):
            # Answers here are small: the initial flow-control window holds them.
            self.bodies[f.stream_id] = self.bodies.get(f.stream_id, b"") + f.data
        elif isinstance(f, RstStreamFrame):
            self.resets[f.stream_id] = f.error_code
            self.ended.add(f.stream_id)
        elif isinstance(f, GoAwayFrame):
            self.goaways.append((f.last_stream_id, f.error_code))
        if "END_STREAM" in f.flags:
            self.ended.add(f.stream_id)
        return f

    def _recv(self, n: int) -> bytes:
        while len(self._buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._buffer += data
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out
