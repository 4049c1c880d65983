"""The ``toolgate`` console script, run as a real subprocess."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, cond, limit, policy
from toolgate.cli import exits

EXAMPLE_JSON = EXAMPLES / "policy.json"
EXAMPLE_YAML = EXAMPLES / "policy.yaml"

# The installed console script, next to this interpreter; `python -m toolgate.cli` otherwise.
_SCRIPT = Path(sys.executable).with_name("toolgate")
TOOLGATE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "toolgate.cli"]

ERROR_LINE = re.compile(
    r"^(?P<file>.+?): (?P<pointer>/\S*): (?P<message>.+) \(line (?P<line>\d+)\)$"
)


def toolgate(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOOLGATE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def decisions(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


BROKEN = """\
{
  "version": "1",
  "tools": {
    "create-ami": {
      "limits": [{"counter": "c", "window": "fortnight", "max": 30, "scope": "grant"}]
    },
    "b": {"actoin": "deny"}
  }
}
"""

BROKEN_YAML = """\
version: "1"
default: maybe
tools:
  x:
    require:
      - {path: env.HOME, op: eq, value: 1}
"""


# --- validate ----------------------------------------------------------------------------------


def test_the_console_script_is_installed():
    assert _SCRIPT.exists() or shutil.which("toolgate"), "the toolgate console script is missing"


def test_validate_examples_exits_0():
    result = toolgate("validate", EXAMPLE_JSON, EXAMPLE_YAML)
    assert result.returncode == 0, result.stdout + result.stderr
    # Results on stdout; notes, like errors, on stderr.
    assert result.stdout.splitlines() == [f"{EXAMPLE_JSON}: ok", f"{EXAMPLE_YAML}: ok"]
    # The YAML example's rate limit per session is pointed out: a client chooses its id.
    (note,) = result.stderr.splitlines()
    assert note.startswith(f"{EXAMPLE_YAML}: /all_tools/limits/0: note: counts per session id")


def test_validate_points_out_what_a_client_asserts_about_itself(tmp_path):
    path = tmp_path / "agents.json"
    path.write_text(
        json.dumps(
            {
                "version": "1",
                "tools": {
                    "pay": {"limits": [limit("spend", 5000, scope="agent", cost="args.amount")]},
                    "admin": {"require": [cond("subject.agent", "eq", "ops")]},
                    "read": {"limits": [limit("r", 10)]},
                },
            }
        )
    )
    result = toolgate("validate", path)
    assert result.returncode == 0
    notes = [line for line in result.stderr.splitlines() if ": note: " in line]
    assert [n.split(": ")[1] for n in notes] == ["/tools/pay/limits/0", "/tools/admin/require/0"]
    assert all("x-agent-id" in n and "--agent-from jwt:CLAIM" in n for n in notes)
    # With the agent taken from a verified token, there is nothing to point out.
    verified = toolgate("validate", "--agent-from", "jwt:azp", path)
    assert verified.stdout.splitlines() == [f"{path}: ok"]
    assert verified.stderr == ""
    assert toolgate("validate", "--agent-from", "cookie", path).returncode == 2


def test_validate_quiet_prints_nothing():
    result = toolgate("validate", "-q", EXAMPLE_JSON)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_validate_broken_file_prints_one_line_per_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(BROKEN)
    result = toolgate("validate", path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert ERROR_LINE.match(line), line
    assert lines[0].startswith(f"{path}: /tools/create-ami/limits/0/window: invalid window ")
    assert lines[0].endswith(" (line 5)")
    assert lines[1] == (
        f'{path}: /tools/b/actoin: unknown key "actoin"; expected one of: action, reason, mode, '
        "limits, require, deny_if, approval, confirmation, log, release_on_failure, marks (line 7)"
    )


def test_validate_relative_path_is_printed_as_given(tmp_path):
    (tmp_path / "broken.json").write_text(BROKEN)
    result = toolgate("validate", "broken.json", cwd=tmp_path)
    assert result.returncode == 1
    assert all(line.startswith("broken.json: /tools/") for line in result.stderr.splitlines())


def test_validate_several_files_prefixes_each_line_with_its_file(tmp_path):
    first = tmp_path / "first.json"
    first.write_text(BROKEN)
    second = tmp_path / "second.yaml"
    second.write_text(BROKEN_YAML)
    result = toolgate("validate", first, EXAMPLE_JSON, second)
    assert result.returncode == 1
    parsed = [ERROR_LINE.match(line) for line in result.stderr.splitlines()]
    assert all(parsed), result.stderr
    got = [(m["file"], m["pointer"], int(m["line"])) for m in parsed]
    assert got == [
        (str(first), "/tools/create-ami/limits/0/window", 5),
        (str(first), "/tools/b/actoin", 7),
        (str(second), "/default", 2),
        (str(second), "/tools/x/require/0/path", 6),
    ]
    assert result.stdout.splitlines() == [f"{EXAMPLE_JSON}: ok"]


def test_validate_whole_document_error_uses_slash(tmp_path):
    path = tmp_path / "v.json"
    path.write_text('{"default": "deny"}\n')
    result = toolgate("validate", path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f'{path}: /: missing required key "version" (line 1)']


def test_validate_missing_file_is_unusable(tmp_path):
    path = tmp_path / "missing.json"
    result = toolgate("validate", path)
    assert result.returncode == exits.UNUSABLE
    assert result.stdout == ""
    assert result.stderr == f"{path}: cannot read it: No such file or directory\n"


def test_validate_needs_a_file():
    result = toolgate("validate")
    assert result.returncode == 2
    assert "usage" in result.stderr


# --- decide ------------------------------------------------------------------------------------


def test_decide_repeat_31_hits_the_create_ami_limit():
    result = toolgate(
        "decide", "--policy", EXAMPLE_JSON, "--tool", "create-ami", "--grant", "g", "--repeat", "31"
    )
    assert result.returncode == 0, result.stderr
    out = decisions(result.stdout)
    assert len(out) == 31
    assert [d["verdict"] for d in out[:30]] == ["ALLOW"] * 30
    assert [d["code"] for d in out[:30]] == ["ALLOWED"] * 30
    assert [d["limits"][0]["remaining"] for d in out[:30]] == [float(29 - i) for i in range(30)]
    last = out[30]
    assert (last["verdict"], last["code"], last["rule"]) == (
        "DENY",
        "RATE_LIMITED",
        "/tools/create-ami/limits/0",
    )
    assert 0 < last["retry_after_ms"] <= 65_000
    assert last["reservation"] is None
    assert len({d["revision"] for d in out}) == 1


def test_decide_prints_every_field():
    result = toolgate("decide", "--policy", EXAMPLE_JSON, "--tool", "unknown_tool")
    assert result.returncode == 0
    (d,) = decisions(result.stdout)
    assert set(d) == {
        "verdict",
        "code",
        "reason",
        "rule",
        "retry_after_ms",
        "limits",
        "revision",
        "shadow",
        "reservation",
        "approval_id",
        "marks",
    }
    assert (d["verdict"], d["code"], d["rule"]) == ("DENY", "DEFAULT_DENY", "/default")
    assert d["approval_id"] is None
    assert d["marks"] is None  # the policy has no marks


@pytest.mark.parametrize(
    ("arguments", "code", "rule"),
    [
        ({"amount": 250, "currency": "USD"}, "ALLOWED", "/tools/transfer_funds"),
        ({"amount": 250, "currency": "EUR"}, "CONDITION_FAILED", "/tools/transfer_funds/require/0"),
        (
            {"amount": 1000, "currency": "USD"},
            "CONDITION_FAILED",
            "/tools/transfer_funds/require/1",
        ),
        ({"currency": "USD"}, "CONDITION_FAILED", "/tools/transfer_funds/require/1"),
    ],
)
def test_decide_with_args(arguments, code, rule):
    result = toolgate(
        "decide", "--policy", EXAMPLE_JSON, "--tool", "transfer_funds", "--grant", "a",
        "--args", json.dumps(arguments),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (d,) = decisions(result.stdout)
    assert (d["code"], d["rule"]) == (code, rule)
    if code == "ALLOWED":
        assert d["limits"][0]["remaining"] == 4750.0


def test_decide_deny_if_with_args():
    base = ["decide", "--policy", EXAMPLE_JSON, "--tool", "run_command", "--grant", "s"]
    (d,) = decisions(toolgate(*base, "--args", '{"command": "rm -rf /tmp/x"}').stdout)
    assert (d["code"], d["reason"]) == (
        "CONDITION_FAILED",
        "Destructive shell commands are not allowed.",
    )
    (d,) = decisions(toolgate(*base, "--args", '{"command": "ls -l"}').stdout)
    assert d["code"] == "ALLOWED"


def test_decide_attributes_server_and_dry_run(tmp_path):
    path = tmp_path / "p.json"
    doc = policy(
        {
            "t": {
                "require": [{"path": "subject.attributes.team", "op": "eq", "value": "infra"}],
                "limits": [limit("c", 1, scope="server")],
            }
        }
    )
    path.write_text(json.dumps(doc))
    base = ["decide", "--policy", path, "--tool", "t", "--server", "s1"]
    out = decisions(toolgate(*base, "--attr", "team=infra", "--dry-run", "--repeat", "3").stdout)
    assert [d["code"] for d in out] == ["ALLOWED"] * 3
    assert all(d["reservation"] is None for d in out)
    out = decisions(toolgate(*base, "--attr", "team=infra", "--repeat", "2").stdout)
    assert [d["code"] for d in out] == ["ALLOWED", "RATE_LIMITED"]
    (d,) = decisions(toolgate(*base, "--attr", "team=web").stdout)
    assert d["code"] == "CONDITION_FAILED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("{not json", "--args is not valid JSON"),
        ("[1, 2]", "--args must be a JSON object"),
        ('"text"', "--args must be a JSON object"),
        ('{"a": {"b": 1, "b": 2}}', "--args has the key 'b' twice"),
        ('{"a": NaN}', "--args holds NaN, which is not JSON"),
    ],
)
def test_decide_invalid_args_is_unusable(args, message):
    result = toolgate(
        "decide", "--policy", EXAMPLE_JSON, "--tool", "create-ami", "--grant", "g", "--args", args
    )
    assert result.returncode == exits.UNUSABLE
    assert result.stdout == ""
    assert message in result.stderr


def test_decide_bad_attr_is_unusable():
    result = toolgate("decide", "--policy", EXAMPLE_JSON, "--tool", "x", "--attr", "novalue")
    assert result.returncode == exits.UNUSABLE
    assert "--attr expects KEY=VALUE" in result.stderr


def test_decide_bad_repeat_is_unusable():
    result = toolgate("decide", "--policy", EXAMPLE_JSON, "--tool", "x", "--repeat", "0")
    assert result.returncode == exits.UNUSABLE
    assert "--repeat" in result.stderr


def test_decide_missing_policy_file_is_unusable(tmp_path):
    path = tmp_path / "missing.json"
    result = toolgate("decide", "--policy", path, "--tool", "create-ami")
    assert result.returncode == exits.UNUSABLE
    assert result.stdout == ""
    assert "cannot read" in result.stderr and str(path) in result.stderr


def test_decide_invalid_policy_is_unusable(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(BROKEN)
    result = toolgate("decide", "--policy", path, "--tool", "create-ami")
    assert result.returncode == exits.UNUSABLE
    assert result.stdout == ""
    assert f"{path}: /tools/create-ami/limits/0/window: invalid window" in result.stderr


def test_decide_needs_a_tool():
    result = toolgate("decide", "--policy", EXAMPLE_JSON)
    assert result.returncode == 2
    assert "--tool" in result.stderr
