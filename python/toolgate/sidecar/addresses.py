"""Addresses given on the command line: ``HOST:PORT`` (``[IPv6]:PORT``) and ``unix:PATH``.

Checked when the command line is read, so a mistyped address is an error naming the option,
never a server bound somewhere else (grpcio, given port 99999, binds 99999 mod 65536).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Callable

#: One DNS label (RFC 1123): letters, digits and inner hyphens, at most 63 characters.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")

FORMS = "HOST:PORT"
#: The longest path a unix socket can be bound or connected at.
UNIX_PATH_MAX = 107


def _check_host(host: str, text: str) -> str:
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"expected {FORMS}, got {text!r}: no ']' after the IPv6 address")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host[1:-1]!r} in {text!r} is not an IPv6 address") from None
        return host[1:-1]
    if ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets, [{host}]:PORT; got {text!r}")
    labels = host.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        # Digits and dots only: this is meant as an IPv4 address, so it must be one.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv4 address") from None
        return host
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{host!r} in {text!r} is neither an IP address nor a host name")
    return host


def parse_host_port(
    text: str, *, allow_port_zero: bool = False, forms: str = FORMS
) -> tuple[str, int]:
    """``127.0.0.1:9464``, ``[::1]:9464`` or ``localhost:9464`` → (host, port). ValueError,
    naming what is wrong, for anything else; port 0 (the system picks one) only if allowed.
    ``forms``: what the message says is expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected {forms}, got {text!r}")
    host = _check_host(host, text)
    lowest = 0 if allow_port_zero else 1
    if not _PORT.fullmatch(port) or not lowest <= int(port) <= 65535:
        raise ValueError(f"the port must be {lowest}-65535, got {port!r} in {text!r}")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """(host, port) → ``127.0.0.1:9464`` or ``[::1]:9464``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bound_address(listen: str, port: int) -> str:
    """The address a server given ``listen`` (port 0: any free one) is bound to, ``port``
    being the one it got; a ``unix:`` address as it is."""
    if listen.startswith("unix:"):
        return listen
    host, _ = parse_host_port(listen, allow_port_zero=True)
    return join_host_port(host, port)


def _unix_path(text: str) -> str | None:
    """The path of ``unix:PATH`` (None if ``text`` is not one); ValueError for an empty one."""
    if not text.startswith("unix:"):
        return None
    path = text.removeprefix("unix:")
    if not path or "\0" in path:
        raise ValueError(f"unix: needs a socket path, got {text!r}")
    # A socket's address holds 108 bytes with the NUL that ends it (sockaddr_un on Linux).
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ValueError(
            f"a unix socket path is at most {UNIX_PATH_MAX} bytes, got "
            f"{len(os.fsencode(path))}: {text!r}"
        )
    return path


def _argument_type(check: Callable[[str], None]) -> Callable[[str], str]:
    """An argparse ``type=``: the text itself if ``check`` passes, else argparse's error."""

    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    return parse


def check_listen(text: str) -> None:
    """Where a server listens: HOST:PORT (port 0: any free port) or unix:PATH."""
    if _unix_path(text) is None:
        parse_host_port(text, allow_port_zero=True, forms=f"{FORMS} or unix:PATH")


def check_tcp_listen(text: str) -> None:
    """Where an HTTP server listens: HOST:PORT only."""
    if text.startswith("unix:"):
        raise ValueError(f"a unix socket is not supported here, got {text!r}; give {FORMS}")
    parse_host_port(text, allow_port_zero=True)


def check_target(text: str) -> None:
    """Where a client connects: HOST:PORT (a port from 1) or unix:PATH."""
    if _unix_path(text) is None:
        parse_host_port(text, forms=f"{FORMS} or unix:PATH")


#: argparse ``type=`` for each kind of address: the text itself, or an error for argparse.
listen_address = _argument_type(check_listen)
target_address = _argument_type(check_target)


def metrics_address(text: str) -> str:
    """``--metrics-listen``: HOST:PORT, or ``off``."""
    if text == "off":
        return text
    return _argument_type(check_tcp_listen)(text)
