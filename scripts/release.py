"""Make a release and check each of its artifacts (run by scripts/release, which installs the
tools it needs; docs/releasing.md says what is made and why).

Steps, each stopping the release when it fails:

1. prepare: the version set wherever it is written (``VERSIONED``), Cargo.lock updated, and
   CHANGELOG.md's "Unreleased" section made the version's (skipped when the checkout is at
   the version already: the artifacts of that release are made again);
2. build: the four wheels and the sdist, the amd64 and arm64 images as OCI archives, the Helm
   chart and its repository index, the SBOM, and SHA256SUMS over them all;
3. check: each artifact installed fresh and run;
4. tag: the release commit and an annotated tag ``vVERSION``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / "target" / "tools" / "bin" / "helm"
MUSL_PYTHON = Path("/var/tmp/toolgate-musl-python/bin/python3.11")
POLICY = ROOT / "examples" / "policy.json"
#: A release version: MAJOR.MINOR.PATCH, which Cargo, Helm and pip write alike (a pre-release
#: such as 0.3.0-rc.1 is not: pip names its files 0.3.0rc1).
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
#: Files that write the version, besides Cargo.toml (its workspace version: the one owner), the
#: lock files (``LOCKS``: cargo updates them), CHANGELOG.md (a section per release) and
#: bench/RESULTS.md (a measurement names the version it measured). tests/test_release.py checks
#: that no other tracked file holds the current version.
VERSIONED = (
    "Dockerfile",
    "README.md",
    "deploy/helm/toolgate/Chart.yaml",
    "deploy/helm/toolgate/README.md",
    "deploy/helm/toolgate/values.yaml",
    "deploy/kubernetes/kustomization.yaml",
    "deploy/kubernetes/module/kustomization.yaml",
    "deploy/kubernetes/sidecars/kustomization.yaml",
    "deploy/kubernetes/standalone/toolgate.yaml",
    "docs/envoy-gateway-and-istio.md",
    "docs/kubernetes.md",
    "docs/releasing.md",
    "python/toolgate/cli/main.py",
)
#: Cargo's lock files that name the workspace's crates: the workspace's, and the fuzz targets'
#: (a workspace of their own).
LOCKS = ("Cargo.lock", "rust/fuzz/Cargo.lock")
#: The wheels' platforms: scripts/build-wheel --all, one wheel each.
PLATFORMS = (
    "manylinux_2_17_x86_64",
    "manylinux_2_17_aarch64",
    "musllinux_1_2_x86_64",
    "musllinux_1_2_aarch64",
)
#: The image's architectures -> the wheel each installs (scripts/build-image --wheel).
IMAGE_WHEELS = {"amd64": "manylinux_2_17_x86_64", "arm64": "manylinux_2_17_aarch64"}
#: The name each image archive carries: what a container runtime resolves the chart's default
#: image (repository ``toolgate``, tag the appVersion) to, so that a node which imports the
#: archive (`ctr -n k8s.io images import`, `kind load image-archive`, `podman load`) runs it.
IMAGE_NAME = "docker.io/library/toolgate"
#: The Rust targets the wheels are built for: the dependency graph the SBOM lists.
TARGETS = (
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
)
ENGINE = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]


class ReleaseError(Exception):
    """A release step failed; the message says which and why."""


STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"== release ({time.monotonic() - STARTED:.0f} s): {message}", flush=True)


def run(
    args: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 3600
) -> str:
    """Run a command; its standard output, or ReleaseError with the end of what it printed."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stdout[-3000:] + done.stderr[-3000:]).strip()
        raise ReleaseError(f"{' '.join(map(str, args))} exited {done.returncode}:\n{tail}")
    return done.stdout


def podman(*args: str, timeout: float = 1800) -> str:
    return run(["podman", *ENGINE, *args], timeout=timeout)


def current_version(root: Path = ROOT) -> str:
    return tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["package"]["version"]


# --- prepare ---------------------------------------------------------------------------------


def version_pattern(version: str) -> re.Pattern[str]:
    """``version`` where it is a whole version: not inside a longer one (10.1.0, 0.1.0.1,
    0.1.0-rc.1), with what may follow it (-arm64, a full stop)."""
    return re.compile(rf"(?<![\d.]){re.escape(version)}(?!\d|\.\d|-(?:alpha|beta|rc)\b)")


