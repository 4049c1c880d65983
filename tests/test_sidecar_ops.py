"""Operating the sidecar, through a real ``toolgate serve`` process: /metrics values after known
traffic, health and graceful shutdown on SIGTERM, the built-in deny-everything policy, and hot
reload (in-place edits, Kubernetes ConfigMap symlink swaps, invalid files, SIGHUP, reloads
under load), and that a half-written policy file is never served."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter
from typing import Any

import grpc
import pytest
import toolgate
from conftest import EXAMPLES, limit, policy
from grpc_health.v1 import health_pb2
from h2_client import RawGrpc
from sidecar import (
    PATIENCE,
    ConfigMapVolume,
    Sidecar,
    free_port,
    toolgate_cli,
    wait_for,
    write_atomically,
    write_json,
)
from toolgate.v1 import decider_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

EXAMPLE = EXAMPLES / "policy.json"


def revision_of(document: dict[str, Any]) -> str:
    return toolgate.Policy.from_dict(document).revision


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_values_after_known_traffic():
    with Sidecar(EXAMPLE, "--capacity", "1024") as s:
        c = s.client
        decide_calls = 0
        first = c.decide("create-ami", grant="a")
        decide_calls += 1
        for _ in range(30):  # 29 more allowed, then one rate-limited
            c.decide("create-ami", grant="a")
            decide_calls += 1
        for _ in range(2):
            c.decide("no_such_tool")
            decide_calls += 1
        c.decide("terminate_instances")
        decide_calls += 1
        c.decide("create-ami", grant="a", dry_run=True)  # RATE_LIMITED, still a decision
        decide_calls += 1
        batch = c.decide_batch(
            [{"tool": "describe_x"}, {"tool": "delete_x"}, {"tool": "create-ami", "grant": "b"}]
        )
        assert [r.code for r in batch] == [
            "ALLOWED",
            "HIDDEN",
            "ALLOWED",
        ]
        assert c.release(first.reservation) is True  # a release is not a decision
        assert c.release(first.reservation) is False

        decisions = s.series("toolgate_decisions_total")
        assert decisions == {
            labels(api="decider", verdict="ALLOW", code="ALLOWED"): 30 + 2,
            labels(api="decider", verdict="DENY", code="RATE_LIMITED"): 2,
            labels(api="decider", verdict="DENY", code="DEFAULT_DENY"): 2,
            labels(api="decider", verdict="DENY", code="HIDDEN"): 1,
            labels(api="decider", verdict="REQUIRE_APPROVAL", code="APPROVAL_REQUIRED"): 1,
        }

        # One observation per Decide call, and one per DecideBatch call whatever its size.
        requests = decide_calls + 1
        assert s.metric("toolgate_decision_duration_seconds_count") == requests
        buckets = {
            dict(lbl)["le"]: v
            for lbl, v in s.series("toolgate_decision_duration_seconds_bucket").items()
        }
        assert buckets["+Inf"] == requests
        ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
        counts = [v for _, v in ordered]
        assert counts == sorted(counts), "histogram buckets must be cumulative"
        assert s.metric("toolgate_decision_duration_seconds_sum") > 0

        assert s.series("toolgate_policy_reloads_total") == {
            labels(result="success"): 0,
            labels(result="failure"): 0,
        }
        assert s.series("toolgate_policy_info") == {labels(revision=first.revision): 1}
        assert first.revision == toolgate.Policy.from_file(EXAMPLE).revision

        # Two counter keys: create-ami_rate for grants a and b.
        assert s.metric("toolgate_counter_table_slots_used") == 2
        assert s.metric("toolgate_counter_table_slots_capacity") == 1024
        assert s.metric("toolgate_counter_table_full_total") == 0

        # Per-tool metrics are opt-in.
        assert "toolgate_tool_decisions" not in s.metrics_text()


def test_metrics_per_tool_when_asked():
    with Sidecar(EXAMPLE, "--metrics-per-tool") as s:
        for _ in range(3):
            s.client.decide("create-ami", grant="a")
        s.client.decide("nope")
        s.client.decide_batch([{"tool": "nope"}, {"tool": "terminate_instances"}])
        # A name the policy does not know, or one MCP does not allow (a label a dashboard
        # would show as it is; list_* allows it), is no series of its own.
        s.client.decide("list_\x1b[2K\nfake-row")
        assert s.series("toolgate_tool_decisions_total") == {
            labels(tool="create-ami", verdict="ALLOW"): 3,
            labels(tool="_other", verdict="DENY"): 2,
            labels(tool="_other", verdict="ALLOW"): 1,
            labels(tool="terminate_instances", verdict="REQUIRE_APPROVAL"): 1,
        }


def test_metrics_text_is_valid_prometheus_exposition():
    with Sidecar(EXAMPLE) as s:
        s.client.decide("create-ami", grant="a")
        text = s.metrics_text()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types == {
        "toolgate_decisions_total": "counter",
        "toolgate_grpc_errors_total": "counter",
        "toolgate_decision_duration_seconds": "histogram",
        "toolgate_policy_reloads_total": "counter",
        "toolgate_policy_info": "gauge",
        "toolgate_policy_last_reload_timestamp_seconds": "gauge",
        "toolgate_policy_last_reload_successful": "gauge",
        "toolgate_policy_last_reload_success_timestamp_seconds": "gauge",
        "toolgate_build_info": "gauge",
        "toolgate_counter_table_slots_used": "gauge",
        "toolgate_counter_table_client_slots": "gauge",
        "toolgate_vouched_grants": "gauge",
        "toolgate_counter_table_slots_capacity": "gauge",
        "toolgate_counter_table_full_total": "counter",
        "toolgate_counter_table_peer_refusals_total": "counter",
        "toolgate_confirmed_calls_total": "counter",
        "toolgate_decision_log_lines_total": "counter",
        "toolgate_decision_log_dropped_total": "counter",
        "toolgate_decision_log_queued": "gauge",
        "toolgate_decision_log_queued_bytes": "gauge",
        "toolgate_approvals": "gauge",
        "toolgate_approval_webhook_deliveries_total": "counter",
        "toolgate_approval_events_dropped_total": "counter",
        # Exported with the local table too (zeros), so dashboards and alerts need no case.
        "toolgate_store_round_trip_seconds": "histogram",
        "toolgate_store_errors_total": "counter",
        "toolgate_store_fallbacks_total": "counter",
        # No sample without a store (nothing to read), but the family is there.
        "toolgate_store_counters_evictable": "gauge",
        # Answers followed through Envoy's ext_proc (zeros until an Envoy asks).
        "toolgate_tool_lists_total": "counter",
        "toolgate_held_bytes": "gauge",
        "toolgate_tools_unlisted_total": "counter",
        "toolgate_tool_lists_recalled_total": "counter",
        "toolgate_tool_lists_judged_before_total": "counter",
        "toolgate_known_answers": "gauge",
        "toolgate_known_answer_bytes": "gauge",
        "toolgate_reservations_released_on_failure_total": "counter",
        # No sample until a listed tool departs from its pin.
        "toolgate_tool_drift_total": "counter",
    }


# --- health and shutdown -----------------------------------------------------------------------


def _not_serving(s: Sidecar) -> Any:
    """Health's answer once the server has begun to stop: NOT_SERVING, or the call refused."""
    h = s.health("toolgate.v1.Decider")
    return h if h in (NOT_SERVING, grpc.StatusCode.UNAVAILABLE) else None


