"""The decision log: one JSON line per decision with the documented fields; argument values
and credentials kept out unless a rule or a verified identity allows; a hash chain that
``toolgate log verify`` checks across rotated files and restarts, and that any edit, removal,
insertion or reordering of lines breaks; and, in a running sidecar, every decision written,
whichever serving thread decided it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import toolgate
from conftest import cond, limit, make_sidecar, policy
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar import PATIENCE, Sidecar, toolgate_cli
from toolgate._core import argument_digest, inert
from toolgate.sidecar.decision_log import GENESIS, log_files, verify
from toolgate.sidecar.metrics import value

KEY = b"k" * 32

DOC = policy(
    {
        "pay": {
            "log": ["args.amount", "args.currency"],
            "deny_if": [{"conditions": [cond("args.amount", "gt", 100)]}],
            "limits": [limit("pay", 100)],
        },
        "lookup": {},
        "terminate": {"action": "require_approval"},
    }
)

FIELDS = {
    "seq",
    "id",
    "time_ms",
    "time",
    "verdict",
    "code",
    "rule",
    "reason",
    "tool",
    "server",
    "subject",
    "revision",
    "shadow",
    "latency_us",
    "reservation",
    "approval_id",
    "args",
    "prev",
}

#: The decision log's counters of lines: written, and dropped.
LINES = ("lines", "dropped")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in log_files(path) for line in f.read_text().splitlines()]


def logging_sidecar(path: Path, **options: Any) -> toolgate._core.Sidecar:
    """A sidecar on DOC (not serving) writing its decisions to ``path``; ``options`` are
    ``SidecarSettings``' ``decision_log_*`` ones, without the prefix."""
    options = {f"decision_log_{k}": v for k, v in options.items()}
    return make_sidecar(DOC, decision_log=str(path), key=KEY, **options)


def test_each_decision_is_a_line_with_the_documented_fields(tmp_path):
    path = tmp_path / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path)
    engine = engine_sidecar.engine
    allowed = engine.decide(
        "pay", grant="sk-live-secret", session="s1", arguments={"amount": 5, "to": "acct-9"}
    )
    denied = engine.decide("pay", grant="sk-live-secret", arguments={"amount": 500, "to": "x"})
    engine.decide("nope", agent="bot")
    engine.decide("pay", grant="g", arguments={"amount": 1}, dry_run=True)
    assert engine_sidecar.sync_decision_log(PATIENCE)
    first, second, third = lines(path)  # the dry run authorizes nothing: not logged
    assert set(first) == FIELDS
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert (first["verdict"], first["code"], first["rule"]) == ("ALLOW", "ALLOWED", "/tools/pay")
    assert first["reservation"] == allowed.reservation and first["revision"] == engine.revision
    assert first["time"] == "1970-01-01T00:16:40.000Z" and first["latency_us"] >= 0
    assert (second["code"], second["reason"]) == ("CONDITION_FAILED", denied.reason)
    assert (third["tool"], third["code"], third["subject"]["agent"]) == (
        "nope",
        "DEFAULT_DENY",
        "bot",
    )
    assert len({first["id"], second["id"], third["id"]}) == 3


def test_argument_values_and_credentials_stay_out(tmp_path):
    path = tmp_path / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path)
    engine = engine_sidecar.engine
    args = {"amount": 5, "currency": "EUR", "to": "acct-9", "memo": "private note"}
    engine.decide("pay", grant="sk-live-secret", arguments=args)
    engine.decide("lookup", grant="sk-live-secret", arguments={"q": "private query"})
    engine.decide("lookup", grant="alice@example.com", grant_verified=True)
    assert engine_sidecar.sync_decision_log(PATIENCE)
    text = path.read_text()
    for secret in ("sk-live-secret", "acct-9", "private note", "private query"):
        assert secret not in text
    pay, lookup, verified = lines(path)
    # The rule names amount and currency for the log: those, in clear.
    assert pay["args"]["clear"] == {"args.amount": 5, "args.currency": "EUR"}
    assert pay["args"]["names"] == ["amount", "currency", "memo", "to"]
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"))
    # Keyed, as the grant is: an argument may be a secret a plain digest gives away.
    keyed = hmac.new(KEY, b"toolgate arguments\0" + canonical.encode(), hashlib.sha256)
    assert pay["args"]["digest"] == f"hmac-sha256:{keyed.hexdigest()}"
    assert pay["args"]["digest"] == argument_digest(KEY, json.dumps(args))
    assert "clear" not in lookup["args"]
    want = hmac.new(KEY, b"sk-live-secret", hashlib.sha256).hexdigest()[:32]
    assert pay["subject"]["grant"] == f"hmac-sha256:{want}"
    assert verified["subject"] == {
        "grant": "alice@example.com",
        "grant_verified": True,
        "session": None,
        "agent": None,
    }


