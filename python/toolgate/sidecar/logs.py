"""Logging for the sidecar: plain text or JSON lines, each record with the policy revision.

A record can hold text from agents or callers (a tool name, an approval's reason, an error
quoting a request), so either format is inert: a person reading the log in a terminal sees
control, format and separator characters escaped, never acted on, and one record never
passes for two.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

from toolgate._core import inert


class _RevisionFilter(logging.Filter):
    def __init__(self, revision: Callable[[], str]) -> None:
        super().__init__()
        self._revision = revision

    def filter(self, record: logging.LogRecord) -> bool:
        record.revision = self._revision()
        return True


class InertTextFormatter(logging.Formatter):
    """A line per record, its message written inert (``toolgate._core.inert``); a traceback
    follows on lines of its own, each inert and marked ``  | `` so none passes for a record."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = inert(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        stack = self.formatStack(record.stack_info) if record.stack_info else None
        for more in (record.exc_text, stack):
            if more:
                line += "".join(f"\n  | {inert(part)}" for part in more.split("\n"))
        return line


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, revision (and exc if any). ASCII
    only: every character beyond it, and every control character, is a ``\\u`` escape."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "revision": getattr(record, "revision", None),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # json.dumps escapes what is not ASCII and C0 controls, but writes DEL as it is.
        return json.dumps(entry).replace("\x7f", "\\u007f")


def configure(fmt: str, level: str, revision: Callable[[], str]) -> None:
    """Send toolgate's logs to stderr as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RevisionFilter(revision))
    if fmt == "json":
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(
            InertTextFormatter("%(asctime)s %(levelname)s %(name)s [rev %(revision)s] %(message)s")
        )
    root = logging.getLogger("toolgate")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
