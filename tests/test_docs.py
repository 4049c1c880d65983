"""The documentation speaks of the repository only: no file outside it is cited, no word a
reader cannot look up, every relative link leads to a file in it; and the LICENSE file is the
license the package metadata names. (That the README's examples run: test_readme.py.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DOCS = sorted(
    [
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("bench/*.md"),
        *ROOT.glob("deploy/**/README.md"),
    ]
)

#: Words from notes that are not in the repository, which a reader cannot know.
PRIVATE = re.compile(r"DESIGN\.md|REFERENCE\.md|\.\./shared|/work/|\bseeds?\b", re.IGNORECASE)

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_documents_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "docs/sidecar.md", "docs/envoy.md", "deploy/envoy/README.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_no_outside_files_or_private_words(doc: Path):
    found = [
        f"{doc.name}:{n}: {m.group(0)!r}"
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        for m in PRIVATE.finditer(line)
    ]
    assert found == []


@pytest.mark.parametrize("doc", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_relative_links_lead_to_files_in_the_repository(doc: Path):
    broken = []
    for target in _LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL, or an anchor in the same document
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert broken == []


def test_the_license_file_is_the_license_the_metadata_names():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    license = project["license"]
    assert (license.get("text") if isinstance(license, dict) else license) == "Apache-2.0"
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    assert cargo["workspace"]["package"]["license"] == "Apache-2.0"
