"""The wheels platform teams install: ``scripts/build-wheel --all`` cross-builds
``manylinux_2_17`` and ``musllinux_1_2`` wheels for x86_64 and aarch64 (zig as the linker).

- Each is named for its tag, and its extension is built for that machine: for manylinux,
  auditwheel (run by the script) finds it consistent with the tag; for musllinux, its ELF
  needs musl's libc alone and no glibc symbol (auditwheel reads musl wheels only on a musl
  host).
- The aarch64 manylinux wheel, installed with pip for that platform (binary wheels only),
  runs in an arm64 Debian userland under qemu-user-static: the binding decides, and
  ``toolgate serve`` answers ``toolgate decide`` from this machine over gRPC.

The wheels are built with the ``wheel-check`` profile (the release code, without cross-crate
LTO, to build faster); released wheels are built with ``release`` by the same script.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from built import ROOT, VERSION, unavailable, wheel_tag
from elftools.elf.elffile import ELFFile
from sidecar import _LIVE, dies_with_parent, free_port, wait_for

pytestmark = pytest.mark.packaging

ARM64_ROOTFS = Path("/var/tmp/toolgate-arm64-bookworm")
TAGS = {
    "manylinux_2_17_x86_64": "EM_X86_64",
    "manylinux_2_17_aarch64": "EM_AARCH64",
    "musllinux_1_2_x86_64": "EM_X86_64",
    "musllinux_1_2_aarch64": "EM_AARCH64",
}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    env = {**os.environ, "TOOLGATE_WHEEL_DIR": str(out), "TOOLGATE_WHEEL_PROFILE": "wheel-check"}
    built = subprocess.run(
        ["bash", "scripts/build-wheel", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    paths = [Path(line) for line in built.stdout.split()]
    by_tag = {}
    for path in paths:
        *_, platform = wheel_tag(path)
        # maturin names a manylinux_2_17 wheel for its legacy alias too.
        by_tag[platform.split(".")[-1]] = path
    return by_tag


def test_each_wheel_is_tagged_and_built_for_its_platform(wheels):
    assert sorted(wheels) == sorted(TAGS)
    for tag, wheel in wheels.items():
        python, abi, _ = wheel_tag(wheel)
        assert (python, abi) == ("cp311", "abi3"), wheel.name
        assert wheel.name.startswith(f"toolgate-{VERSION}-")
        with zipfile.ZipFile(wheel) as z:
            (so,) = [n for n in z.namelist() if n.endswith(".so")]
            elf = ELFFile(io.BytesIO(z.read(so)))
        assert so == "toolgate/_core.abi3.so"
        assert elf["e_machine"] == TAGS[tag], (tag, elf["e_machine"])


def arm64_python() -> list[str]:
    qemu = "/usr/bin/qemu-aarch64-static"
    if not Path(qemu).exists() or not (ARM64_ROOTFS / "usr/bin/python3.11").exists():
        unavailable("no qemu-aarch64-static or arm64 userland (scripts/containers-setup)")
    return [qemu, "-L", str(ARM64_ROOTFS), str(ARM64_ROOTFS / "usr/bin/python3.11")]


def test_the_arm64_wheel_serves_decisions_under_emulation(wheels, tmp_path):
    python = arm64_python()
    site = tmp_path / "site"
    # pip installs for the arm64 platform (binary wheels only: nothing can be compiled).
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--only-binary=:all:",
         "--platform", "manylinux_2_17_aarch64", "--platform", "manylinux2014_aarch64",
         "--python-version", "3.11", "--implementation", "cp",
         "--target", str(site), str(wheels["manylinux_2_17_aarch64"])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    policy = str(ROOT / "examples" / "policy.json")
    probe = (
        f"import platform, toolgate; e = toolgate.Engine(toolgate.Policy.from_file({policy!r})); "
        "print(platform.machine(), e.decide('create-ami', grant='a', arguments={'name': 'x'}).code)"
    )
    ran = subprocess.run(
        [*python, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["aarch64", "ALLOWED"]

    port = free_port()
    # The package's console script, as pip would have written it for this interpreter.
    cli = "import sys; from toolgate.cli.main import main; sys.argv[0] = 'toolgate'; main()"
    serve = [*python, "-c", cli, "serve", "--policy", policy,
             "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off"]  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(dies_with_parent(serve), env=env, stdout=err, stderr=err)
    _LIVE.add(proc)
    try:
        host = [str(Path(sys.executable).parent / "toolgate")]

        def decide(tool: str, arguments: str) -> dict | None:
            args = ["decide", "--target", f"127.0.0.1:{port}", "--tool", tool, "--grant", "a"]
            r = subprocess.run(
                [*host, *args, "--args", arguments], capture_output=True, text=True, timeout=60
            )
            return json.loads(r.stdout) if r.returncode == 0 else None

        # Under emulation the sidecar starts slowly: wait for its first answer.
        allowed = wait_for(lambda: decide("create-ami", '{"name": "x"}'), timeout=300)
        assert allowed["code"] == "ALLOWED", log.read_text()
        denied = decide("run_command", '{"command": "rm -rf /"}')
        assert denied is not None and denied["code"] == "CONDITION_FAILED"
        assert f"on 127.0.0.1:{port}" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        _LIVE.discard(proc)