#: What an agent may send to move a terminal's cursor, recolour, reorder or hide text, or
#: forge a line: C0 and C1 controls, DEL, bidi overrides, separators, zero-width and tag
#: characters (above the BMP), and JSON's own quote and backslash.
AGENT_TEXT = 'x\x1b[2K\r\n\x85\x9b\x7f\u202eevil\u2066\u2028\u2029\u200b\ufeff\U000e0041"\\'


def unsafe_characters(text: str) -> list[str]:
    """The characters of ``text`` that the core's inert rule escapes (a backslash aside)."""
    return [c for c in text if c != "\\" and inert(c) != c]


def test_agent_text_is_written_inert(tmp_path):
    """Every string of a line (tool, server, subject, reason, argument names, clear values)
    holds its unsafe characters as JSON escapes, so a person reading the log with ``tail``
    or ``less`` sees them and nothing acts on them; the JSON reads back as sent."""
    path = tmp_path / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path)
    engine = engine_sidecar.engine
    t = AGENT_TEXT
    arguments = {"amount": 5, "currency": t, t: 1}
    engine.decide("pay", grant="g", session=t, agent=t, arguments=arguments)
    engine.decide(t, server=t, grant=t, grant_verified=True, arguments={t: t})
    assert engine_sidecar.sync_decision_log(PATIENCE)
    raw = path.read_text()
    assert raw.count("\n") == 2 and unsafe_characters(raw.replace("\n", "")) == []
    pay, other = lines(path)
    assert (pay["subject"]["session"], pay["subject"]["agent"]) == (t, t)
    assert pay["args"]["names"] == sorted(arguments)
    assert pay["args"]["clear"] == {"args.amount": 5, "args.currency": t}
    assert (other["tool"], other["server"], other["subject"]["grant"]) == (t, t, t)
    assert other["args"]["names"] == [t]


def test_log_paths_must_be_argument_paths():
    for bad in (["subject.grant"], ["tool"], "args.amount", [""], ["args"]):
        doc = policy({"pay": {"log": bad}})
        with pytest.raises(toolgate.PolicyError) as info:
            toolgate.Policy.from_dict(doc)
        assert any(e.pointer.startswith("/tools/pay/log") for e in info.value.errors), bad


def test_the_denials_filter_keeps_everything_but_plain_allows(tmp_path):
    path = tmp_path / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path, filter="denials")
    engine = engine_sidecar.engine
    engine.decide("lookup", grant="g")
    engine.decide("pay", grant="g", arguments={"amount": 500})
    engine.decide("terminate", grant="g")
    assert engine_sidecar.sync_decision_log(PATIENCE)
    assert [line["code"] for line in lines(path)] == ["CONDITION_FAILED", "APPROVAL_REQUIRED"]
    with pytest.raises(ValueError):
        logging_sidecar(tmp_path / "x", filter="some")


def test_the_chain_goes_on_across_rotations_and_restarts(tmp_path):
    path = tmp_path / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path, rotate_mib=2000 / (1 << 20))
    engine = engine_sidecar.engine
    for i in range(40):
        engine.decide("lookup", grant=f"g{i}")
    assert engine_sidecar.sync_decision_log(PATIENCE)
    del engine, engine_sidecar
    assert len(log_files(path)) > 3, "rotated"
    restarted_sidecar = logging_sidecar(path, rotate_mib=2000 / (1 << 20))
    restarted = restarted_sidecar.engine
    for i in range(10):
        restarted.decide("lookup", grant=f"h{i}")
    assert restarted_sidecar.sync_decision_log(PATIENCE)
    result = verify(log_files(path))
    assert (result.problem, result.lines, result.decisions) == (None, 50, 50)
    assert [line["seq"] for line in lines(path)] == list(range(1, 51))
    done = toolgate_cli("log", "verify", path)
    assert done.returncode == 0 and "OK 50 lines" in done.stdout, done.stdout + done.stderr
    # The newest file alone starts mid-chain: whole only when that is allowed.
    assert toolgate_cli("log", "verify", "--only", path).returncode == 1
    assert toolgate_cli("log", "verify", "--only", "--partial", path).returncode == 0