def set_version(root: Path, old: str, new: str) -> list[str]:
    """Write ``new`` where ``old`` is the version; the files changed."""
    missing = [name for name in VERSIONED if not (root / name).is_file()]
    if missing:
        raise ReleaseError(f"VERSIONED names files that are not there: {', '.join(missing)}")
    changed = []
    cargo = root / "Cargo.toml"
    text = cargo.read_text()
    section = text.index("[workspace.package]")
    head, tail = text[:section], text[section:]
    tail, n = re.subn(rf'(?m)^version = "{re.escape(old)}"$', f'version = "{new}"', tail, count=1)
    if n != 1:
        raise ReleaseError(f'Cargo.toml: no version = "{old}" in [workspace.package]')
    cargo.write_text(head + tail)
    changed.append("Cargo.toml")
    pattern = version_pattern(old)
    for name in VERSIONED:
        path = root / name
        text = path.read_text()
        updated = pattern.sub(new, text)
        if updated != text:
            path.write_text(updated)
            changed.append(name)
    # The workspace's own crates in each lock file; nothing else moves (--workspace). Offline
    # first: a machine that built the project has every crate; else the registry is asked.
    for lock in LOCKS:
        update = ["cargo", "update", "--workspace", "--quiet"]
        try:
            run([*update, "--offline"], cwd=(root / lock).parent)
        except ReleaseError:
            run(update, cwd=(root / lock).parent)
        changed.append(lock)
    return changed


UNRELEASED = "## Unreleased"


def release_changelog(text: str, version: str, day: datetime.date) -> str:
    """CHANGELOG.md with its Unreleased section made ``version``'s, under a new empty one."""
    heading = re.compile(r"(?m)^## .*$")
    starts = [m.start() for m in heading.finditer(text)]
    if not starts or not text[starts[0] :].startswith(UNRELEASED + "\n"):
        raise ReleaseError("CHANGELOG.md: the first section must be '## Unreleased'")
    end = starts[1] if len(starts) > 1 else len(text)
    body = text[starts[0] + len(UNRELEASED) : end].strip()
    if not body:
        raise ReleaseError("CHANGELOG.md: the Unreleased section is empty: say what changed")
    if re.search(rf"(?m)^## {re.escape(version)} \(", text):
        raise ReleaseError(f"CHANGELOG.md already has a section for {version}")
    section = f"{UNRELEASED}\n\n## {version} ({day.isoformat()})\n\n{body}\n\n"
    return text[: starts[0]] + section + text[end:].lstrip("\n")


def changelog_section(text: str, version: str) -> str:
    """The body of ``version``'s section in CHANGELOG.md."""
    m = re.search(rf"(?ms)^## {re.escape(version)} \(.*?\)\n(.*?)(?=^## |\Z)", text)
    if m is None or not m.group(1).strip():
        raise ReleaseError(f"CHANGELOG.md has no section for {version}")
    return m.group(1).strip()


def git(*args: str, root: Path = ROOT) -> str:
    return run(["git", *args], cwd=root).strip()


def require_clean(root: Path) -> None:
    status = git("status", "--porcelain", "--untracked-files=no", root=root)
    if status:
        raise ReleaseError(f"the checkout has changes; commit or stash them first:\n{status}")


def committed_version(root: Path) -> str:
    """The workspace's version at HEAD."""
    text = git("show", "HEAD:Cargo.toml", root=root)
    return tomllib.loads(text)["workspace"]["package"]["version"]


def prepare(root: Path, version: str, day: datetime.date) -> bool:
    """Set the version and the changelog. True when the release commit is still to be made:
    they were set now, or by an earlier run that stopped before committing; False when
    HEAD is at ``version`` already (its artifacts are made again)."""
    old = current_version(root)
    changelog = root / "CHANGELOG.md"
    if old == version:
        changelog_section(changelog.read_text(), version)
        if committed_version(root) != version:
            say(f"the checkout was set to {version} by a run that stopped: going on with it")
            return True
        say(f"the checkout is at {version}: making its artifacts again")
        return False
    require_clean(root)
    # Everything that can refuse is asked before anything is written.
    text = release_changelog(changelog.read_text(), version, day)
    try:
        changed = set_version(root, old, version)
    except ReleaseError:
        git("checkout", "--", ".", root=root)
        raise
    changelog.write_text(text)
    say(f"{old} -> {version} in {', '.join(changed)}, and CHANGELOG.md")
    return True


