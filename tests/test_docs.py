"""The documentation speaks of the repository only: no file outside it is cited, no word a
reader cannot look up, every relative link leads to a file in it; and the LICENSE file is the
license the package metadata names. (That their examples run: test_docs_run.py.)"""

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


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text without markup, lower case, without
    punctuation, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    for m in re.finditer(r"^#{1,6} (.+?)\s*$", text, re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_headings_get_github_anchors():
    assert _slug("Walk-through: from nothing to a denied tool call") == (
        "walk-through-from-nothing-to-a-denied-tool-call"
    )
    assert _slug("API: `proto/toolgate/v1/decider.proto`") == "api-prototoolgatev1deciderproto"
    assert _slug("Envoy's own settings, tried one at a time") == (
        "envoys-own-settings-tried-one-at-a-time"
    )


@pytest.mark.parametrize("doc", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_links_to_headings_lead_to_headings_that_exist(doc: Path):
    broken = []
    for target in _LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or "#" not in target:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if path.suffix == ".md" and path.is_file() and anchor not in anchors(path):
            broken.append(target)
    assert broken == []


def test_the_readme_lists_each_document_once():
    section = README_DOCS.search((ROOT / "README.md").read_text())
    assert section is not None
    listed = re.findall(r"^- \[([^\]]+)\]", section.group(1), re.M)
    assert listed and len(listed) == len(set(listed)), listed
    # Every document in docs/ is listed.
    assert {f"docs/{p.name}" for p in ROOT.glob("docs/*.md")} <= set(listed)


README_DOCS = re.compile(r"^## Documentation\n(.*?)(?=^## )", re.M | re.S)
