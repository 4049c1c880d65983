"""The wheel scripts/build-wheel makes: one abi3 manylinux file that pip installs, with its
dependencies, on a machine without Rust, and that then serves decisions.

- Its name says CPython 3.11+ (``cp311-abi3``) and a manylinux policy; auditwheel (run by the
  script) finds the extension consistent with that policy; the extension inside is the abi3
  one, and no sources or Rust files are packed.
- Installed with pip into a new virtual environment, from binary wheels only (so nothing can
  be compiled), with no Rust toolchain anywhere on PATH and no CARGO_HOME/RUSTUP_HOME: the
  ``toolgate`` it installs serves the example policy (``toolgate serve``, a real process) and
  ``toolgate decide --target`` gets an allow and a deny from it over gRPC on loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from built import ROOT, VERSION, build_wheel, parse_decision, wheel_tag
from sidecar import _LIVE, dies_with_parent, free_port, wait_for

pytestmark = pytest.mark.packaging

#: What a Rust toolchain leaves in the environment.
RUST_VARIABLES = ("CARGO_HOME", "RUSTUP_HOME", "RUSTC", "RUSTC_WRAPPER", "CARGO_TARGET_DIR")


@pytest.fixture(scope="module")
def wheel() -> Path:
    return build_wheel()


def test_the_wheel_is_abi3_manylinux(wheel):
    python, abi, platform = wheel_tag(wheel)
    assert wheel.name.startswith(f"toolgate-{VERSION}-")
    assert (python, abi) == ("cp311", "abi3")
    assert platform.startswith("manylinux_") and platform.endswith("_x86_64"), platform
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(f"toolgate-{VERSION}.dist-info/METADATA").decode()
    assert "toolgate/_core.abi3.so" in names
    assert [n for n in names if n.endswith(".so")] == ["toolgate/_core.abi3.so"]
    assert not [n for n in names if n.endswith((".rs", "Cargo.toml", "Cargo.lock"))]
    assert "toolgate/py.typed" in names and "toolgate/_core.pyi" in names
    assert "Requires-Python: >=3.11" in metadata


def rustless_environment(venv: Path) -> dict[str, str]:
    """The environment minus every trace of Rust and of this checkout: PATH is the new
    environment's bin and the system's directories, none of which has cargo or rustc."""
    env = {k: v for k, v in os.environ.items() if k not in RUST_VARIABLES}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    for tool in ("cargo", "rustc", "rustup", "maturin"):
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} is on the scrubbed PATH"
    return env


def test_the_wheel_installs_and_serves_without_rust(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = rustless_environment(venv)
    # Binary wheels only: pip may not build anything, this package or a dependency.
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--only-binary=:all:", str(wheel)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import toolgate; print(toolgate.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # not this checkout's python/

    toolgate = str(venv / "bin" / "toolgate")
    port, metrics = free_port(), free_port()
    policy = ROOT / "examples" / "policy.json"
    serve = [toolgate, "serve", "--policy", str(policy), "--listen", f"127.0.0.1:{port}"]
    serve += ["--metrics-listen", f"127.0.0.1:{metrics}"]
    proc = subprocess.Popen(
        dies_with_parent(serve),
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _LIVE.add(proc)
    try:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [toolgate, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
            )

        target = f"127.0.0.1:{port}"
        wait_for(lambda: cli("health", "--target", target).returncode == 0, timeout=30)
        allowed = parse_decision(
            cli("decide", "--target", target, "--tool", "create-ami", "--grant", "alice").stdout
        )
        assert (allowed["verdict"], allowed["code"]) == ("ALLOW", "ALLOWED")
        denied = cli(
            "decide",
            "--target",
            target,
            "--tool",
            "run_command",
            "--args",
            '{"command": "rm -rf /"}',
        )
        decision = parse_decision(denied.stdout)
        assert (decision["verdict"], decision["code"]) == ("DENY", "CONDITION_FAILED")
    finally:
        proc.kill()
        proc.wait(timeout=10)
        _LIVE.discard(proc)
