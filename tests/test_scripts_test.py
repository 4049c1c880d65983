"""scripts/test runs every stage whatever an earlier one found, and ends with each stage's
result: a failed lint does not hide the tests, nor failing tests the packaging tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_stages(body: str) -> subprocess.CompletedProcess[str]:
    script = f"set -euo pipefail\ncd {ROOT}\n. scripts/stages.sh\n{body}\nsummary\n"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_every_stage_runs_and_the_summary_says_which_failed():
    done = run_stages(
        'stage "first" true\n'
        'stage "second" false\n'
        "piped() { false | cat; }\n"
        'stage "third, a failing pipeline" piped\n'
        'stage "fourth" bash -c "echo ran fourth; exit 3"'
    )
    assert done.returncode == 1, done.stderr
    assert "ran fourth" in done.stdout
    summary = done.stdout.split("== summary\n")[1].splitlines()
    assert [line.split()[0] for line in summary] == ["ok", "FAILED", "FAILED", "FAILED"]
    assert summary[1].endswith("second (exit 1)")
    assert summary[3].endswith("fourth (exit 3)")


def test_all_stages_passing_exit_0():
    done = run_stages('stage "one" true\nstage "two" true')
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("two\n")


def test_scripts_test_uses_the_stages_for_everything_it_checks():
    text = (ROOT / "scripts" / "test").read_text()
    after = text.split(". scripts/stages.sh", 1)[1]
    for check in ("cargo fmt", "clippy", "ruff check", "ruff format", "stubtest", "go_lint"):
        assert check in after
    # Beside pytest, the release is made and then the packaging tests run on it; their stage
    # waits for both and prints what they said.
    beside = after.split("(\n", 1)[1].split(') >"$PACKAGING_LOG"', 1)[0]
    assert beside.index("bash scripts/release") < beside.index("bash scripts/test-packaging")
    assert 'stage "packaging (beside pytest, once the release is made)" packaging_result' in after
    body = after.split("packaging_result() {", 1)[1].split("\n}\n", 1)[0]
    assert 'wait "$PACKAGING_PID"' in body and 'cat "$PACKAGING_LOG"' in body
    # cargo test runs beside pytest as well, started before it, its stage after pytest's.
    started = after.index('cargo_test >"$CARGO_TEST_LOG" 2>&1 &')
    assert started < after.index('stage "pytest"')
    assert after.index('stage "pytest"') < after.index(
        'stage "cargo test (beside pytest)" cargo_test_result'
    )
    assert after.rstrip().endswith("summary")
