"""What ``toolgate serve`` says when it starts: every listener's real address (port 0
included, so a sidecar given any free port can be found), a warning about ``--admin-tokens``
only when the policy has approvals nobody could then decide, and a warning when the decision
log's grant labels will not survive a restart (no ``--state-dir``)."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from sidecar import PATIENCE, TOOLGATE, Sidecar, dies_with_parent, toolgate_cli, wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "policy.json"
NO_APPROVALS = {"version": "1", "default": "deny", "tools": {"create-ami": {}}}

#: What serve logs last when it starts: where the admin listener is, or that there is none.
LAST_LINE = r"admin \(toolgate\.v1\.Approvals\) on|no admin listener"
ADMIN_WARNING = "there is no --admin-tokens"
LABEL_WARNING = "grants are labelled with a key made for this run"


def started(*args: str, cwd: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``toolgate serve ARGS`` on port 0 everywhere, once it has logged its listeners."""
    log = cwd / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            dies_with_parent([*TOOLGATE, "serve", *args]),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    wait_for(
        lambda: proc.poll() is not None or re.search(LAST_LINE, log.read_text()) or None,
        timeout=4 * PATIENCE,  # a bound on waiting on a busy machine, not a measurement
    )
    assert proc.poll() is None, log.read_text()
    return proc, log


def stopped(proc: subprocess.Popen[bytes], log: Path) -> str:
    proc.terminate()
    assert proc.wait(timeout=PATIENCE) == 0, log.read_text()
    return log.read_text()


def test_every_listener_is_logged_with_its_real_port(tmp_path: Path):
    (tmp_path / "admin-tokens").write_text(f"alice {'a' * 32}\n")
    (tmp_path / "alice.token").write_text("a" * 32)
    proc, log = started(
        "--policy",
        str(EXAMPLE),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-tokens",
        "admin-tokens",
        cwd=tmp_path,
    )
    try:
        wait_for(lambda: "admin (toolgate.v1.Approvals) on" in log.read_text() or None)
        text = log.read_text()
        (data,) = re.findall(r"serving .* on (127\.0\.0\.1:\d+) \(\d+ threads\)", text)
        (metrics,) = re.findall(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", text)
        (admin,) = re.findall(r"admin \(toolgate\.v1\.Approvals\) on (127\.0\.0\.1:\d+)", text)
        assert not {data, metrics, admin} & {"127.0.0.1:0", "http://127.0.0.1:0/metrics"}
        # Each is where that listener answers.
        health = toolgate_cli("health", "--target", data)
        assert health.returncode == 0, health.stderr
        with urllib.request.urlopen(metrics, timeout=PATIENCE) as answer:
            assert b"toolgate_build_info" in answer.read()
        listed = toolgate_cli(
            "approvals", "--target", admin, "--token-file", tmp_path / "alice.token", "list"
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        stopped(proc, log)


def _first_lines(policy: Path | None, *args: str, cwd: Path) -> str:
    policy_args = ["--policy", str(policy)] if policy else []
    proc, log = started(
        *policy_args, "--listen", "127.0.0.1:0", "--metrics-listen", "off", *args, cwd=cwd
    )
    return stopped(proc, log)


@pytest.mark.parametrize(
    ("policy", "tokens", "warned"),
    [
        ("example", False, True),  # terminate_instances requires approval
        ("example", True, False),
        ("no approvals", False, False),
        ("built-in", False, False),
    ],
)
def test_admin_tokens_are_asked_for_only_when_approvals_could_open(
    tmp_path: Path, policy: str, tokens: bool, warned: bool
):
    path = {"example": EXAMPLE, "no approvals": tmp_path / "p.json", "built-in": None}[policy]
    (tmp_path / "p.json").write_text(json.dumps(NO_APPROVALS))
    args = []
    if tokens:
        (tmp_path / "admin-tokens").write_text(f"alice {'a' * 32}\n")
        args = ["--admin-tokens", "admin-tokens", "--admin-listen", "127.0.0.1:0"]
    text = _first_lines(path, *args, cwd=tmp_path)
    assert (ADMIN_WARNING in text) is warned, text
    assert ("no admin listener" in text) is not tokens, text


@pytest.mark.parametrize("state_dir", [False, True])
def test_the_decision_log_says_when_grant_labels_will_not_survive_a_restart(
    tmp_path: Path, state_dir: bool
):
    args = ["--decision-log", "logs/today/decisions.jsonl"]
    if state_dir:
        args += ["--state-dir", "state"]
    text = _first_lines(EXAMPLE, *args, cwd=tmp_path)
    assert (LABEL_WARNING in text) is not state_dir, text
    # The log's directory is made, as the state directory is.
    assert (tmp_path / "logs" / "today" / "decisions.jsonl").exists()


def test_grant_labels_change_across_restarts_without_a_state_dir_only(tmp_path: Path):
    """What the warning is about: the same grant, two runs."""

    def label(state: str | None, run: int) -> str:
        log = tmp_path / f"{state}-{run}.jsonl"
        extra = ["--decision-log", str(log)]
        if state is not None:
            extra += ["--state-dir", str(tmp_path / state)]
        with Sidecar(EXAMPLE, *extra) as sidecar:
            sidecar.client.decide("create-ami", grant="alice")
        (line,) = [json.loads(x) for x in log.read_text().splitlines() if '"subject"' in x]
        return line["subject"]["grant"]

    assert label(None, 1) != label(None, 2)
    assert label("state", 1) == label("state", 2)