def tag(root: Path, version: str, prepared: bool) -> None:
    """The release commit (when prepared) and the annotated tag ``vVERSION`` on it."""
    if prepared:
        git("commit", "-q", "-a", "-m", f"release {version}", root=root)
    require_clean(root)
    notes = changelog_section((root / "CHANGELOG.md").read_text(), version)
    # Verbatim: a changelog's `### Fixed` is not a comment to strip.
    message = f"toolgate {version}\n\n{notes}"
    git("tag", "-a", "--cleanup=verbatim", f"v{version}", "-m", message, root=root)
    say(f"tagged v{version} at {git('rev-parse', '--short', 'HEAD', root=root)}")


# --- build -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifacts:
    """A release's files, by what they are."""

    out: Path
    version: str

    def wheel(self, platform: str) -> Path:
        # maturin names a manylinux_2_17 wheel for its legacy alias (manylinux2014) too.
        name = f"toolgate-{self.version}-cp311-abi3-{platform}.whl"
        found = sorted(self.out.glob(f"toolgate-{self.version}-cp311-abi3-*{platform}.whl"))
        return found[0] if len(found) == 1 else self.out / name

    @property
    def sdist(self) -> Path:
        return self.out / f"toolgate-{self.version}.tar.gz"

    def image(self, arch: str) -> Path:
        return self.out / f"toolgate-{self.version}-linux-{arch}.oci.tar"

    @property
    def image_name(self) -> str:
        return f"{IMAGE_NAME}:{self.version}"

    @property
    def chart(self) -> Path:
        return self.out / f"toolgate-{self.version}.tgz"

    @property
    def index(self) -> Path:
        return self.out / "index.yaml"

    @property
    def sbom(self) -> Path:
        return self.out / f"toolgate-{self.version}.cdx.json"

    @property
    def sums(self) -> Path:
        return self.out / "SHA256SUMS"

    def files(self) -> list[Path]:
        """Every artifact SHA256SUMS covers."""
        return [
            *(self.wheel(p) for p in PLATFORMS),
            self.sdist,
            *(self.image(a) for a in IMAGE_WHEELS),
            self.chart,
            self.index,
            self.sbom,
        ]


def build_wheels(a: Artifacts) -> None:
    env = {**os.environ, "TOOLGATE_WHEEL_DIR": str(a.out)}
    run(["bash", "scripts/build-wheel", "--all"], env=env)
    run([sys.executable, "-m", "maturin", "sdist", "--out", str(a.out)])
    missing = [p.name for p in [*(a.wheel(p) for p in PLATFORMS), a.sdist] if not p.is_file()]
    if missing:
        raise ReleaseError(f"scripts/build-wheel and maturin made no {', '.join(missing)}")


def build_images(a: Artifacts) -> None:
    """Each architecture's image from its wheel (scripts/build-image), saved under the name
    the chart's default resolves to."""
    for arch, platform in IMAGE_WHEELS.items():
        built = f"localhost/toolgate-release:{a.version}-{arch}"
        run(
            [
                "bash",
                "scripts/build-image",
                "--arch",
                arch,
                "--wheel",
                str(a.wheel(platform)),
                built,
            ]
        )
        # One name for both archives: podman holds it on one image at a time.
        podman("tag", built, a.image_name)
        try:
            a.image(arch).unlink(missing_ok=True)
            podman("save", "--format", "oci-archive", "-o", str(a.image(arch)), a.image_name)
        finally:
            podman("untag", built, a.image_name)


def build_chart(a: Artifacts) -> None:
    """The chart (its version and appVersion are the release's, set by prepare) and the
    repository index beside it; TOOLGATE_CHART_URL is where the chart will be served from
    (else the index names it relative to itself)."""
    run([str(HELM), "package", "deploy/helm/toolgate", "-d", str(a.out)])
    url = os.environ.get("TOOLGATE_CHART_URL")
    a.index.unlink(missing_ok=True)
    run([str(HELM), "repo", "index", str(a.out), *(["--url", url] if url else [])])


