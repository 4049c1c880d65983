"""The sidecar's own log lines are inert: text from agents or callers in a record (a tool
name, an approval's reason, an error quoting a request) cannot move a terminal's cursor,
recolour, reorder or hide text, or forge a record, in either format."""

from __future__ import annotations

import json
import logging
import sys

from toolgate._core import inert
from toolgate.sidecar.logs import InertTextFormatter, JsonLinesFormatter

AGENT_TEXT = "x\x1b[2K\r\n2026-01-01 INFO forged\x85\x9b\x7f\u202eevil\u2028\u200b\U000e0041"


def unsafe_characters(text: str) -> list[str]:
    return [c for c in text if c != "\\" and inert(c) != c]


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(AGENT_TEXT)
        except ValueError:
            exc_info = sys.exc_info()
    r = logging.LogRecord("toolgate.test", logging.WARNING, __file__, 1, message, args, exc_info)
    r.revision = "abc"
    return r


def test_text_lines_are_inert_and_a_record_stays_one_line():
    text = InertTextFormatter("%(levelname)s %(name)s [rev %(revision)s] %(message)s")
    line = text.format(record("approval %s denied: %s", "apr_1", AGENT_TEXT))
    assert "\n" not in line and unsafe_characters(line) == []
    assert line.startswith("WARNING toolgate.test [rev abc] approval apr_1 denied: x\\u{1b}[2K")
    assert inert(AGENT_TEXT) in line
    # A traceback keeps its lines, each inert and marked as part of the record: the line
    # the agent's text would forge is one of them.
    with_traceback = text.format(record("failed", exc=True)).split("\n")
    assert with_traceback[0] == "WARNING toolgate.test [rev abc] failed"
    assert all(part.startswith("  | ") for part in with_traceback[1:])
    assert unsafe_characters("".join(with_traceback)) == []
    assert with_traceback[-2:] == [
        "  | ValueError: x\\u{1b}[2K\\u{d}",
        "  | 2026-01-01 INFO forged\\u{85}\\u{9b}\\u{7f}\\u{202e}evil\\u{2028}\\u{200b}\\u{e0041}",
    ]


def test_json_lines_are_ascii_and_read_back():
    line = JsonLinesFormatter().format(record("tool %s", AGENT_TEXT, exc=True))
    assert line.isascii() and "\n" not in line and unsafe_characters(line) == []
    entry = json.loads(line)
    assert entry["msg"] == f"tool {AGENT_TEXT}"
    assert entry["exc"].endswith(f"ValueError: {AGENT_TEXT}")
