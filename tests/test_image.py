"""The image the Dockerfile builds, built for real with podman on the local Debian base (the
default base, python:3.11-slim-bookworm, needs a registry this machine cannot reach; the
Dockerfile installs Debian's Python on a bare Debian instead).

- It runs as the manifests' uid and gid, not root; its entrypoint is ``toolgate``; it holds no
  compiler, Rust toolchain or maturin.
- Started as the pod starts it (``serve``, read-only root filesystem), on the host's loopback
  with free ports, it answers ``toolgate decide --target`` over gRPC: an allow and a deny.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from built import ROOT, image_user, parse_decision, podman, toolgate_image
from sidecar import TOOLGATE, free_port, wait_for

pytestmark = pytest.mark.packaging

UID = "10001"


@pytest.fixture(scope="module")
def image() -> str:
    return toolgate_image()


def test_the_image_is_unprivileged_and_has_no_build_tools(image):
    assert image_user(image) == f"{UID}:{UID}"
    entrypoint = podman("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image)
    assert json.loads(entrypoint.stdout) == ["toolgate"]
    probe = "for t in cargo rustc rustup gcc cc maturin; do command -v $t; done; id -u; true"
    done = podman(
        "run", "--rm", "--network=none", "--entrypoint", "/bin/sh", image, "-c", probe, timeout=120
    )
    assert done.stdout.split() == [UID], done.stdout


def test_the_image_serves_decisions_over_grpc_on_loopback(image):
    port, metrics = free_port(), free_port()
    name = f"toolgate-smoke-{uuid.uuid4().hex[:8]}"
    policy = ROOT / "examples" / "policy.json"
    podman(
        "run",
        "-d",
        "--rm",
        "--name",
        name,
        "--network=host",  # the host's loopback: only 127.0.0.1 ports, free ones
        "--read-only",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "-v",
        f"{policy}:/etc/toolgate/policy.json:ro",
        image,
        "serve",
        "--policy",
        "/etc/toolgate/policy.json",
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics}",
        timeout=120,
    )
    try:
        target = f"127.0.0.1:{port}"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*TOOLGATE, *args], capture_output=True, text=True, timeout=60)

        wait_for(lambda: cli("health", "--target", target).returncode == 0, timeout=60)
        allowed = cli("decide", "--target", target, "--tool", "create-ami", "--grant", "alice")
        decision = parse_decision(allowed.stdout)
        assert (decision["verdict"], decision["code"]) == ("ALLOW", "ALLOWED")
        denied = cli("decide", "--target", target, "--tool", "drop_database")
        decision = parse_decision(denied.stdout)
        assert (decision["verdict"], decision["code"]) == ("DENY", "DEFAULT_DENY")
        # The server in the container runs as the image's user (its uid as the host sees it).
        pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        status = Path(f"/proc/{pid}/status").read_text()
        (uids,) = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
        assert set(uids) == {UID}, uids
    finally:
        podman("rm", "-f", "-t", "0", name, check=False, timeout=120)