def test_every_decision_is_written_or_counted_as_dropped(tmp_path):
    """A queue of one against a burst: what the writer could not take is counted, noted in
    the log, and the chain stays whole."""
    path = tmp_path / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path, queue=1)
    engine = engine_sidecar.engine
    for i in range(5000):
        engine.decide("lookup", grant=f"g{i % 7}")
    assert engine_sidecar.sync_decision_log(PATIENCE)
    logged, dropped = (value(engine.metrics(), f"toolgate_decision_log_{n}") for n in LINES)
    result = verify(log_files(path))
    assert result.problem is None
    assert (result.decisions, result.dropped) == (logged, dropped)
    assert logged + dropped == 5000


def chain_line(previous: bytes, size: int) -> bytes:
    """A line of the chain after ``previous`` (a line as written, without its newline),
    padded to about ``size`` bytes: what an older sidecar, whose lines had no bound, wrote."""
    before = json.loads(previous)
    line = {"seq": before["seq"] + 1, "pad": "x" * size}
    line["prev"] = hashlib.sha256(previous).hexdigest()
    return json.dumps(line, separators=(",", ":")).encode()


@pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024])
def test_a_restart_goes_on_from_a_last_line_of_any_length(tmp_path, size):
    path = tmp_path / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path)
    engine = engine_sidecar.engine
    engine.decide("lookup", grant="g")
    assert engine_sidecar.sync_decision_log(PATIENCE)
    del engine, engine_sidecar
    last = path.read_bytes().splitlines()[-1]
    with path.open("ab") as f:
        f.write(chain_line(last, size) + b"\n")
    restarted_sidecar = logging_sidecar(path)
    assert restarted_sidecar.decision_log_break is None
    restarted = restarted_sidecar.engine
    restarted.decide("lookup", grant="g")
    assert restarted_sidecar.sync_decision_log(PATIENCE)
    assert [line["seq"] for line in lines(path)] == [1, 2, 3]
    result = verify(log_files(path))
    assert (result.problem, result.breaks) == (None, [])


UNREADABLE_ENDS = {
    "cut": lambda last: last[: len(last) // 2],
    "cut_json": lambda last: b'{"seq":3,"id":"ab',
    "garbage": lambda last: b"\x00\xffgarbage\n",
    "lines": lambda last: b"not json\n[1]\n{}\n\n",
    "long_garbage": lambda last: b"g" * (1 << 20) + b"\n",
}


@pytest.mark.parametrize("end", sorted(UNREADABLE_ENDS))
def test_a_restart_after_an_unreadable_end_notes_a_break_and_goes_on(tmp_path, end):
    """A line cut by a crash, or bytes another program wrote after the last line: the chain
    is not started over. The restarted sidecar goes on from the last line of the chain, after
    a break line that names the bytes in between exactly; verify reports where they are."""
    path = tmp_path / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path)
    engine = engine_sidecar.engine
    for i in range(3):
        engine.decide("lookup", grant=f"g{i}")
    assert engine_sidecar.sync_decision_log(PATIENCE)
    del engine, engine_sidecar
    raw = path.read_bytes()
    last = raw.splitlines()[-1]
    if end.startswith("cut"):
        raw = raw[: -len(last) - 1]  # the third line never made it whole
    unreadable = UNREADABLE_ENDS[end](last)
    path.write_bytes(raw + unreadable)
    good = raw.count(b"\n")
    restarted_sidecar = logging_sidecar(path)
    note = restarted_sidecar.decision_log_break
    restarted = restarted_sidecar.engine
    assert note is not None and f"after seq {good} " in note and str(path) in note, note
    restarted.decide("lookup", grant="h")
    assert restarted_sidecar.sync_decision_log(PATIENCE)
    after = path.read_bytes()[len(raw + unreadable) :].splitlines()
    if not unreadable.endswith(b"\n"):
        assert after[0] == b"", "the cut line is ended before the break line"
        after = after[1:]
    brk, decision = (json.loads(line) for line in after)
    assert (brk["seq"], decision["seq"]) == (good + 1, good + 2)
    ended = unreadable if unreadable.endswith(b"\n") else unreadable + b"\n"
    assert brk["break"] == {
        "lines": ended.count(b"\n"),
        "bytes": len(ended),
        "sha256": hashlib.sha256(ended).hexdigest(),
    }
    result = verify(log_files(path))
    assert result.problem is None and result.decisions == good + 1
    (noted,) = result.breaks
    assert noted.startswith(f"{path}:{good + 1}: "), noted
    done = toolgate_cli("log", "verify", path)
    assert done.returncode == 0 and "1 break(s) noted" in done.stdout, done.stdout
    assert f"break {path}:{good + 1}: " in done.stdout
    # Checked alone, the newest file may start at a break whose bytes are in an older file.
    pieces = path.read_bytes().split(b"\n")
    at = next(i for i, piece in enumerate(pieces) if b'"break":' in piece)
    tail = tmp_path / "tail.jsonl"
    tail.write_bytes(b"\n".join(pieces[at:]))
    partial = verify([tail], from_start=False)
    assert partial.problem is None and len(partial.breaks) == 1, partial
    assert verify([tail]).problem is not None
    # The skipped bytes are what the break line says, no other.
    tampered = bytearray(path.read_bytes())
    tampered[len(raw)] ^= 0x01
    path.write_bytes(bytes(tampered))
    problem = verify(log_files(path)).problem
    assert problem is not None and problem.startswith(f"{path}:{good + 1}: "), problem


