"""Telling approvers about new pending approvals: a webhook POSTed for each, signed, retried
with backoff, never in a decision's way (it follows the approvals store from its own thread,
in the process that serves the admin listener).

The body is JSON (``format="json"``), or Slack-compatible (``format="slack"``: ``{"text":
...}``, which Slack's and Mattermost's incoming webhooks accept). With a secret, each
request carries ``X-Toolgate-Timestamp`` (Unix seconds) and ``X-Toolgate-Signature:
v1=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>`` under the secret: a receiver checks
it, and refuses old timestamps so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from toolgate.approvals import ApprovalStore, Row

log = logging.getLogger("toolgate.webhook")

FORMATS = ("json", "slack")

#: Seconds before each retry of a failed delivery; given up after the last.
BACKOFF = (1, 2, 4, 8, 16, 32, 60, 60)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def payload(row: Row, now_ms: int, fmt: str, admin: str) -> bytes:
    if fmt == "slack":
        who = row.agent or row.grant or "an agent"
        text = (
            f"Approval needed: {who} wants to call `{row.tool}`"
            f"{f' on {row.server}' if row.server else ''} with `{row.arguments}`"
            f" ({row.rule}). `toolgate approvals --target {admin} approve {row.id}`"
            f" or `deny {row.id}`; it lapses in {max(0, row.deadline_ms - now_ms) // 1000} s."
        )
        return json.dumps({"text": text}).encode()
    body = {"type": "approval.opened", "approval": row.to_dict(now_ms)}
    return json.dumps(body, sort_keys=True).encode()


@dataclass
class DeliveryCounts:
    """Webhook deliveries by result: ``ok``, ``retried`` (one failed attempt), ``failed``
    (given up)."""

    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "retried": 0, "failed": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, result: str) -> None:
        with self.lock:
            self.counts[result] += 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


class Notifier:
    """Follows the store's changes and POSTs a webhook for each approval opened."""

    def __init__(
        self,
        store: ApprovalStore,
        url: str,
        *,
        secret: bytes | None,
        fmt: str = "json",
        admin: str = "127.0.0.1:50052",
        counts: DeliveryCounts | None = None,
        now_ms: Callable[[], int] | None = None,
        poll: float = 0.2,
        backoff: tuple[float, ...] = BACKOFF,
        timeout: float = 5.0,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"webhook format must be one of {', '.join(FORMATS)}")
        self._store = store
        self._url = url
        self._secret = secret
        self._fmt = fmt
        self._admin = admin
        self.counts = counts or DeliveryCounts()
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._poll = poll
        self._backoff = backoff
        self._timeout = timeout
        # Only approvals opened from now on: those before were announced by an earlier run.
        self._seq = store.last_change()
        # (due, order, attempt, id): deliveries waiting for their time.
        self._queue: list[tuple[float, int, int, str]] = []
        self._order = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="approval-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=self._timeout + 5)

    def _schedule(self, due: float, attempt: int, id: str) -> None:
        self._order += 1
        heapq.heappush(self._queue, (due, self._order, attempt, id))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for seq, id, kind in self._store.changes_after(self._seq):
                    self._seq = seq
                    if kind == "opened":
                        self._schedule(time.monotonic(), 0, id)
                while self._queue and self._queue[0][0] <= time.monotonic():
                    _, _, attempt, id = heapq.heappop(self._queue)
                    self._deliver(id, attempt)
            except Exception:  # a store or network error must not end the thread
                log.exception("approval webhook")
            self._stop.wait(self._poll)

    def _deliver(self, id: str, attempt: int) -> None:
        row = self._store.get(id)
        if row is None or row.state(self._now_ms()) != "PENDING":
            return  # decided or lapsed meanwhile: nothing to ask anymore
        body = payload(row, self._now_ms(), self._fmt, self._admin)
        headers = {"Content-Type": "application/json", "User-Agent": "toolgate"}
        if self._secret is not None:
            timestamp = str(int(time.time()))
            headers["X-Toolgate-Timestamp"] = timestamp
            headers["X-Toolgate-Signature"] = signature(self._secret, timestamp, body)
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read()
            self.counts.add("ok")
            return
        except (urllib.error.URLError, OSError, ValueError) as err:
            failure = err
        if attempt < len(self._backoff):
            self.counts.add("retried")
            log.warning(
                "approval webhook for %s failed (%s); retrying in %s s",
                id,
                failure,
                self._backoff[attempt],
            )
            self._schedule(time.monotonic() + self._backoff[attempt], attempt + 1, id)
        else:
            self.counts.add("failed")
            log.error("approval webhook for %s failed %d times; giving up", id, attempt + 1)