def open_held_call(s: Sidecar) -> tuple[RawGrpc, int]:
    """Open a Decide call on a connection of its own, its message held back: the server has
    read its headers (a PING sent after them is acknowledged), so the call is open there."""
    conn = RawGrpc(s.port)
    stream = conn.open("/toolgate.v1.Decider/Decide")
    conn.ping()
    return conn, stream


def test_sigterm_finishes_the_call_in_flight_then_exits_0():
    """A call the server has accepted (its headers arrived; its message is still to come)
    when SIGTERM lands is answered with its decision; the server refuses new calls meanwhile,
    waits for it, then exits 0."""
    with Sidecar(EXAMPLE, grace=10.0) as s:
        request = decider_pb2.DecideRequest(
            tool="create-ami", subject=decider_pb2.Subject(grant="g")
        ).SerializeToString()
        conn, stream = open_held_call(s)
        with conn:
            s.signal(signal.SIGTERM)
            # The held call's connection is told to open no more calls, as a graceful stop
            # says: a GOAWAY without error that still counts the held call as taken.
            last, error = conn.wait_goaway()
            assert (error, last >= stream) == (0, True)
            wait_for(lambda: _not_serving(s))
            # New calls are refused, but the server waits for the open one.
            with pytest.raises(grpc.RpcError) as refused, toolgate.Client(s.target) as late:
                late.decide("describe_x")
            assert refused.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.CANCELLED,
            )
            assert s.alive
            assert stream not in conn.ended
            conn.send(stream, request)
            answer = conn.wait(stream)
            assert answer.get("grpc-status") == "0", answer
            reply = decider_pb2.DecideResponse.FromString(conn.bodies[stream][5:])
        assert (reply.verdict, reply.code) == (decider_pb2.ALLOW, decider_pb2.ALLOWED)
        assert reply.limits[0].remaining == 29
        assert s.wait(timeout=PATIENCE) == 0
        assert "stopping: NOT_SERVING" in s.stderr
        assert s.stderr.rstrip().endswith("stopped")


