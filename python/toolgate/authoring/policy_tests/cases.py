"""Policy test files: what they hold and reading them.

A test file (YAML or JSON) names the policies it tests and lists cases; each case runs on a
fresh engine whose clock moves only when the case says so, so limits are tested without
waiting::

    policy: policy.json            # or a list; relative to this file (--policy overrides)
    cases:
      - name: create-ami is limited to 30 calls a minute per grant
        steps:
          - call: {tool: create-ami, subject: {grant: alice}}
            repeat: 30
            expect: {verdict: ALLOW}
          - call: {tool: create-ami, subject: {grant: alice}}
            expect: {verdict: DENY, code: RATE_LIMITED, rule: /tools/create-ami/limits/0}
          - advance: 65s
          - call: {tool: create-ami, subject: {grant: alice}}
            expect: {verdict: ALLOW}
      - name: a case of one step may leave out `steps`
        call: {tool: describe_images}
        expect: {verdict: ALLOW, code: ALLOWED}
      - name: a tool listed unlike its pin is removed, and its calls denied
        steps:
          - list: {server: crm, file: tools-changed.json}   # or tools: [{name: ...}, ...]
            expect: {shown: [crm_read], removed: {send_email: TOOL_CHANGED}}
          - call: {tool: send_email, server: crm}
            expect: {code: TOOL_CHANGED}

Each call is decided through ``Engine.explain`` (counting, as a decision does), so a failure
is shown with how the call was decided (toolgate.authoring.policy_tests.run).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolgate._core import CODES, VERDICTS, read_document
from toolgate.scanner.scan import ScanError, scan_file

_FILE_KEYS = {"policy", "cases"}
_STEP_KEYS = {"name", "call", "list", "expect", "repeat", "advance", "every", "release", "dry_run"}
_CASE_KEYS = _STEP_KEYS | {"steps"}
#: What a call names: exactly one of these, by its kind.
_NAMED = ("tool", "resource", "prompt", "method")
_CALL_KEYS = {*_NAMED, "server", "subject", "arguments", "hits"}
_LIST_KEYS = {"server", "subject", "tools", "file"}
_LIST_EXPECT_KEYS = {"shown", "removed"}
_MARK_STATES = {"set", "unset", "no_scope", "unread"}
_SUBJECT_KEYS = {"grant", "session", "agent", "attributes", "grant_verified"}
_EXPECT_KEYS = {
    "verdict",
    "code",
    "rule",
    "reason",
    "reason_contains",
    "shadow",
    "retry_after_ms",
    "remaining",
    "marks_read",
    "marks_set",
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class BadTestFile(ValueError):
    """A test file that cannot be run: every problem, each with where it is."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        super().__init__("\n".join(f"{path}: {p}" for p in problems))
        self.path = path
        self.problems = list(problems)


# --- the model -----------------------------------------------------------------------------------


@dataclass
class Call:
    tool: str
    #: What ``tool`` names: a tool, a resource (its URI), a prompt or a method.
    kind: str = "tool"
    server: str | None = None
    grant: str | None = None
    session: str | None = None
    agent: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    grant_verified: bool = False
    arguments: dict[str, Any] | None = None
    hits: int | None = None


@dataclass
class Listing:
    """A ``tools/list`` answer passing the sidecar for a caller (the tools as JSON objects)."""

    tools: list[dict[str, Any]]
    subject: Call


@dataclass
class Step:
    """A call made ``repeat`` times (``every`` seconds apart) after moving the clock
    ``advance`` seconds, each decision checked against ``expect``; or a tool list filtered,
    what it shows and removes checked against ``expect``."""

    where: str
    name: str | None
    call: Call | None
    expect: dict[str, Any]
    listing: Listing | None = None
    repeat: int = 1
    advance: float = 0.0
    every: float = 0.0
    release: bool = False
    dry_run: bool = False


@dataclass
class Case:
    name: str
    where: str
    steps: list[Step]


