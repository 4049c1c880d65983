"""The release's images (tests/built.py's ``released``): the image the Dockerfile builds, built
for real with podman on the local Debian base (the
default base, python:3.11-slim-bookworm, needs a registry this machine cannot reach; the
Dockerfile installs Debian's Python on a bare Debian instead), for this machine (amd64) and
for ARM nodes (arm64: from the aarch64 wheel on an arm64 Debian base, built and run under
qemu-user-static, which scripts/containers-setup registers with binfmt_misc).

- It is built for its architecture, and there the binding decides (an arm64 process).

- It runs as the manifests' uid and gid, not root; its entrypoint is ``toolgate``; it holds no
  compiler, Rust toolchain or maturin.
- Started as the pod starts it (``serve``, read-only root filesystem), on the host's loopback
  with free ports, it answers ``toolgate decide --target`` over gRPC: an allow and a deny.
- It carries Envoy's toolgate module for its architecture, needing glibc alone (2.17's
  symbols at most): what Envoy's distroless image has.
- Rebuilding an image (the tests do, whenever the code changed) leaves no unnamed images
  behind: the image it replaced and the stages it only copies from are removed.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from built import (
    BASE_IMAGE,
    ROOT,
    VERSION,
    build_image,
    image_user,
    load_image,
    parse_decision,
    podman,
    released,
    require_base_image,
)
from elftools.elf.elffile import ELFFile
from images import dangling
from musl_wheel_check import dynamic
from sidecar import TOOLGATE, free_port, wait_for

pytestmark = pytest.mark.packaging

UID = "10001"


#: podman's name for each architecture -> the machine the image's processes run as.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


@pytest.fixture(scope="module", params=sorted(MACHINES))
def image(request: pytest.FixtureRequest) -> Iterator[str]:
    """The release's image for an architecture, loaded from its archive."""
    tag = f"localhost/toolgate-release-test:{VERSION}-{request.param}"
    load_image(released().image(request.param), tag)
    yield tag
    podman("rmi", tag, check=False)


def architecture(image: str) -> str:
    return podman("image", "inspect", "--format", "{{.Architecture}}", image).stdout.strip()


def test_the_image_is_built_for_its_architecture_and_decides_there(image):
    arch = architecture(image)
    probe = (
        "import platform, toolgate; "
        'e = toolgate.Engine(toolgate.Policy.from_str(\'{"version": "1", "tools": {"a": {}}}\')); '
        "print(platform.machine(), e.decide('a', grant='g').code, e.decide('b', grant='g').code)"
    )
    done = podman(
        "run", "--rm", "--arch", arch, "--network=none",
        "--entrypoint", "/opt/toolgate/bin/python", image, "-c", probe, timeout=300,
    )  # fmt: skip
    assert done.stdout.split() == [MACHINES[arch], "ALLOWED", "DEFAULT_DENY"], done.stderr


def test_the_image_is_unprivileged_and_has_no_build_tools(image):
    assert image_user(image) == f"{UID}:{UID}"
    entrypoint = podman("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image)
    assert json.loads(entrypoint.stdout) == ["toolgate"]
    probe = "for t in cargo rustc rustup gcc cc maturin; do command -v $t; done; id -u; true"
    done = podman(
        "run", "--rm", "--arch", architecture(image), "--network=none",
        "--entrypoint", "/bin/sh", image, "-c", probe, timeout=300,
    )  # fmt: skip
    assert done.stdout.split() == [UID], done.stdout


#: What the module may need of the system: glibc's libraries (and its loader).
GLIBC = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
}
#: ELF's machine names for each architecture podman names.
ELF_MACHINES = {"amd64": "EM_X86_64", "arm64": "EM_AARCH64"}


def glibc_version(name: str) -> tuple[int, ...]:
    """(2, 17) of "GLIBC_2.17"."""
    return tuple(int(n) for n in name.removeprefix("GLIBC_").split("."))


def test_the_image_carries_envoys_module_needing_glibc_alone(image, tmp_path):
    """/opt/toolgate/envoy: libtoolgate.so for the image's architecture, needing glibc alone
    (2.17's symbols at most, as the wheels): Envoy's distroless image has nothing more."""
    arch = architecture(image)
    container = podman("create", "--arch", arch, image).stdout.strip()
    try:
        podman("cp", f"{container}:/opt/toolgate/envoy", str(tmp_path / "envoy"))
    finally:
        podman("rm", "-f", container, check=False)
    assert [p.name for p in (tmp_path / "envoy").iterdir()] == ["libtoolgate.so"]
    with (tmp_path / "envoy" / "libtoolgate.so").open("rb") as f:
        elf = ELFFile(f)
        needed, _, versions = dynamic(elf)
        assert elf["e_machine"] == ELF_MACHINES[arch]
    assert set(needed) <= GLIBC, needed
    newest = max((v for v in versions if v.startswith("GLIBC_2.")), key=glibc_version)
    assert glibc_version(newest) <= (2, 17), newest


def test_the_image_serves_decisions_over_grpc_on_loopback(image):
    port, metrics = free_port(), free_port()
    name = f"toolgate-smoke-{uuid.uuid4().hex[:8]}"
    policy = ROOT / "examples" / "policy.json"
    podman(
        "run",
        "-d",
        "--rm",
        "--arch",
        architecture(image),
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

        # Under emulation (arm64) the server starts slowly: wait for its first answer.
        wait_for(lambda: cli("health", "--target", target).returncode == 0, timeout=300)
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


def test_a_rebuild_leaves_no_unnamed_images(tmp_path):
    # A build of two stages, the image copying from the first: podman keeps that stage's
    # layers, unnamed, beside the image. Each rebuild (new inputs) must take away its own and
    # the image it replaced, or every CI run leaves its stages behind (toolgate's two images'
    # install stages, about 37 MB each: 88 of them held 3.2 GB).
    require_base_image()
    (tmp_path / "Containerfile").write_text(
        f"FROM {BASE_IMAGE} AS stage\nCOPY input /input\nRUN cp /input /copied\n"
        f"FROM {BASE_IMAGE}\nCOPY --from=stage /copied /copied\n"
    )
    tag = f"localhost/toolgate-test-rebuild:{uuid.uuid4().hex[:8]}"
    left_before = dangling()
    built = []
    try:
        for n in range(3):
            (tmp_path / "input").write_text(str(n))
            build_image(tag, tmp_path / "Containerfile", tmp_path, [tmp_path / "input"], {})
            built.append(podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip())
        assert len(set(built)) == 3, "each input was built anew"
        assert dangling() - left_before == set()
        gone = [i for i in built[:-1] if podman("image", "exists", i, check=False).returncode == 0]
        assert gone == [], "the images replaced are removed"
    finally:
        podman("rmi", tag, check=False)