def test_sigterm_reports_not_serving_while_draining_then_exits_0():
    """During --drain after SIGTERM, health says NOT_SERVING while decisions are still
    answered (proxies and probes see the state and stop sending); then the process exits 0."""
    with Sidecar(EXAMPLE, drain=3.0) as s:
        assert s.health("toolgate.v1.Decider") == SERVING
        s.signal(signal.SIGTERM)
        wait_for(lambda: s.health("toolgate.v1.Decider") == NOT_SERVING)
        assert s.health("") == NOT_SERVING
        answer = s.client.decide("create-ami", grant="g")
        assert answer.verdict == "ALLOW"
        assert s.wait(timeout=PATIENCE) == 0
        assert s.stderr.rstrip().endswith("stopped")


def test_sigterm_grace_expires_cancels_the_straggler_exits_0():
    """A call still open when the grace period ends is cut off, and the process exits 0
    rather than hang."""
    with Sidecar(EXAMPLE, grace=1.0) as s:
        conn, stream = open_held_call(s)
        with conn:
            s.signal(signal.SIGTERM)
            assert s.wait(timeout=PATIENCE) == 0
            with pytest.raises(ConnectionError):
                conn.wait(stream)
            assert "grpc-status" not in conn.answers.get(stream, {})
            assert s.stderr.rstrip().endswith("stopped")


def test_sigterm_under_load_every_call_answered_or_refused():
    """SIGTERM while three clients stream calls: every call either got its decision or was
    refused; none failed any other way; the process exits 0.

    gRPC's server shutdown cancels (CANCELLED) a call whose headers had arrived but that no
    handler had picked up yet, so a client may see one CANCELLED at the moment of the stop,
    and then only UNAVAILABLE. Such a call was never decided (a bare grpcio server behaves
    the same), so nothing was consumed for it.
    """
    with Sidecar(EXAMPLE, grace=5.0) as s:
        for service in ("", "toolgate.v1.Decider"):
            assert s.health(service) == SERVING

        outcomes: list[list[Any]] = [[] for _ in range(3)]
        going = threading.Barrier(len(outcomes) + 1, timeout=PATIENCE)

        def burst(out: list[Any], n: int = 4000) -> None:
            # A deadline beyond the grace period: what is asserted is the server's answer,
            # not how long a busy machine took to give it.
            with toolgate.Client(s.target, timeout=s.grace + 30) as client:
                refused_in_a_row = 0
                for i in range(n):
                    if i == 100:
                        going.wait()
                    try:
                        out.append(client.decide("describe_x", agent=f"a{i}").code)
                    except grpc.RpcError as err:
                        out.append(err.code())
                        refused_in_a_row += 1
                        if refused_in_a_row >= 50:
                            return

        threads = [threading.Thread(target=burst, args=(out,)) for out in outcomes]
        for t in threads:
            t.start()
        going.wait()
        s.signal(signal.SIGTERM)
        wait_for(lambda: _not_serving(s))
        assert s.wait(timeout=s.grace + 5) == 0
        for t in threads:
            t.join(PATIENCE)
            assert not t.is_alive()

        for out in outcomes:
            answered = (
                out.index(grpc.StatusCode.UNAVAILABLE)
                if grpc.StatusCode.UNAVAILABLE in out
                else len(out)
            )
            head, tail = out[:answered], out[answered:]
            assert len(head) >= 100
            # Decisions, then at most one call cut by the stop, then refusals only.
            if head[-1] == grpc.StatusCode.CANCELLED:
                head = head[:-1]
            assert set(head) == {"ALLOWED"}, Counter(out)
            assert set(tail) == {grpc.StatusCode.UNAVAILABLE}, Counter(out)
        assert "Traceback" not in s.stderr