def write_sums(a: Artifacts) -> None:
    lines = [f"{sha256(p)}  {p.name}\n" for p in a.files()]
    a.sums.write_text("".join(lines))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- check -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(probe: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            raise ReleaseError(f"{what}: nothing after {seconds:.0f} s")
        time.sleep(0.5)


@dataclass(frozen=True)
class Client:
    """A toolgate CLI installed from the release (the x86_64 wheel), asking a sidecar."""

    toolgate: Path

    def ask(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.toolgate), *args], capture_output=True, text=True, timeout=60
        )

    def decision(self, target: str, *args: str) -> tuple[str, str]:
        done = self.ask("decide", "--target", target, *args)
        if done.returncode not in (0, 1):
            raise ReleaseError(f"decide {' '.join(args)}: {done.stderr.strip()}")
        d = json.loads(done.stdout)
        return d["verdict"], d["code"]


@contextmanager
def serving(
    start: list[str],
    stop: Callable[[subprocess.Popen[bytes]], None] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        (stop or (lambda p: p.kill()))(proc)
        proc.wait(timeout=120)


def decides(what: str, client: Client, port: int, proc: subprocess.Popen[bytes]) -> None:
    """The sidecar on ``port`` allows the example policy's allowed call and denies its
    forbidden one, as the policy says."""
    target = f"127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise ReleaseError(f"{what}: the sidecar exited {proc.returncode}:\n{err[-2000:]}")
        return client.ask("health", "--target", target, "--wait", "0").returncode == 0

    # Under emulation (arm64) the sidecar starts slowly.
    until(up, 300, f"{what}: a sidecar on {target}")
    allowed = client.decision(target, "--tool", "create-ami", "--grant", "alice")
    denied = client.decision(target, "--tool", "run_command", "--args", '{"command": "rm -rf /"}')
    if allowed != ("ALLOW", "ALLOWED") or denied != ("DENY", "CONDITION_FAILED"):
        raise ReleaseError(f"{what}: decided {allowed} and {denied}")
    say(f"{what}: installed, serves, allows and denies as the policy says")


def reports_version(what: str, args: list[str], version: str, env: dict[str, str] | None = None):
    out = run([*args, "--version"], env=env).strip()
    if out.split()[:2] != ["toolgate", version]:
        raise ReleaseError(f"{what}: --version says {out!r}, not toolgate {version}")


def sidecar(port: int, policy: str | Path = POLICY) -> list[str]:
    """`toolgate serve`'s arguments for the checks: the example policy, gRPC on ``port``."""
    return ["serve", "--policy", str(policy), "--listen", f"127.0.0.1:{port}",
            "--metrics-listen", "off"]  # fmt: skip


def runs(
    what: str, cli: list[str], version: str, client: Client, env: dict[str, str] | None = None
) -> None:
    """``cli``, a toolgate installed from an artifact, says the release's version, and the
    sidecar it starts decides as the policy says."""
    reports_version(what, cli, version, env)
    port = free_port()
    with serving([*cli, *sidecar(port)], env=env) as proc:
        decides(what, client, port, proc)


def fresh_venv(where: Path) -> Path:
    run([sys.executable, "-m", "venv", str(where)])
    return where / "bin"


def without_rust() -> dict[str, str]:
    """This environment (a proxy, an index) with no Rust toolchain to be found: an install
    builds nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_HOME", "RUSTUP_HOME")}
    return {**env, "PATH": "/usr/bin:/bin"}


def check_glibc_wheel(a: Artifacts, work: Path) -> Client:
    """The x86_64 manylinux wheel in a new venv, binary wheels only, no Rust on PATH."""
    bin_ = fresh_venv(work / "wheel")
    env = without_rust()
    run(
        [
            str(bin_ / "pip"),
            "install",
            "-q",
            "--only-binary=:all:",
            str(a.wheel("manylinux_2_17_x86_64")),
        ],
        env=env,
        cwd=work,
    )
    toolgate = bin_ / "toolgate"
    client = Client(toolgate)
    runs("manylinux_2_17_x86_64 wheel", [str(toolgate)], a.version, client, env)
    return client


def check_musl_wheel(a: Artifacts, work: Path, client: Client) -> None:
    """The x86_64 musllinux wheel on a musl CPython (scripts/musl-python): its sidecar."""
    site = work / "musl-site"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--only-binary=:all:",
            "--platform",
            "musllinux_1_2_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--target",
            str(site),
            str(a.wheel("musllinux_1_2_x86_64")),
        ]
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    # The package's console script, as pip writes it for that interpreter.
    cli = [
        str(MUSL_PYTHON),
        "-c",
        "import sys; from toolgate.cli.main import main; sys.argv[0] = 'toolgate'; main()",
    ]
    runs("musllinux_1_2_x86_64 wheel", cli, a.version, client, env)


def unpack(sdist: Path, into: Path) -> Path:
    """The sdist's source tree, unpacked under ``into``, every file's time now. Cargo names a
    workspace crate's build by its path within the workspace, wherever the workspace is, and
    takes it as fresh when its sources are older than the last build: with the archive's own
    times, a kept build dir would give the wheel another checkout's crates."""
    with tarfile.open(sdist) as t:
        t.extractall(into, filter="data")
    (source,) = into.iterdir()
    for path in source.rglob("*"):
        if path.is_file():
            os.utime(path)
    return source


def check_sdist(a: Artifacts, work: Path, client: Client) -> None:
    """A wheel built from the sdist alone (what `pip install` of it does, with the wheels'
    profile), installed in a new venv. The build is kept between runs where TOOLGATE_SDIST_CACHE
    names (scripts/release), apart from scripts/test's: cargo's lock is not held for the tests."""
    # The interpreter scripts/test built with, when there is one: pyo3 is not built again.
    project = ROOT / ".venv" / "bin" / "python"
    interpreter = project if project.exists() else Path(sys.executable)
    source = unpack(a.sdist, work / "sdist")
    env = dict(os.environ)
    cache = os.environ.get("TOOLGATE_SDIST_CACHE")
    if cache:
        env["CARGO_TARGET_DIR"] = cache
    run(
        [
            sys.executable,
            "-m",
            "maturin",
            "build",
            "--profile",
            os.environ.get("TOOLGATE_WHEEL_PROFILE", "release"),
            "--locked",
            "--out",
            str(work / "sdist-wheel"),
            "--interpreter",
            str(interpreter),
        ],
        cwd=source,
        env=env,
    )
    (wheel,) = (work / "sdist-wheel").glob("*.whl")
    bin_ = fresh_venv(work / "sdist-venv")
    run([str(bin_ / "pip"), "install", "-q", str(wheel)], env=without_rust())
    runs("sdist", [str(bin_ / "toolgate")], a.version, client)


def load_image(archive: Path, as_name: str) -> str:
    """Load an image archive into podman as ``as_name`` (the name it carries is left free);
    returns the name it carried."""
    loaded = podman("load", "-q", "-i", str(archive))
    m = re.search(r"Loaded image(?:\(s\))?: (\S+)", loaded)
    if m is None:
        raise ReleaseError(f"podman load {archive.name}: {loaded.strip()}")
    carried = m.group(1)
    podman("tag", carried, as_name)
    podman("untag", as_name, carried)
    return carried


def check_images(a: Artifacts, client: Client) -> None:
    """Each archive loads under the chart's default image name, is built for its
    architecture, and serves decisions (arm64 under qemu-user-static)."""
    for arch in IMAGE_WHEELS:
        what = f"{arch} image"
        local = f"localhost/toolgate-release-check:{a.version}-{arch}"
        carried = load_image(a.image(arch), local)
        try:
            if carried != a.image_name:
                raise ReleaseError(f"{what}: the archive names {carried}, not {a.image_name}")
            built_for = podman("image", "inspect", "--format", "{{.Architecture}}", local).strip()
            if built_for != arch:
                raise ReleaseError(f"{what}: built for {built_for}")
            port = free_port()
            name = f"toolgate-release-check-{arch}-{port}"
            start = [
                "podman",
                *ENGINE,
                "run",
                "--rm",
                "--arch",
                arch,
                "--name",
                name,
                "--network=host",
                "--read-only",
                "-v",
                f"{POLICY}:/policy.json:ro",
                local,
                *sidecar(port, "/policy.json"),
            ]

            def stop(_: subprocess.Popen[bytes], name: str = name) -> None:
                subprocess.run(
                    ["podman", *ENGINE, "rm", "-f", "-t", "0", name],
                    capture_output=True,
                    timeout=120,
                )

            with serving(start, stop) as proc:
                decides(what, client, port, proc)
        finally:
            subprocess.run(["podman", *ENGINE, "rmi", local], capture_output=True, timeout=300)


def check_chart(a: Artifacts) -> None:
    """The packaged chart lints, renders with the release's image by default, and the index
    lists it with its digest."""
    run([str(HELM), "lint", str(a.chart)])
    rendered = run([str(HELM), "template", "toolgate", str(a.chart)])
    images = set(re.findall(r"(?m)^\s*image: \"?([^\"\s]+)\"?$", rendered))
    default = f"toolgate:{a.version}"
    if default not in images or normalized(default) != a.image_name:
        raise ReleaseError(f"chart: renders images {sorted(images)}, not {default}")
    index = a.index.read_text()
    if f"version: {a.version}" not in index or f"digest: {sha256(a.chart)}" not in index:
        raise ReleaseError(f"index.yaml lists no {a.chart.name} of digest {sha256(a.chart)}")
    say(f"chart: lints, and renders {default} ({a.image_name}) by default")


def normalized(image: str) -> str:
    """An image reference as Kubernetes' container runtimes complete it."""
    first, _, rest = image.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        path = image if rest else f"library/{image}"
        return f"docker.io/{path}"
    return image


def check_sums(a: Artifacts) -> None:
    run(["sha256sum", "--check", "--strict", "--quiet", a.sums.name], cwd=a.out)


def check(a: Artifacts) -> None:
    import sbom

    with tempfile.TemporaryDirectory(prefix="toolgate-release-") as tmp:
        work = Path(tmp)
        client = check_glibc_wheel(a, work)
        check_musl_wheel(a, work, client)
        run(
            [
                sys.executable,
                str(ROOT / "scripts" / "musl_wheel_check.py"),
                str(a.wheel("musllinux_1_2_aarch64")),
                "aarch64",
            ]
        )
        say("musllinux_1_2_aarch64 wheel: read, not run (no aarch64 musl interpreter here)")
        check_images(a, client)
        check_sdist(a, work, client)
    check_chart(a)
    sbom.check(a.sbom)
    say(f"SBOM: valid CycloneDX {sbom.SPEC}")
    check_sums(a)


# --- the release ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/release", description=__doc__.splitlines()[0])
    parser.add_argument("version", help="MAJOR.MINOR.PATCH")
    parser.add_argument("--out", type=Path, help="where the artifacts go (dist/release/VERSION)")
    parser.add_argument("--no-tag", action="store_true", help="no release commit, no tag")
    args = parser.parse_args(argv)
    version = args.version
    if not SEMVER.fullmatch(version):
        parser.error(f"{version!r} is no version: MAJOR.MINOR.PATCH")
    try:
        if not args.no_tag:
            if git("tag", "--list", f"v{version}"):
                raise ReleaseError(
                    f"the tag v{version} exists already (--no-tag makes its artifacts)"
                )
            # Who commits and tags is known before an hour of building, not after.
            git("var", "GIT_COMMITTER_IDENT")
        prepared = prepare(ROOT, version, datetime.date.today())
        out = (args.out or ROOT / "dist" / "release" / version).resolve()
        out.mkdir(parents=True, exist_ok=True)
        a = Artifacts(out, version)
        import sbom

        say("wheels and sdist")
        build_wheels(a)
        say("images")
        build_images(a)
        say("chart")
        build_chart(a)
        say("SBOM")
        sbom.write(a.sbom, version, a.wheel("manylinux_2_17_x86_64"))
        write_sums(a)
        say("checking each artifact")
        check(a)
        if not args.no_tag:
            tag(ROOT, version, prepared)
    except ReleaseError as err:
        print(f"release {version}: {err}", file=sys.stderr)
        return 1
    for path in [*a.files(), a.sums]:
        print(path)
    return 0


if __name__ == "__main__":
    # As the module `release`, the name scripts/sbom.py imports it by: one ReleaseError.
    import release

    sys.exit(release.main())
