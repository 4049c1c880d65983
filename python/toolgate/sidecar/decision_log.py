"""The decision log's reader side: ``toolgate log verify``, which walks the hash chain of a
log and its rotated files and reports the first line that is broken or missing.

Each line is a JSON object with ``seq`` (one more than the line before, across files) and
``prev`` (the SHA-256, in hex, of the line before, as written, without its newline; 64
zeros for the very first). A line edited, removed or inserted breaks the chain at that
point. The newest lines are protected by the head: the sidecar logs the ``seq`` and hash of
the last line (every minute while it changes, and when it stops); given as ``--head``, a
line at or before it cut or rewritten is found too. Lines the sidecar dropped (its disk too
slow) are not a break: a line ``{"dropped": N}`` says how many are missing there. Nor are
bytes that are not decision-log lines (a line a crash cut short, bytes another program
appended) when a restarted sidecar accounted for them: the line after them says
``{"break": {"lines": N, "bytes": B, "sha256": H}}``, and those bytes must be exactly what it
says; the chain goes on through it from the line before them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def log_files(path: Path) -> list[Path]:
    """The files of a log, oldest first: ``PATH.1``, ``PATH.2``, …, then ``PATH``."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)$")
    rotated = []
    for f in path.parent.iterdir() if path.parent.exists() else []:
        m = pattern.match(f.name)
        if m:
            rotated.append((int(m.group(1)), f))
    files = [f for _, f in sorted(rotated)]
    if path.exists():
        files.append(path)
    return files


@dataclass
class Verified:
    """What a verification found: ``problem`` is None for a whole chain."""

    lines: int = 0
    decisions: int = 0
    dropped: int = 0
    problem: str | None = None
    first_seq: int | None = None
    #: Where a restarted sidecar skipped bytes that were not lines, and what they were.
    breaks: list[str] = field(default_factory=list)


@dataclass
class _Unreadable:
    """Pieces of a log that are not decision-log lines, until a break line accounts for them."""

    where: str
    problem: str
    lines: int = 0
    raw: bytearray = field(default_factory=bytearray)

    def add(self, raw: bytes) -> None:
        self.lines += 1
        self.raw += raw

    def accounted_for(self, note: Any) -> bool:
        """Whether a break line's ``note`` names exactly these bytes."""
        return isinstance(note, dict) and note == {
            "lines": self.lines,
            "bytes": len(self.raw),
            "sha256": hashlib.sha256(self.raw).hexdigest(),
        }


def _unreadable(raw: bytes) -> tuple[str, Any]:
    """Why a raw line is not a decision-log line ('' if it is one), and its record."""
    if not raw.endswith(b"\n"):
        return "the line is cut short (no newline)", None
    try:
        record: Any = json.loads(raw[:-1])
    except ValueError:
        return "not a JSON line", None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return "not a decision-log line (no seq)", None
    return "", record


def parse_head(text: str) -> tuple[int, str]:
    """``SEQ:SHA256`` → (seq, sha256); ValueError otherwise."""
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"a head is SEQ:SHA256 (as the sidecar logs it), not {text!r}")
    return int(seq), digest


def verify(
    files: list[Path], *, from_start: bool = True, head: tuple[int, str] | None = None
) -> Verified:
    """Walk the chain through ``files`` in order. ``from_start``: the first line must be
    the log's first (``seq`` 1, ``prev`` all zeros); otherwise the chain may start
    anywhere (old rotated files deleted). ``head``: the line with that seq must exist and
    hash to that digest."""
    out = Verified()
    prev_hash: str | None = GENESIS if from_start else None
    prev_seq: int | None = 0 if from_start else None
    anchored = False
    unreadable: _Unreadable | None = None
    for f in files:
        with f.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                where = f"{f}:{number}"
                problem, record = _unreadable(raw)
                if problem:
                    unreadable = unreadable or _Unreadable(where, problem)
                    unreadable.add(raw)
                    continue
                note = record.get("break")
                if unreadable is not None:
                    if not unreadable.accounted_for(note):
                        out.problem = f"{unreadable.where}: {unreadable.problem}"
                        return out
                    out.breaks.append(
                        f"{unreadable.where}: {unreadable.lines} line(s), {len(unreadable.raw)}"
                        f" bytes, not decision-log lines ({unreadable.problem}), skipped by"
                        f" the sidecar at a restart (noted at {where})"
                    )
                    unreadable = None
                elif note is not None and (from_start or out.lines > 0):
                    out.problem = f"{where}: a break line, but nothing before it was skipped"
                    return out
                elif note is not None:
                    # A partial chain may start at a break: what it skipped is older.
                    out.breaks.append(f"{where}: a break, whose skipped bytes are before it")
                seq, prev = record["seq"], record.get("prev")
                if out.first_seq is None:
                    out.first_seq = seq
                if prev_seq is not None and seq != prev_seq + 1:
                    missing = seq - prev_seq - 1
                    out.problem = f"{where}: seq {seq} follows {prev_seq}: " + (
                        f"{missing} line(s) missing" if missing > 0 else "out of order"
                    )
                    return out
                if prev_hash is not None and prev != prev_hash:
                    out.problem = (
                        f"{where}: prev does not match the line before it"
                        " (a line was changed, removed or inserted)"
                    )
                    return out
                prev_hash = hashlib.sha256(raw[:-1]).hexdigest()
                prev_seq = seq
                if head is not None and seq == head[0]:
                    if prev_hash != head[1]:
                        out.problem = f"{where}: seq {seq} is not the line the head names"
                        return out
                    anchored = True
                out.lines += 1
                if "dropped" in record:
                    out.dropped += int(record["dropped"])
                elif note is None:
                    out.decisions += 1
    if unreadable is not None:
        out.problem = f"{unreadable.where}: {unreadable.problem}"
        return out
    if head is not None and not anchored:
        out.problem = f"the log ends before seq {head[0]}, the head given: lines were cut"
    return out
