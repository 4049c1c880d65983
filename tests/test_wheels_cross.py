"""The wheels platform teams install, as the release makes them (tests/built.py's ``released``):
``scripts/build-wheel --all`` cross-builds ``manylinux_2_17`` and ``musllinux_1_2`` wheels for
x86_64 and aarch64 (zig as the linker).

- Each is named for its tag, and its extension is built for that machine: for manylinux,
  auditwheel (run by the script) finds it consistent with the tag; for musllinux, its ELF
  needs musl's libc alone and no glibc symbol (auditwheel reads musl wheels only on a musl
  host).
- The x86_64 musllinux wheel, installed with pip for that platform (binary wheels only), runs
  on a musl userland (CPython built with musl-gcc by scripts/musl-python, as no Alpine image
  is reachable): the binding decides, and ``toolgate serve`` answers ``toolgate decide`` from
  this machine over gRPC. The check the script runs on musllinux wheels (no initial-exec
  thread-locals, which musl's loader refuses in an extension) refuses a glibc build.
- The aarch64 manylinux wheel is installed and run on arm64 Debian under qemu-user-static by
  tests/test_image.py (the arm64 image) and tests/test_kube_play.py (that image in a pod).

The wheels are built with the ``wheel-check`` profile (the release code, less optimised and
built incrementally, to build faster); released wheels are built with ``release`` by the same
script.
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
from built import ROOT, VERSION, released, unavailable, wheel_tag
from elftools.elf.elffile import ELFFile
from sidecar import _LIVE, dies_with_parent, free_port, wait_for

pytestmark = pytest.mark.packaging

TAGS = {
    "manylinux_2_17_x86_64": "EM_X86_64",
    "manylinux_2_17_aarch64": "EM_AARCH64",
    "musllinux_1_2_x86_64": "EM_X86_64",
    "musllinux_1_2_aarch64": "EM_AARCH64",
}


@pytest.fixture(scope="module")
def wheels() -> dict[str, Path]:
    """The release's four wheels (scripts/release, which builds them with
    ``scripts/build-wheel --all``)."""
    a = released()
    return {platform: a.wheel(platform) for platform in TAGS}


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


def test_the_musl_check_refuses_an_extension_musl_would_not_load(wheels):
    # The glibc build keeps mimalloc's initial-exec thread-locals; musl's loader refuses them.
    checked = subprocess.run(
        [sys.executable, "scripts/musl_wheel_check.py", str(wheels["manylinux_2_17_x86_64"]),
         "x86_64"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 1
    assert "DF_STATIC_TLS" in checked.stderr and "not musl's libc.so alone" in checked.stderr


def musl_python() -> Path:
    built = subprocess.run(
        ["bash", "scripts/musl-python"], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    if built.returncode != 0:
        unavailable(f"no musl userland (bash scripts/musl-python): {built.stderr[-2000:]}")
    python = Path(built.stdout.split()[-1])
    with open(python, "rb") as f:
        (interp,) = [s for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_INTERP"]
        assert interp.get_interp_name() == "/lib/ld-musl-x86_64.so.1"
    return python


def test_the_musl_wheel_serves_decisions_on_musl(wheels, tmp_path):
    python = [str(musl_python())]
    site = tmp_path / "site"
    # pip installs for the musl platform (binary wheels only: nothing can be compiled).
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--only-binary=:all:",
         "--platform", "musllinux_1_2_x86_64", "--python-version", "3.11",
         "--implementation", "cp", "--target", str(site),
         str(wheels["musllinux_1_2_x86_64"])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    policy = str(ROOT / "examples" / "policy.json")
    probe = (
        f"import toolgate; e = toolgate.Engine(toolgate.Policy.from_file({policy!r})); "
        "print(toolgate._core.__file__.endswith('.so'), "
        "e.decide('create-ami', grant='a', arguments={'name': 'x'}).code)"
    )
    ran = subprocess.run([*python, "-c", probe], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True", "ALLOWED"]

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

        allowed = wait_for(lambda: decide("create-ami", '{"name": "x"}'), timeout=120)
        assert allowed["code"] == "ALLOWED", log.read_text()
        # The sidecar that answered is a musl process: musl's loader and libc, and no glibc.
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        loader = os.path.realpath("/lib/ld-musl-x86_64.so.1")
        assert loader in maps and "libc.so.6" not in maps, maps
        denied = decide("run_command", '{"command": "rm -rf /"}')
        assert denied is not None and denied["code"] == "CONDITION_FAILED"
        assert f"on 127.0.0.1:{port}" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        _LIVE.discard(proc)
