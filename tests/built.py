"""Shared helpers for the packaging tests (marker ``packaging``, run by scripts/test-packaging):
the wheel scripts/build-wheel makes, and podman images built from the Dockerfile and from
tests/images/ on the local Debian base that scripts/containers-setup makes (scripts/images.py,
which scripts/kube-play uses too).

Anything missing (podman, the base image) skips the test, unless the ``CI`` environment
variable is set: CI installs them (scripts/test-packaging), so there it is a failure.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import images
import release
from images import (
    BASE_IMAGE,
    ENGINE,
    INPUTS_LABEL,
    NODE_IMAGE,
    ROOT,
    TOOLGATE_IMAGE,
    ULIMITS,
    VERSION,
    Unavailable,
)

T = TypeVar("T")

__all__ = [
    "BASE_IMAGE",
    "ENGINE",
    "ENVOY_IMAGE",
    "INPUTS_LABEL",
    "NODE_IMAGE",
    "ROOT",
    "TOOLGATE_IMAGE",
    "ULIMITS",
    "VERSION",
]

ENVOY_IMAGE = images.envoy_tag()


def unavailable(reason: str) -> None:
    """Skip for want of a tool, except in CI, where scripts/test-packaging installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the packaging tests: scripts/test-packaging)")
    pytest.skip(reason)


def _or_skip(build: Callable[..., T], *args: object) -> T:
    """``build(*args)``, skipping (failing in CI) for want of a tool, failing if it fails."""
    try:
        return build(*args)
    except Unavailable as err:
        unavailable(str(err))
        raise
    except RuntimeError as err:
        raise AssertionError(str(err)) from None


def podman_path() -> str:
    return _or_skip(images.podman_path)


def podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return _or_skip(lambda: images.podman(*args, timeout=timeout, check=check))


def require_base_image() -> None:
    _or_skip(images.require_base_image)


def build_wheel() -> Path:
    return _or_skip(images.build_wheel)


def build_image(
    tag: str, containerfile: Path, context: Path, inputs: list[Path], args: dict[str, str]
) -> str:
    return _or_skip(images.build_image, tag, containerfile, context, inputs, args)


def toolgate_image(arch: str = "amd64") -> str:
    return _or_skip(images.toolgate_image, arch)


def envoy_image(workdir: Path) -> str:
    return _or_skip(images.envoy_image, workdir)


def node_image(workdir: Path) -> str:
    return _or_skip(images.node_image, workdir)


def image_user(tag: str) -> str:
    return podman("image", "inspect", "--format", "{{.Config.User}}", tag).stdout.strip()


def parse_decision(stdout: str) -> dict[str, object]:
    """The JSON object ``toolgate decide`` prints for one decision."""
    (line,) = [x for x in stdout.splitlines() if x.strip()]
    decision = json.loads(line)
    assert isinstance(decision, dict)
    return decision


def wheel_tag(wheel: Path) -> tuple[str, str, str]:
    """(python, abi, platform) tags of a wheel file name."""
    m = re.fullmatch(r"[^-]+-[^-]+-([^-]+)-([^-]+)-([^-]+)\.whl", wheel.name)
    assert m, wheel.name
    return m.group(1), m.group(2), m.group(3)


def released() -> release.Artifacts:
    """This checkout's release, made and checked by ``scripts/release VERSION --no-tag`` (its
    wheels built with the ``wheel-check`` profile), once per test run: the packaging tests of
    the wheels and the images test its artifacts."""
    if os.geteuid() != 0 and shutil.which("podman") is None:
        unavailable("scripts/release needs root (it installs podman) or podman")
    made = _release()
    if isinstance(made, str):
        pytest.fail(made)
    return made


@functools.cache
def _release() -> release.Artifacts | str:
    """The release, or why it failed: a failure is kept too, not tried again by each test.
    scripts/test makes it beside pytest and names it (TOOLGATE_RELEASE_DIR), or the log of its
    failure (TOOLGATE_RELEASE_LOG); else it is made here."""
    if made := os.environ.get("TOOLGATE_RELEASE_DIR"):
        return release.Artifacts((ROOT / made).resolve(), VERSION)
    if failed := os.environ.get("TOOLGATE_RELEASE_LOG"):
        return "scripts/release failed:\n" + (ROOT / failed).read_text(errors="replace")[-6000:]
    out = ROOT / "target" / "release-test" / VERSION
    done = subprocess.run(
        ["bash", "scripts/release", VERSION, "--no-tag", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "TOOLGATE_WHEEL_PROFILE": "wheel-check"},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        return "scripts/release failed:\n" + done.stdout[-3000:] + done.stderr[-3000:]
    return release.Artifacts(out, VERSION)


def load_image(archive: Path, tag: str) -> str:
    """An image archive loaded into podman as ``tag``; the name it carried."""
    return _or_skip(release.load_image, archive, tag)