def test_a_file_that_is_not_a_decision_log_is_not_appended_to(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("some notes\nof someone's\n")
    with pytest.raises(OSError, match=r"notes\.txt: no line of it is a decision-log line"):
        logging_sidecar(path)
    assert path.read_text() == "some notes\nof someone's\n"


def test_a_stalled_sink_holds_few_bytes_whatever_the_arguments(tmp_path):
    """A writer stuck on a sink nobody reads (a pipe): records wait in its queue, which is
    bounded in bytes. A record holds what its line will (names capped, the digest, clear
    values), never the argument tree, so calls with 120 KB of arguments queue a few hundred
    bytes each; what does not fit is dropped, counted, and noted in the log once the sink
    moves again."""
    pipe = tmp_path / "decisions.pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    bound = 256 * 1024
    engine_sidecar = logging_sidecar(pipe, queue_bytes=bound)
    engine = engine_sidecar.engine
    big = {f"k{i:04}": "v" * 100 for i in range(1000)}
    calls = 3000
    most = 0
    for _ in range(calls):
        engine.decide("lookup", grant="g", arguments=big)
        most = max(most, value(engine.metrics(), "toolgate_decision_log_queued_bytes"))
    families = engine.metrics()
    logged, dropped = (value(families, f"toolgate_decision_log_{n}") for n in LINES)
    assert most <= bound
    assert dropped > 0, "the queue filled up"
    records = value(families, "toolgate_decision_log_queued")
    held = value(families, "toolgate_decision_log_queued_bytes")
    assert records > 0 and held / records < 2048, (records, held)
    # The sink moves again: everything queued is written, then the drops are noted.
    os.set_blocking(reader, True)
    out = bytearray()
    drain = threading.Thread(target=read_to_end, args=(reader, out), daemon=True)
    drain.start()
    assert engine_sidecar.sync_decision_log(PATIENCE)
    assert value(engine.metrics(), "toolgate_decision_log_queued") == 0
    del engine, engine_sidecar
    drain.join(PATIENCE)
    os.close(reader)
    written = tmp_path / "written.jsonl"
    written.write_bytes(bytes(out))
    result = verify([written])
    assert result.problem is None
    assert (result.decisions, result.dropped) == (logged, dropped)
    assert result.decisions + result.dropped == calls
    line = json.loads(out.splitlines()[0])
    assert len(line["args"]["names"]) == 64 and line["args"]["names_omitted"] == 1000 - 64


def read_to_end(fd: int, out: bytearray) -> None:
    """Read a pipe into ``out`` until its writer closes it."""
    while chunk := os.read(fd, 1 << 16):
        out.extend(chunk)


@pytest.fixture(scope="module")
def written_log(tmp_path_factory) -> list[bytes]:
    path = tmp_path_factory.mktemp("log") / "decisions.jsonl"
    engine_sidecar = logging_sidecar(path)
    engine = engine_sidecar.engine
    for i in range(12):
        engine.decide("pay", grant=f"g{i}", arguments={"amount": i * 20})
    assert engine_sidecar.sync_decision_log(PATIENCE)
    return path.read_bytes().splitlines(keepends=True)


def check(tmp_path: Path, raw: list[bytes], head: tuple[int, str] | None = None) -> str | None:
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(b"".join(raw))
    return verify([path], head=head).problem


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["edit", "delete", "insert", "swap", "truncate"]),
    st.integers(0, 11),
    st.integers(0, 10_000),
    st.data(),
)
def test_any_tampering_is_reported(tmp_path_factory, written_log, how, at, salt, data):
    tmp = tmp_path_factory.mktemp("tamper")
    raw = list(written_log)
    # The head the sidecar would have logged: the last line's seq and hash.
    head = (12, hashlib.sha256(raw[-1][:-1]).hexdigest())
    assert check(tmp, raw, head) is None
    line = raw[at]
    if how == "edit":
        # Change one byte of the line's content (not its newline) to another.
        i = salt % (len(line) - 1)
        new = data.draw(st.integers(32, 126).filter(lambda b: b != line[i]))
        raw[at] = line[:i] + bytes([new]) + line[i + 1 :]
    elif how == "delete":
        del raw[at]
    elif how == "insert":
        raw.insert(at, raw[(at + 1 + salt % 11) % 12])
    elif how == "swap":
        other = (at + 1 + salt % 11) % 12
        raw[at], raw[other] = raw[other], raw[at]
    else:
        raw[at] = line[: max(1, salt % (len(line) - 1))]
        raw = raw[: at + 1]
    if at == 11 and how in ("delete", "edit"):
        # The last line removed or rewritten leaves a whole, shorter chain: only the head,
        # kept apart from the log, tells.
        assert check(tmp, raw) is None or how == "edit"
    problem = check(tmp, raw, head)
    assert problem is not None, (how, at)
    # Reported at the line itself, or at the next, whose prev no longer matches.
    if how in ("edit", "delete", "truncate") and "the log ends before" not in problem:
        reported = int(problem.split(":")[1])
        assert at + 1 <= reported <= at + 2, problem


