"""What ``/metrics`` says about the sidecar itself, read from a real scrape of a real
``toolgate serve``: ``toolgate_build_info``, and
the last policy reload's time and result as the policy file goes bad and good again. The
exposition passes ``promtool check metrics``."""

from __future__ import annotations

import re
import subprocess
import time

import toolgate
import toolgate._core
from conftest import policy
from sidecar import Sidecar, write_json
from test_kubernetes_sidecars import PROMTOOL, needs_promtool

GOOD = policy({"create-ami": {}})


def build_info(s: Sidecar) -> dict[str, str]:
    (labels,) = s.series("toolgate_build_info")
    assert s.series("toolgate_build_info")[labels] == 1
    return dict(labels)


def test_build_info_names_version_revision_and_python():
    with Sidecar(GOOD) as s:
        info = build_info(s)
    assert info["version"] == toolgate.__version__
    assert info["revision"] == (toolgate._core.__revision__ or "unknown")
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", info["revision"])
    assert set(info) == {"version", "revision", "python"}
    assert re.fullmatch(r"3\.\d+\.\d+\S*", info["python"])


def last_reload(s: Sidecar) -> tuple[float, float, float]:
    samples = s.samples()

    def one(name: str) -> float:
        return samples[(f"toolgate_policy_last_reload_{name}", frozenset())]

    return one("timestamp_seconds"), one("successful"), one("success_timestamp_seconds")


def test_last_reload_time_and_result_follow_the_policy_file(tmp_path):
    path = write_json(tmp_path / "policy.json", GOOD)
    extra = ["--reload-settle", "0"]
    before_start = time.time()
    with Sidecar(path, *extra) as s:
        started = time.time()
        # The policy loaded at start is the last (successful) load.
        tried, ok, succeeded = last_reload(s)
        assert ok == 1
        assert before_start <= tried == succeeded <= started

        # A bad file: the reload fails, the old policy stays, the failure is the last reload.
        before_bad = time.time()
        path.write_text('{"version": "1", "tools": {"x": {"action": "maybe"}}}')
        s.wait_reloads("failure", 1)
        tried, ok, kept = last_reload(s)
        assert ok == 0
        assert before_bad <= tried <= time.time()
        assert kept == succeeded

        # Fixed: successful again, both times moved on.
        before_fix = time.time()
        write_json(path, policy({"create-ami": {}, "describe_x": {}}))
        s.wait_reloads("success", 1)
        tried, ok, fixed = last_reload(s)
        assert ok == 1
        assert before_fix <= tried == fixed <= time.time()


def test_without_a_policy_file_the_built_in_load_is_the_last_reload():
    with Sidecar(None) as s:
        tried, ok, succeeded = last_reload(s)
    assert ok == 1 and tried == succeeded > 0


#: promtool's exit codes: 0 clean, 3 lint findings (printed, one per line); anything else is
#: text it could not read.
PROMTOOL_READ = (0, 3)


@needs_promtool
def test_the_exposition_passes_promtool():
    with Sidecar(GOOD) as s:
        s.client.decide("create-ami")
        text = s.metrics_text()
    assert "toolgate_build_info{" in text and "toolgate_policy_last_reload_successful " in text
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode in PROMTOOL_READ, done.stdout + done.stderr
    findings = (done.stdout + done.stderr).splitlines()
    mine = [f for f in findings if "build_info" in f or "last_reload" in f]
    assert mine == []
