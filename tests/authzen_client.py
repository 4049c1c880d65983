"""Talking to a sidecar's AuthZEN listener (``--authzen-listen``) over plain HTTP."""

from __future__ import annotations

import http.client
import json
import re
from typing import Any

from sidecar import Sidecar, wait_for


def authzen_address(sc: Sidecar) -> str:
    """The listener's address, as the sidecar logs it."""
    found = wait_for(lambda: re.search(r"AuthZEN .* on (\S+)", sc.stderr))
    return found.group(1)


def send(
    address: str,
    method: str,
    path: str,
    body: bytes | str | Any | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request; the status, the headers (lower-case names) and the body read as JSON."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    sent = {"content-type": "application/json"} if body is not None else {}
    sent.update(headers or {})
    connection.request(method, path, body=body, headers=sent)
    answer = connection.getresponse()
    data = answer.read()
    connection.close()
    received = {k.lower(): v for k, v in answer.getheaders()}
    return answer.status, received, json.loads(data) if data else None
