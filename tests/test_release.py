"""scripts/release (docs/releasing.md): the version set everywhere it is written, the changelog's
section, the commit and the tag, on a clone of this checkout; the forge workflows lint clean;
and (packaging) the release of this checkout's version, made and checked by the script, whose
artifacts the other packaging tests then use (tests/built.py)."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import release
from release import ROOT, VERSIONED, ReleaseError

VERSION = release.current_version()
TOOLS = ROOT / "target" / "tools" / "bin"


def tracked_files_holding(version: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    pattern = release.version_pattern(version)
    found = set()
    for name in filter(None, (n.decode() for n in listed)):
        path = ROOT / name
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        if pattern.search(text):
            found.add(name)
    return found


#: Tracked files whose version numbers are other projects': the Node packages the tests pin,
#: the Go modules Jaeger is built from, the patch a peer is built with, and Envoy's
#: dynamic-module ABI the module declares.
FOREIGN = (
    "tests/node/package-lock.json",
    "tests/go_jaeger/",
    "bench/peers/",
    "rust/envoy_module/src/abi.rs",
)


def test_no_file_shows_the_version_unless_the_release_rewrites_it():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    owned = {"Cargo.toml", *release.LOCKS, "CHANGELOG.md", "bench/RESULTS.md"}
    found = {f for f in tracked_files_holding(VERSION) if not f.startswith(FOREIGN)}
    assert found - owned - set(VERSIONED) == set()
    assert [n for n in VERSIONED if not (ROOT / n).is_file()] == []


versions = st.builds(
    lambda a, b, c: f"{a}.{b}.{c}", st.integers(0, 30), st.integers(0, 30), st.integers(0, 30)
)


@given(versions)
def test_a_version_is_found_only_where_it_is_whole(version):
    pattern = release.version_pattern(version)
    for shown in (f"toolgate:{version}", f'"{version}"', f"v{version}.", f"{version}-arm64"):
        assert pattern.search(shown), shown
    # Inside a longer version it is another version.
    for longer in (f"1{version}", f"{version}1", f"{version}.1", f"2.{version}"):
        assert not pattern.search(longer), longer
    assert not pattern.search(f"{version}-rc.3")


def test_versions_are_refused_unless_every_tool_reads_them_alike():
    # A pre-release is refused too: pip would name its files otherwise (0.3.0rc1).
    for bad in ("1.2", "01.2.3", "1.2.3-rc.1", "1.2.3+build", "v1.2.3", "1.2.3-rc"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "release.py"), bad, "--no-tag"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and "is no version" in done.stderr, (bad, done.stderr)


changelog_bodies = st.lists(
    st.text(st.characters(codec="utf-8", exclude_characters="\r"), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool)
    .map(lambda s: f"- {s}"),
    min_size=1,
    max_size=5,
).map("\n".join)


@settings(max_examples=50)
@given(changelog_bodies, st.lists(changelog_bodies, max_size=2))
def test_the_unreleased_section_becomes_the_versions(body, older):
    head = "# Changelog\n\nintro\n\n"
    past = "".join(f"## 0.0.{i} (2026-01-01)\n\n{b}\n\n" for i, b in enumerate(older))
    text = f"{head}## Unreleased\n\n{body}\n\n{past}"
    day = datetime.date(2026, 11, 27)
    done = release.release_changelog(text, "9.9.9", day)
    assert done.startswith(f"{head}## Unreleased\n\n## 9.9.9 (2026-11-27)\n\n")
    assert release.changelog_section(done, "9.9.9") == body.strip()
    assert done.endswith(past)
    with pytest.raises(ReleaseError, match="already has"):
        release.release_changelog(done.replace("## Unreleased\n", f"## Unreleased\n\n{body}\n"),
                                  "9.9.9", day)  # fmt: skip
    with pytest.raises(ReleaseError, match="empty"):
        release.release_changelog(done, "9.9.10", day)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("git and a git checkout")
    there = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--shared", str(ROOT), str(there)], check=True)
    for key, value in (("user.name", "release test"), ("user.email", "release@test")):
        subprocess.run(["git", "-C", str(there), "config", key, value], check=True)
    unreleased = (there / "CHANGELOG.md").read_text()
    if re.search(r"(?m)^## Unreleased\n\s*\n## ", unreleased + "\n## "):
        # The checkout was just released: give the clone something to release.
        text = unreleased.replace("## Unreleased\n", "## Unreleased\n\n- a change\n", 1)
        (there / "CHANGELOG.md").write_text(text)
        subprocess.run(["git", "-C", str(there), "commit", "-qam", "a change"], check=True)
    return there


def test_a_release_sets_its_version_everywhere_then_commits_and_tags(clone):
    new = "7.8.9"
    assert release.prepare(clone, new, datetime.date(2026, 11, 27)) is True
    cargo = tomllib.loads((clone / "Cargo.toml").read_text())
    assert cargo["workspace"]["package"]["version"] == new
    chart = yaml.safe_load((clone / "deploy/helm/toolgate/Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == new
    # Cargo.lock agrees with the workspace: a locked build would not change it.
    subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked", "--offline"],
                   cwd=clone, check=True, capture_output=True)  # fmt: skip
    members = {Path(m).name for m in cargo["workspace"]["members"]}
    for name in release.LOCKS:
        lock = tomllib.loads((clone / name).read_text())
        ours = {p["name"]: p["version"] for p in lock["package"]
                if p["name"].removeprefix("toolgate-") in members}  # fmt: skip
        assert ours and set(ours.values()) == {new}, (name, ours)
    # The old version is nowhere but in the changelog's past.
    old = release.version_pattern(VERSION)
    for name in [*VERSIONED, "Cargo.toml"]:
        assert not old.search((clone / name).read_text()), name

    release.tag(clone, new, prepared=True)
    git = ["git", "-C", str(clone)]
    log = subprocess.run([*git, "log", "-1", "--format=%s"], capture_output=True, text=True)
    assert log.stdout.strip() == f"release {new}"
    described = subprocess.run([*git, "describe", "--exact-match"], capture_output=True, text=True)
    assert described.stdout.strip() == f"v{new}"
    message = subprocess.run(
        [*git, "tag", "-l", "--format=%(contents)", f"v{new}"], capture_output=True, text=True
    ).stdout
    section = release.changelog_section((clone / "CHANGELOG.md").read_text(), new)
    assert message.startswith(f"toolgate {new}\n\n") and section in message
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""
    # Released once, the same version is not prepared again, and has its section.
    assert release.prepare(clone, new, datetime.date(2026, 11, 28)) is False


def test_a_refused_release_changes_nothing_and_a_stopped_one_goes_on(clone):
    # An empty changelog section is refused before a file is written.
    text = (clone / "CHANGELOG.md").read_text()
    body = release.UNRELEASED + "\n"
    start = text.index(body) + len(body)
    end = text.find("\n## ", start)
    (clone / "CHANGELOG.md").write_text(
        text[:start] + "\n" + text[end + 1 :] if end > 0 else text[:start]
    )
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "nothing to say"], check=True)
    with pytest.raises(ReleaseError, match="empty"):
        release.prepare(clone, "7.0.0", datetime.date(2026, 11, 27))
    status = subprocess.run(
        ["git", "-C", str(clone), "status", "--porcelain"], capture_output=True, text=True
    )
    assert status.stdout == ""
    # Set but not committed (a build failed): the next run goes on to commit it.
    subprocess.run(["git", "-C", str(clone), "reset", "-q", "--hard", "HEAD~1"], check=True)
    assert release.prepare(clone, "7.0.0", datetime.date(2026, 11, 27)) is True
    assert release.prepare(clone, "7.0.0", datetime.date(2026, 11, 28)) is True
    release.tag(clone, "7.0.0", prepared=True)
    assert release.prepare(clone, "7.0.0", datetime.date(2026, 11, 28)) is False


def test_a_release_needs_a_clean_checkout_and_a_new_tag(clone):
    (clone / "README.md").write_text((clone / "README.md").read_text() + "\nedited\n")
    with pytest.raises(ReleaseError, match="has changes"):
        release.prepare(clone, "7.0.0", datetime.date(2026, 11, 27))
    # Nothing was changed by the refusal.
    assert release.current_version(clone) == VERSION
    # A tag that exists is refused before anything is built.
    subprocess.run(["git", "-C", str(clone), "tag", "-f", "v9.9.9"], check=True)
    done = subprocess.run(
        [sys.executable, str(clone / "scripts" / "release.py"), "9.9.9"],
        capture_output=True,
        text=True,
        cwd=clone,
        timeout=60,
    )
    assert done.returncode == 1 and "exists already" in done.stderr, done.stderr


def test_the_forge_workflows_lint_clean():
    actionlint = TOOLS / "actionlint"
    if not actionlint.exists():
        pytest.skip("no actionlint (bash scripts/install-actionlint)")
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {w.name for w in workflows} == {"ci.yml", "release.yml"}
    done = subprocess.run([str(actionlint), *map(str, workflows)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # Each says what it needs, and the release publishes what scripts/release makes.
    for w in workflows:
        assert "# Needs:" in w.read_text(), w.name
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    steps = [s.get("run", "") for s in flow["jobs"]["artifacts"]["steps"]]
    assert any("bash scripts/release" in s and "--no-tag" in s for s in steps)
    assert set(flow["jobs"]) == {"artifacts", "pypi", "images", "chart", "forge-release"}


# --- the release made and checked (packaging) -------------------------------------------------


@pytest.mark.packaging
def test_the_release_makes_every_artifact_and_each_passes_its_check():
    from built import released

    a = released()
    names = sorted(p.name for p in a.out.iterdir() if p.is_file())
    assert names == sorted(p.name for p in [*a.files(), a.sums]), names
    sums = dict(reversed(line.split("  ")) for line in a.sums.read_text().splitlines())
    assert sums == {p.name: release.sha256(p) for p in a.files()}

    # The SBOM lists the crates linked into the extension, not those only tests or build
    # scripts use, and the Python packages an install brings.
    sbom = json.loads(a.sbom.read_text())
    purls = {(c.get("purl") or c["bom-ref"]).split("@")[0] for c in sbom["components"]}
    for linked in ("toolgate-core", "pkg:cargo/pyo3", "pkg:cargo/tonic",
                   "pkg:cargo/redis", "pkg:pypi/grpcio", "pkg:pypi/protobuf"):  # fmt: skip
        assert linked in purls, linked
    # Not linked: tests' and build scripts' crates, procedural macros, test tools.
    for unlinked in ("pkg:cargo/proptest", "pkg:cargo/tonic-prost-build", "pkg:cargo/syn",
                     "pkg:cargo/pyo3-macros", "pkg:pypi/pytest"):  # fmt: skip
        assert unlinked not in purls, unlinked
    assert sbom["metadata"]["component"]["purl"] == f"pkg:pypi/toolgate@{a.version}"
    crates = [c for c in sbom["components"] if c.get("purl", "").startswith("pkg:cargo/tonic@")]
    assert crates and crates[0]["hashes"][0]["alg"] == "SHA-256"

    index = yaml.safe_load(a.index.read_text())
    (entry,) = index["entries"]["toolgate"]
    assert entry["version"] == entry["appVersion"] == a.version
    assert entry["digest"] == release.sha256(a.chart)
    assert release.normalized(f"toolgate:{a.version}") == a.image_name


def test_image_references_are_completed_as_container_runtimes_do():
    cases = {
        "toolgate:1.0.0": "docker.io/library/toolgate:1.0.0",
        "me/toolgate:1.0.0": "docker.io/me/toolgate:1.0.0",
        "localhost/toolgate:1.0.0": "localhost/toolgate:1.0.0",
        "ghcr.io/me/toolgate:1.0.0": "ghcr.io/me/toolgate:1.0.0",
        "registry:5000/toolgate:1.0.0": "registry:5000/toolgate:1.0.0",
    }
    assert {k: release.normalized(k) for k in cases} == cases


def test_a_wheel_from_the_sdist_builds_the_sdists_own_crates(tmp_path: Path):
    """The sdist's wheel may be built in a kept build dir that another checkout filled: its
    crates are built again, not taken as fresh because the archive's files are older than that
    build (cargo names a workspace crate's build by its path within the workspace)."""
    import tarfile

    def workspace(root: Path, answer: int) -> Path:
        (root / "core" / "src").mkdir(parents=True)
        (root / "app" / "src").mkdir(parents=True)
        (root / "Cargo.toml").write_text('[workspace]\nmembers = ["core", "app"]\n')
        for name, deps in [("core", ""), ("app", 'core = { path = "../core" }\n')]:
            (root / name / "Cargo.toml").write_text(
                f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n'
                f"[dependencies]\n{deps}"
            )
        (root / "core" / "src" / "lib.rs").write_text(f"pub fn answer() -> u32 {{ {answer} }}\n")
        (root / "app" / "src" / "main.rs").write_text(
            'fn main() { println!("{}", core::answer()); }\n'
        )
        return root

    def answer(source: Path) -> str:
        out = subprocess.run(
            ["cargo", "run", "-q", "-p", "app", "--offline"],
            cwd=source,
            env={**release.os.environ, "CARGO_TARGET_DIR": str(tmp_path / "kept")},
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    assert answer(workspace(tmp_path / "checkout", 1)) == "1"
    # The next release's sources, archived with times older than that build.
    newer = workspace(tmp_path / "staged" / "pkg-2", 2)
    for path in newer.rglob("*"):
        release.os.utime(path, (0, 0))
    sdist = tmp_path / "pkg-2.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        t.add(newer, arcname="pkg-2")
    assert answer(release.unpack(sdist, tmp_path / "unpacked")) == "2"
