"""Telling approvers about new pending approvals: a webhook POSTed for each, signed, retried
with backoff, never in a decision's way (it follows the approvals store from its own thread,
in the process that serves the admin listener).

The body is JSON (``format="json"``), or Slack-compatible (``format="slack"``: ``{"text":
...}``, which Slack's and Mattermost's incoming webhooks accept). With a secret, each
request carries ``X-Toolgate-Timestamp`` (Unix seconds) and ``X-Toolgate-Signature:
v1=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>`` under the secret: a receiver checks
it, and refuses old timestamps so a captured request cannot be replayed.

Text an agent chose is inert in both: control and format characters escaped
(``toolgate._core.inert``; in the JSON body's arguments as JSON escapes, so they stay the
same JSON); in Slack's mrkdwn also ``&``, ``<`` and ``>`` as entities, inside
code spans that the text cannot close, so no mention, link or formatting comes from an agent.

A flood of approvals cannot hold back another caller's: ``workers`` threads deliver at once,
taking first attempts before retries and, among first attempts, one grant's at a time in
turn (``FairQueue``).
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
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from toolgate._core import inert, inert_json
from toolgate.sidecar.approvals.rows import Row
from toolgate.sidecar.approvals.store import ApprovalStore
from toolgate.sidecar.background import Background

log = logging.getLogger("toolgate.webhook")

FORMATS = ("json", "slack")

#: Seconds before each retry of a failed delivery; given up after the last.
BACKOFF = (1, 2, 4, 8, 16, 32, 60, 60)

#: Fields of an approval an agent chose, besides its arguments (the rest is the policy's or
#: toolgate's own).
AGENT_TEXT = ("server", "tool", "session", "agent")


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def slack_code(text: str) -> str:
    """``text`` as a Slack mrkdwn code span that shows it and nothing else: inert, ``&``
    ``<`` ``>`` as the entities Slack asks for (so no ``<!channel>`` mention or
    ``<url|label>`` link), and backticks made look-alikes that cannot close the span."""
    shown = inert(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`" + (shown.replace("`", "\u02cb") or " ") + "`"


def payload(row: Row, now_ms: int, fmt: str, admin: str) -> bytes:
    lapses_s = max(0, row.deadline_ms - now_ms) // 1000
    if fmt == "slack":
        who = slack_code(row.agent or row.grant or "an agent")
        on = f" on {slack_code(row.server)}" if row.server else ""
        cut = " (cut)" if row.arguments_cut else ""
        text = (
            f"Approval needed: {who} wants to call {slack_code(row.tool)}{on}"
            f" with {slack_code(row.arguments)}{cut} ({slack_code(row.rule)})."
            f" {slack_code(f'toolgate approvals --target {admin} approve {row.id}')}"
            f" or {slack_code(f'deny {row.id}')}; it lapses in {lapses_s} s."
        )
        return json.dumps({"text": text}).encode()
    approval = row.to_dict(now_ms)
    for name in AGENT_TEXT:
        if approval[name] is not None:
            approval[name] = inert(approval[name])
    # The arguments stay the JSON they are (when not cut), their unsafe characters escaped
    # the JSON way.
    approval["arguments"] = inert_json(row.arguments)
    body = {"type": "approval.opened", "approval": approval}
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


@dataclass(order=True)
class _Retry:
    due: float
    order: int
    attempt: int = field(compare=False)
    id: str = field(compare=False)


class FairQueue:
    """Deliveries waiting for a worker: first attempts before retries that are due, and
    among first attempts one per grant in turn, so a grant's own backlog delays only
    itself. ``take`` waits for one (None once closed)."""

    def __init__(self) -> None:
        self._first: OrderedDict[str | None, deque[str]] = OrderedDict()
        self._retries: list[_Retry] = []
        self._order = 0
        self._closed = False
        self._ready = threading.Condition()

    def put(self, grant: str | None, id: str) -> None:
        with self._ready:
            self._first.setdefault(grant, deque()).append(id)
            self._ready.notify()

    def retry(self, due: float, attempt: int, id: str) -> None:
        with self._ready:
            self._order += 1
            heapq.heappush(self._retries, _Retry(due, self._order, attempt, id))
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def take(self) -> tuple[int, str] | None:
        """``(attempt, id)`` of the next delivery."""
        with self._ready:
            while not self._closed:
                if self._first:
                    # The grant first in turn gives one, then waits behind the others.
                    grant, ids = next(iter(self._first.items()))
                    id = ids.popleft()
                    del self._first[grant]
                    if ids:
                        self._first[grant] = ids
                    return 0, id
                wait = None
                if self._retries:
                    wait = self._retries[0].due - time.monotonic()
                    if wait <= 0:
                        r = heapq.heappop(self._retries)
                        return r.attempt, r.id
                self._ready.wait(wait)
            return None

    def __len__(self) -> int:
        with self._ready:
            return sum(map(len, self._first.values())) + len(self._retries)


class Notifier:
    """Follows the store's changes and POSTs a webhook for each approval opened, from
    ``workers`` threads taking deliveries from a ``FairQueue``."""

    def __init__(
        self,
        store: ApprovalStore,
        url: str,
        *,
        secret: bytes | None,
        fmt: str,
        admin: str,
        counts: DeliveryCounts | None = None,
        now_ms: Callable[[], int] | None = None,
        poll: float = 0.2,
        backoff: tuple[float, ...] = BACKOFF,
        timeout: float,
        workers: int,
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
        self._backoff = backoff
        self._timeout = timeout
        # Only approvals opened from now on: those before were announced by an earlier run.
        self._seq = store.last_change()
        self.queue = FairQueue()
        self._follower = Background("approval-webhook", self._follow, poll, log, "approval webhook")
        self._workers = [
            threading.Thread(target=self._work, name=f"approval-webhook-{n}", daemon=True)
            for n in range(max(1, workers))
        ]

    def start(self) -> None:
        self._follower.start()
        for thread in self._workers:
            thread.start()

    def stop(self) -> None:
        self._follower.stop()
        self.queue.close()
        for thread in self._workers:
            if thread.ident is not None:  # started
                thread.join(timeout=self._timeout + 5)

    def _follow(self) -> None:
        """Queue a delivery for each approval opened since the last look."""
        for seq, id, kind in self._store.changes_after(self._seq):
            self._seq = seq
            if kind == "opened":
                row = self._store.get(id)
                if row is not None:
                    self.queue.put(row.grant, id)

    def _work(self) -> None:
        while (job := self.queue.take()) is not None:
            attempt, id = job
            try:
                self._deliver(id, attempt)
            except Exception:  # a store or network error must not end the thread
                log.exception("approval webhook")

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
                response.read(1 << 16)  # the answer's body means nothing here
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
            self.queue.retry(time.monotonic() + self._backoff[attempt], attempt + 1, id)
        else:
            self.counts.add("failed")
            log.error("approval webhook for %s failed %d times; giving up", id, attempt + 1)
