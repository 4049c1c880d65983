"""The wheels platform teams install: ``scripts/build-wheel --all`` cross-builds
``manylinux_2_17`` and ``musllinux_1_2`` wheels for x86_64 and aarch64 (zig as the linker).

- Each is named for its tag, and its extension is built for that machine: for manylinux,
  auditwheel (run by the script) finds it consistent with the tag; for musllinux, its ELF
  needs musl's libc alone and no glibc symbol (auditwheel reads musl wheels only on a musl
  host).
- The aarch64 manylinux wheel is installed and run on arm64 Debian under qemu-user-static by
  tests/test_image.py (the arm64 image) and tests/test_kube_play.py (that image in a pod).

The wheels are built with the ``wheel-check`` profile (the release code, without cross-crate
LTO, to build faster); released wheels are built with ``release`` by the same script.
"""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from built import ROOT, VERSION, wheel_tag
from elftools.elf.elffile import ELFFile

pytestmark = pytest.mark.packaging

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