# --- in a running sidecar ------------------------------------------------------------------


def test_a_sidecar_writes_every_decision_and_the_log_verifies(tmp_path):
    path = tmp_path / "decisions.jsonl"
    with Sidecar(DOC, "--decision-log", str(path)) as sc:
        for i in range(30):
            sc.client.decide("pay", grant="g", arguments={"amount": i * 10})
        sc.client.decide("terminate", grant="g")
        sc.signal(signal.SIGTERM)
        assert sc.wait(PATIENCE) == 0
        stderr = sc.stderr
    got = lines(path)
    assert len(got) == 31
    assert [line["code"] for line in got].count("CONDITION_FAILED") == 19
    assert got[-1]["code"] == "APPROVAL_REQUIRED" and got[-1]["approval_id"].startswith("apr_")
    # The sidecar's own log names the head when it stops: the chain's anchor.
    (head,) = re.findall(r"decision log head (\d+:[0-9a-f]{64})", stderr)
    assert head.startswith("31:")
    done = toolgate_cli("log", "verify", "--head", head, path)
    assert done.returncode == 0, done.stdout + done.stderr
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    done = toolgate_cli("log", "verify", "--head", head, path)
    assert done.returncode == 1 and "lines were cut" in done.stdout


def test_the_sidecar_counts_logged_decisions_in_metrics(tmp_path):
    path = tmp_path / "decisions.jsonl"
    with Sidecar(DOC, "--decision-log", str(path), "--decision-log-filter", "denials") as sc:
        for _ in range(3):
            sc.client.decide("pay", grant="g", arguments={"amount": 500})
        sc.client.decide("lookup", grant="g")
        assert sc.metric("toolgate_decision_log_lines_total") == 3
        assert sc.metric("toolgate_decision_log_dropped_total") == 0


def test_every_serving_thread_writes_into_the_one_chain(tmp_path):
    path = tmp_path / "decisions.jsonl"
    with Sidecar(DOC, "--threads", "4", "--decision-log", str(path)) as sc:
        channels = [toolgate.Client(sc.target) for _ in range(8)]
        for i in range(80):
            channels[i % 8].decide("lookup", grant=f"g{i}")
        for c in channels:
            c.close()
        total = sc.metric("toolgate_decision_log_lines_total")
    result = verify(log_files(path))
    assert result.problem is None
    assert result.decisions == 80 == total