@dataclass
class TestFile:
    path: Path
    policies: list[Path]
    cases: list[Case]


# --- reading -------------------------------------------------------------------------------------


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or a string like a window (``90s``, ``1m30s``, ``2.5s``)."""
    if isinstance(value, bool):
        raise ValueError(f"a duration is a number of seconds or like 90s, 1m, 500ms, not {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a duration must be a non-negative number, not {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    raise ValueError(f"a duration is a number of seconds or like 90s, 1m, 500ms, not {value!r}")


class _Reader:
    """Checks a parsed test file, collecting every problem with its pointer and line."""

    def __init__(self, path: Path, lines: Mapping[str, int]) -> None:
        self.path = path
        self.lines = lines
        self.problems: list[str] = []

    def problem(self, pointer: str, message: str) -> None:
        line = self.lines.get(pointer)
        where = f"line {line}: " if line is not None else ""
        self.problems.append(f"{where}{pointer or '/'}: {message}")

    def mapping(self, value: Any, pointer: str, allowed: set[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(pointer, f"must be a mapping, not {_kind(value)}")
            return None
        for key in value:
            if key not in allowed:
                self.problem(
                    f"{pointer}/{key}", f"unknown key {key!r} (known: {', '.join(sorted(allowed))})"
                )
        return value

    def string(self, value: Any, pointer: str, *, optional: bool = True) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            self.problem(pointer, f"must be a non-empty string, not {_kind(value)}")
            return None
        return value

    def boolean(self, value: Any, pointer: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.problem(pointer, f"must be true or false, not {_kind(value)}")
            return False
        return value

    def duration(self, value: Any, pointer: str) -> float:
        if value is None:
            return 0.0
        try:
            return parse_duration(value)
        except ValueError as err:
            self.problem(pointer, str(err))
            return 0.0

    def call(self, value: Any, pointer: str) -> Call | None:
        c = self.mapping(value, pointer, _CALL_KEYS)
        if c is None:
            return None
        named = [k for k in _NAMED if k in c]
        if len(named) != 1:
            self.problem(pointer, f"needs exactly one of {', '.join(_NAMED)}")
        kind = named[0] if named else "tool"
        tool = self.string(c.get(kind), f"{pointer}/{kind}", optional=False)
        server = self.string(c.get("server"), f"{pointer}/server")
        call = Call(tool=tool or "", kind=kind, server=server)
        self.subject(c.get("subject"), pointer, call)
        arguments = c.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            self.problem(f"{pointer}/arguments", f"must be a mapping, not {_kind(arguments)}")
        else:
            call.arguments = arguments
        hits = c.get("hits")
        if hits is not None and (
            isinstance(hits, bool) or not isinstance(hits, int) or not 0 <= hits < 2**32
        ):
            self.problem(f"{pointer}/hits", "must be a whole number from 0 to 2^32-1")
        else:
            call.hits = hits
        return call

    def subject(self, subject: Any, pointer: str, call: Call) -> None:
        """The caller: ``subject``'s grant, session, agent and attributes into ``call``."""
        if subject is None:
            return
        s = self.mapping(subject, f"{pointer}/subject", _SUBJECT_KEYS)
        if s is None:
            return
        call.grant = self.string(s.get("grant"), f"{pointer}/subject/grant")
        call.session = self.string(s.get("session"), f"{pointer}/subject/session")
        call.agent = self.string(s.get("agent"), f"{pointer}/subject/agent")
        call.grant_verified = self.boolean(
            s.get("grant_verified"), f"{pointer}/subject/grant_verified"
        )
        attributes = s.get("attributes")
        if attributes is not None:
            at = f"{pointer}/subject/attributes"
            if not isinstance(attributes, dict) or not all(
                isinstance(v, str) for v in attributes.values()
            ):
                self.problem(at, "must map names to strings")
            else:
                call.attributes = dict(attributes)

    def listing(self, value: Any, pointer: str) -> Listing | None:
        c = self.mapping(value, pointer, _LIST_KEYS)
        if c is None:
            return None
        subject = Call(tool="", server=self.string(c.get("server"), f"{pointer}/server"))
        self.subject(c.get("subject"), pointer, subject)
        if ("tools" in c) == ("file" in c):
            self.problem(pointer, "needs tools (a list of tool objects) or file, not both")
            return None
        tools: Any = c.get("tools")
        if "file" in c:
            name = self.string(c["file"], f"{pointer}/file", optional=False)
            if name is None:
                return None
            try:
                tools = scan_file(self.path.parent / name).listed
            except ScanError as err:
                self.problem(f"{pointer}/file", str(err))
                return None
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools
        ):
            self.problem(f"{pointer}/tools", "must be a list of tool objects, each with a name")
            return None
        return Listing(tools=tools, subject=subject)

    def list_expect(self, value: Any, pointer: str) -> dict[str, Any]:
        e = self.mapping(value if value is not None else {}, pointer, _LIST_EXPECT_KEYS)
        if e is None:
            return {}
        shown = e.get("shown")
        if shown is not None and not (
            isinstance(shown, list) and all(isinstance(n, str) for n in shown)
        ):
            self.problem(f"{pointer}/shown", "must be a list of tool names")
        removed = e.get("removed")
        if removed is not None and not (
            isinstance(removed, dict) and all(c in CODES for c in removed.values())
        ):
            self.problem(f"{pointer}/removed", f"must map tool names to codes ({', '.join(CODES)})")
        return dict(e)

    def expect(self, value: Any, pointer: str) -> dict[str, Any]:
        if value is None:
            return {}
        e = self.mapping(value, pointer, _EXPECT_KEYS)
        if e is None:
            return {}
        if "verdict" in e and e["verdict"] not in VERDICTS:
            self.problem(
                f"{pointer}/verdict", f"must be one of {', '.join(VERDICTS)}, not {e['verdict']!r}"
            )
        if "code" in e and e["code"] not in CODES:
            self.problem(f"{pointer}/code", f"must be one of {', '.join(CODES)}, not {e['code']!r}")
        for key in ("rule", "reason", "reason_contains"):
            if key in e and not isinstance(e[key], str):
                self.problem(f"{pointer}/{key}", f"must be a string, not {_kind(e[key])}")
        if "shadow" in e and not isinstance(e["shadow"], bool):
            self.problem(f"{pointer}/shadow", "must be true or false")
        if "retry_after_ms" in e:
            self._retry(e["retry_after_ms"], f"{pointer}/retry_after_ms")
        if "remaining" in e:
            remaining = e["remaining"]
            numbers = remaining.values() if isinstance(remaining, dict) else [remaining]
            if not all(_is_number(n) for n in numbers):
                self.problem(
                    f"{pointer}/remaining",
                    "must be a number (the reported limit's room) or a mapping from counter "
                    "names to numbers",
                )
        read = e.get("marks_read")
        if read is not None and not (
            isinstance(read, dict) and all(v in _MARK_STATES for v in read.values())
        ):
            states = ", ".join(sorted(_MARK_STATES))
            self.problem(f"{pointer}/marks_read", f"must map mark names to one of {states}")
        marks_set = e.get("marks_set")
        if marks_set is not None and not (
            isinstance(marks_set, list) and all(isinstance(n, str) for n in marks_set)
        ):
            self.problem(f"{pointer}/marks_set", "must be a list of mark names")
        return dict(e)

    def _retry(self, value: Any, pointer: str) -> None:
        if value is None or _is_number(value):
            return
        if (
            isinstance(value, dict)
            and value
            and set(value) <= {"min", "max"}
            and all(_is_number(v) for v in value.values())
        ):
            return
        self.problem(pointer, "must be null, a number of milliseconds, or {min, max}")

    def step(self, value: Mapping[str, Any], pointer: str) -> Step:
        repeat = value.get("repeat", 1)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 100_000:
            self.problem(f"{pointer}/repeat", "must be a whole number from 1 to 100000")
            repeat = 1
        call = listing = None
        if "list" in value:
            if "call" in value or {"repeat", "release", "dry_run"} & set(value):
                self.problem(pointer, "a list step has no call, repeat, release or dry_run")
            listing = self.listing(value["list"], f"{pointer}/list")
            expect = self.list_expect(value.get("expect"), f"{pointer}/expect")
        else:
            if "call" in value:
                call = self.call(value["call"], f"{pointer}/call")
            elif "expect" in value or "repeat" in value:
                self.problem(pointer, "expect and repeat need a call or a list")
            elif "advance" not in value:
                self.problem(pointer, "a step has a call, a list, or only an advance of the clock")
            expect = self.expect(value.get("expect"), f"{pointer}/expect")
        return Step(
            where=pointer,
            name=self.string(value.get("name"), f"{pointer}/name"),
            call=call,
            listing=listing,
            expect=expect,
            repeat=repeat,
            advance=self.duration(value.get("advance"), f"{pointer}/advance"),
            every=self.duration(value.get("every"), f"{pointer}/every"),
            release=self.boolean(value.get("release"), f"{pointer}/release"),
            dry_run=self.boolean(value.get("dry_run"), f"{pointer}/dry_run"),
        )

    def case(self, value: Any, pointer: str) -> Case | None:
        c = self.mapping(value, pointer, _CASE_KEYS)
        if c is None:
            return None
        name = self.string(c.get("name"), f"{pointer}/name", optional=False) or pointer
        if "steps" in c:
            shorthand = sorted((_STEP_KEYS - {"name"}) & set(c))
            if shorthand:
                self.problem(pointer, f"has steps, so {', '.join(shorthand)} belong in a step")
            steps_value = c["steps"]
            if not isinstance(steps_value, list) or not steps_value:
                self.problem(f"{pointer}/steps", "must be a non-empty list of steps")
                return None
            steps = []
            for i, s in enumerate(steps_value):
                at = f"{pointer}/steps/{i}"
                step = self.mapping(s, at, _STEP_KEYS)
                if step is not None:
                    steps.append(self.step(step, at))
        else:
            steps = [self.step({k: v for k, v in c.items() if k != "name"}, pointer)]
            steps[0].name = None
        return Case(name=name, where=pointer, steps=steps)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def read_test_file(path: str | Path) -> TestFile:
    """Read and check a test file; raises :class:`BadTestFile` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BadTestFile(str(path), [f"cannot read: {err}"]) from None
    try:
        document, lines = read_document(text, path=path)
    except ValueError as err:
        raise BadTestFile(str(path), [str(err)]) from None
    r = _Reader(path, lines)
    d = r.mapping(document, "", _FILE_KEYS)
    if d is None:
        raise BadTestFile(str(path), r.problems)
    policies: list[Path] = []
    named = d.get("policy")
    for i, p in enumerate(named if isinstance(named, list) else [] if named is None else [named]):
        at = f"/policy/{i}" if isinstance(named, list) else "/policy"
        if r.string(p, at, optional=False):
            policies.append(path.parent / p)
    cases_value = d.get("cases")
    cases: list[Case] = []
    if not isinstance(cases_value, list) or not cases_value:
        r.problem("/cases", "must be a non-empty list of cases")
    else:
        names: dict[str, str] = {}
        for i, c in enumerate(cases_value):
            case = r.case(c, f"/cases/{i}")
            if case is None:
                continue
            if case.name in names:
                r.problem(f"/cases/{i}/name", f"repeats the name of {names[case.name]}")
            names.setdefault(case.name, case.where)
            cases.append(case)
    if r.problems:
        raise BadTestFile(str(path), r.problems)
    return TestFile(path=path, policies=policies, cases=cases)
