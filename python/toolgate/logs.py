"""Logging for the sidecar: plain text or JSON lines, each record with the policy revision."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable


class _RevisionFilter(logging.Filter):
    def __init__(self, revision: Callable[[], str]) -> None:
        super().__init__()
        self._revision = revision

    def filter(self, record: logging.LogRecord) -> bool:
        record.revision = self._revision()
        return True


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, revision (and exc if any)."""

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
        return json.dumps(entry)


def configure(fmt: str, level: str, revision: Callable[[], str]) -> None:
    """Send toolgate's logs to stderr as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RevisionFilter(revision))
    if fmt == "json":
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [rev %(revision)s] %(message)s")
        )
    root = logging.getLogger("toolgate")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