def test_sigint_also_stops_cleanly():
    with Sidecar(EXAMPLE) as s:
        s.signal(signal.SIGINT)
        assert s.wait(timeout=s.grace + 5) == 0


def test_a_second_sidecar_on_a_taken_port_fails():
    with Sidecar(EXAMPLE) as s:
        result = toolgate_cli(
            "serve", "--policy", EXAMPLE, "--listen", s.target, "--metrics-listen", "off"
        )
        assert result.returncode == 2
        assert "cannot listen" in result.stderr
        assert s.client.decide("describe_x").code == "ALLOWED"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--capacity", "0"], "--capacity must be at least 1"),
        (["--reservations", "0"], "--reservations must be at least 1"),
        (["--capacity", str(2**24 + 1)], "a counter table has at most 16777216 slots"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--metrics-listen", "nonsense"], "expected HOST:PORT, got 'nonsense'"),
        (["--metrics-listen", "127.0.0.1:99999"], "port must be 0-65535"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_serve_options_exit_2_with_a_message(option, message):
    result = toolgate_cli("serve", "--listen", f"127.0.0.1:{free_port()}", *option, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# --- no policy ---------------------------------------------------------------------------------


def test_no_policy_serves_deny_everything_and_says_so():
    with Sidecar(None) as s:
        assert s.health() == SERVING
        assert "deny-everything" in s.stderr
        for tool in ("create-ami", "describe_x", "anything"):
            r = s.client.decide(tool, grant="g", session="s", agent="a", server="github")
            assert (r.verdict, r.code, r.rule) == (
                "DENY",
                "DEFAULT_DENY",
                "/default",
            )
        assert s.metric("toolgate_policy_info", revision=r.revision) == 1


def test_no_policy_sighup_does_not_kill_the_sidecar():
    """SIGHUP means "reload"; with nothing to reload the sidecar must keep serving (the
    default action of SIGHUP would terminate it)."""
    with Sidecar(None) as s:
        s.signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP" in s.stderr or not s.alive)
        assert s.alive, s.stderr
        assert s.client.decide("x").code == "DEFAULT_DENY"


# --- hot reload --------------------------------------------------------------------------------


def limited(max_: int, **extra: Any) -> dict[str, Any]:
    return policy({"t": {"limits": [limit("c", max_, "minute", "grant")]}, **extra})


#: A settle period that never ends during a test: an in-place edit is never loaded by itself.
SETTLE_NEVER = ("--reload-settle", "3600")
#: The sidecars' --reload-interval (the Sidecar default).
POLL = 0.2

OLD_YAML = 'version: "1"\ndefault: deny\n'
FULL_YAML = (EXAMPLES / "policy.yaml").read_text()
#: The example cut at a line boundary just before create_issue's deny_if: a valid policy,
#: and a looser one.
CUT_YAML = FULL_YAML[: FULL_YAML.index("    deny_if:")]


#: A call the example policy denies by its deny_if, and the cut allows.
PROD_ISSUE: dict[str, Any] = {
    "grant": "g",
    "session": "s",
    "arguments": {"repo": "prod/app"},
}


def prod_issue(s: Sidecar) -> int:
    """The sidecar's code for ``create_issue`` with PROD_ISSUE."""
    return s.client.decide("create_issue", **PROD_ISSUE).code


def let_it_poll(times: int = 5) -> None:
    """Give the watcher a few more looks at the file (no assertion on time: whatever it does
    in this time, it must never serve what the test then checks it does not)."""
    time.sleep(times * POLL)


def test_in_place_edit_reloads_and_counters_survive(tmp_path):
    path = write_json(tmp_path / "policy.json", limited(10))
    with Sidecar(path) as s:
        codes = [s.client.decide("t", grant="g").code for _ in range(11)]
        assert codes == ["ALLOWED"] * 10 + ["RATE_LIMITED"]

        new = limited(12)
        write_json(path, new)  # truncate and write, in place
        s.wait_revision(revision_of(new))

        codes = [s.client.decide("t", grant="g").code for _ in range(3)]
        assert codes == ["ALLOWED"] * 2 + ["RATE_LIMITED"]
        last = s.client.decide("t", grant="g", dry_run=True)
        assert last.limits[0].max == 12
        assert last.limits[0].remaining == 0
        assert s.metric("toolgate_policy_info", revision=revision_of(new)) == 1
        assert (s.metric("toolgate_policy_reloads_total", result="success") or 0) >= 1


def test_configmap_symlink_swap(tmp_path):
    """The kubelet's ConfigMap update: policy.json -> ..data/policy.json, ..data -> a
    timestamped directory; an update writes a new directory and renames a new ..data symlink
    over the old one. A swap is a whole new file: loaded at once, whatever the settle."""
    v1 = policy({"a": {}})
    v2 = policy({"b": {}}, hide=["a"])
    volume = ConfigMapVolume(tmp_path / "config", {"policy.json": json.dumps(v1)})

    with Sidecar(volume.path / "policy.json", *SETTLE_NEVER) as s:
        assert s.client.decide("a").code == "ALLOWED"
        assert s.client.decide("b").code == "DEFAULT_DENY"
        assert s.revision() == revision_of(v1)

        volume.update({"policy.json": json.dumps(v2)})

        s.wait_revision(revision_of(v2))
        assert s.client.decide("a").code == "HIDDEN"
        assert s.client.decide("b").code == "ALLOWED"
        s.wait_reloads("success", 1)
        assert s.metric("toolgate_policy_reloads_total", result="failure") == 0
        assert s.series("toolgate_policy_info") == {labels(revision=revision_of(v2)): 1}


INVALID = """{
  "version": "1",
  "default": "perhaps",
  "tools": {
    "t": {
      "limits": [{"counter": "c", "window": "fortnight", "max": 10, "scope": "grant"}]
    },
    "u": {"actoin": "deny"}
  }
}
"""


def test_a_half_written_yaml_policy_is_never_served(tmp_path):
    """An in-place write of the example policy that pauses where the file, cut at a line
    boundary, is a valid policy without create_issue's deny_if: the call that deny_if denies
    is never allowed, neither the cut nor the finished file is loaded until SIGHUP, and the
    wait is logged once."""
    cut = toolgate.Engine(toolgate.Policy.from_str(CUT_YAML, format="yaml"))
    assert cut.decide("create_issue", **PROD_ISSUE).allowed
    path = tmp_path / "policy.yaml"
    path.write_text(OLD_YAML)
    with Sidecar(path, *SETTLE_NEVER) as s:
        old = s.revision()
        assert prod_issue(s) == "DEFAULT_DENY"

        with path.open("r+") as f:  # the same file (inode), as an editor saving over it
            f.truncate()
            f.write(CUT_YAML)
            f.flush()
            wait_for(lambda: "changed in place" in s.stderr)  # the watcher has seen it
            let_it_poll()
            assert prod_issue(s) == "DEFAULT_DENY"
            assert s.revision() == old
            f.write(FULL_YAML[len(CUT_YAML) :])
        let_it_poll()
        assert prod_issue(s) == "DEFAULT_DENY"
        assert s.revision() == old
        assert s.series("toolgate_policy_reloads_total") == {
            labels(result="success"): 0,
            labels(result="failure"): 0,
        }

        s.signal(signal.SIGHUP)  # the operator says the file is complete
        s.wait_revision(toolgate.Policy.from_str(FULL_YAML, format="yaml").revision)
        assert prod_issue(s) == "CONDITION_FAILED"
        get = s.client.decide("get_issue", grant="g", session="s")
        assert get.code == "ALLOWED"
        assert s.metric("toolgate_policy_reloads_total", result="success") == 1
        waiting = [line for line in s.stderr.splitlines() if "changed in place" in line]
        assert len(waiting) == 1, waiting
        assert (
            f"policy {path} changed in place; loading it once its writer has closed it and it"
            " has stayed unchanged for 3600s" in waiting[0]
        )


def test_a_writer_pausing_longer_than_the_settle_period_is_waited_for(tmp_path):
    """Settle 0.1 s, and the writer keeps the file open on the cut for many times that: the
    sidecar goes on serving the old policy until the writer closes the finished file."""
    path = tmp_path / "policy.yaml"
    path.write_text(OLD_YAML)
    with Sidecar(path, "--reload-settle", "0.1") as s:
        old = s.revision()
        with path.open("r+") as f:
            f.truncate()
            f.write(CUT_YAML)
            f.flush()
            wait_for(lambda: "changed in place" in s.stderr)
            let_it_poll()
            assert prod_issue(s) == "DEFAULT_DENY"
            assert s.revision() == old
            f.write(FULL_YAML[len(CUT_YAML) :])
        s.wait_revision(toolgate.Policy.from_str(FULL_YAML, format="yaml").revision)
        assert prod_issue(s) == "CONDITION_FAILED"
        assert s.metric("toolgate_policy_reloads_total", result="success") == 1


def test_a_policy_renamed_into_place_is_loaded_at_once(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(OLD_YAML)
    with Sidecar(path, *SETTLE_NEVER) as s:
        assert prod_issue(s) == "DEFAULT_DENY"
        write_atomically(path, FULL_YAML)
        s.wait_revision(toolgate.Policy.from_str(FULL_YAML, format="yaml").revision)
        assert prod_issue(s) == "CONDITION_FAILED"
        assert s.metric("toolgate_policy_reloads_total", result="success") == 1
        assert "changed in place" not in s.stderr


def test_invalid_file_keeps_the_old_policy_and_logs_every_error(tmp_path):
    good = limited(10)
    path = write_json(tmp_path / "policy.json", good)
    old = revision_of(good)
    with pytest.raises(toolgate.PolicyError) as info:
        toolgate.Policy.from_str(INVALID)
    errors = info.value.errors
    assert len(errors) >= 3

    with Sidecar(path) as s:
        assert [s.client.decide("t", grant="g").code for _ in range(3)] == ["ALLOWED"] * 3

        write_atomically(path, INVALID)
        s.wait_reloads("failure", 1)

        assert s.metric("toolgate_policy_reloads_total", result="failure") == 1
        assert s.metric("toolgate_policy_reloads_total", result="success") == 0
        assert s.series("toolgate_policy_info") == {labels(revision=old): 1}
        r = s.client.decide("t", grant="g")
        assert (r.code, r.revision, r.limits[0].remaining) == ("ALLOWED", old, 6)
        assert s.client.decide("u").code == "DEFAULT_DENY"

        log = s.stderr
        assert f"policy {path} is invalid ({len(errors)} errors); keeping revision {old}" in log
        lines = log.splitlines()
        for e in errors:
            expected = f"{path}: {e.pointer}: {e.message} (line {e.line})"
            assert [ln for ln in lines if ln.endswith(expected)], (expected, log)

        # Fixing the file is picked up, and the counter is still there.
        fixed = limited(7)
        write_atomically(path, json.dumps(fixed))
        s.wait_revision(revision_of(fixed))
        codes = [s.client.decide("t", grant="g").code for _ in range(4)]
        assert codes == ["ALLOWED"] * 3 + ["RATE_LIMITED"]
        assert s.metric("toolgate_policy_reloads_total", result="failure") == 1
        assert s.metric("toolgate_policy_reloads_total", result="success") == 1


def test_unreadable_policy_keeps_the_old_one(tmp_path):
    """The file vanishing (a botched deploy) keeps the loaded policy; it comes back with the
    file."""
    doc = limited(10)
    path = write_json(tmp_path / "policy.json", doc)
    with Sidecar(path) as s:
        path.unlink()
        s.signal(signal.SIGHUP)  # forced: an unreadable file is a failed reload
        s.wait_reloads("failure", 1)
        assert s.client.decide("t", grant="g").code == "ALLOWED"
        assert s.alive
        new = limited(3)
        write_json(path, new)
        s.wait_revision(revision_of(new))


def test_sighup_forces_a_reload(tmp_path):
    doc = limited(10)
    path = write_json(tmp_path / "policy.json", doc)
    with Sidecar(path, reload_interval=60) as s:  # no polling: only SIGHUP reloads
        assert s.metric("toolgate_policy_reloads_total", result="success") == 0
        s.signal(signal.SIGHUP)
        s.wait_reloads("success", 1)
        assert s.revision() == revision_of(doc)

        new = limited(2)
        write_json(path, new)
        s.signal(signal.SIGHUP)
        s.wait_reloads("success", 2)
        assert s.revision() == revision_of(new)
        assert s.metric("toolgate_policy_reloads_total", result="failure") == 0
        assert s.alive


def test_no_rpc_fails_while_reloading_under_load(tmp_path):
    """Decide calls stream in while the file flips between two valid policies about ten
    times: no call fails, and each answer carries one of the two revisions."""
    a = policy({"t": {"limits": [limit("c", 10**9, "minute", "global")]}})
    b = policy({"t": {"reason": "version b"}, "u": {}})
    revisions = {revision_of(a), revision_of(b)}
    assert len(revisions) == 2
    path = write_json(tmp_path / "policy.json", a)

    with Sidecar(path) as s:
        errors: list[Any] = []
        seen: Counter[str] = Counter()
        done = threading.Event()

        def load(limit_calls: int = 50_000) -> None:
            with toolgate.Client(s.target, timeout=30) as client:
                for i in range(limit_calls):
                    if done.is_set() and i >= 2000:
                        return
                    try:
                        r = client.decide("t", grant="g")
                        seen[r.revision] += 1
                        if r.code != "ALLOWED":
                            errors.append(r)
                    except grpc.RpcError as err:
                        errors.append(err)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            for i in range(10):
                doc = b if i % 2 == 0 else a
                write_json(path, doc)  # in place: the watcher may even catch it half-written
                s.wait_revision(revision_of(doc))
        finally:
            done.set()
            worker.join(60)
        assert not worker.is_alive()
        assert errors == []
        assert set(seen) == revisions, seen
        assert sum(seen.values()) >= 2000
        assert (s.metric("toolgate_policy_reloads_total", result="success") or 0) >= 10
        assert s.alive


def test_reload_log_names_both_revisions(tmp_path):
    a, b = limited(10), limited(11)
    path = write_json(tmp_path / "policy.json", a)
    with Sidecar(path, "--log-format", "json") as s:
        write_atomically(path, json.dumps(b))
        s.wait_revision(revision_of(b))
        wait_for(lambda: "policy reloaded" in s.stderr)
        entries = [json.loads(line) for line in s.stderr.splitlines()]
        [reloaded] = [e for e in entries if e["msg"].startswith("policy reloaded")]
        assert reloaded["msg"] == f"policy reloaded: revision {revision_of(a)} -> {revision_of(b)}"
        assert reloaded["level"] == "info"
        assert reloaded["logger"] == "toolgate.reload"
