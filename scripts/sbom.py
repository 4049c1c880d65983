"""The release's software bill of materials: CycloneDX JSON, written with the CycloneDX
project's own Python library (scripts/release installs it), from the two dependency graphs
that end up in what users install:

- Rust: the crates linked into the extension (`cargo metadata`: toolgate-bindings' normal
  dependencies, for the four wheels' targets), each with Cargo.lock's SHA-256;
- Python: the distributions a fresh `pip install` of the x86_64 wheel brings, with the
  requirement edges between them as their metadata declares.

`check` validates a file against CycloneDX's JSON schema and that both graphs are in it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import tomllib
from pathlib import Path

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from release import ROOT, TARGETS, ReleaseError, run

SPEC = "1.6"
#: The crate the wheels' extension is built from.
EXTENSION_CRATE = "toolgate-bindings"


def rust_graph() -> tuple[dict[str, dict], dict[str, set[str]]]:
    """The crates linked into the extension on any of the wheels' targets, and who depends on
    whom: (package id -> cargo's package record, package id -> ids it depends on)."""
    packages: dict[str, dict] = {}
    edges: dict[str, set[str]] = {}
    for target in TARGETS:
        meta = json.loads(
            run(
                [
                    "cargo",
                    "metadata",
                    "--format-version",
                    "1",
                    "--locked",
                    "--filter-platform",
                    target,
                ]
            )
        )
        by_id = {p["id"]: p for p in meta["packages"]}
        nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
        (root,) = [i for i, p in by_id.items() if p["name"] == EXTENSION_CRATE]
        todo = [root]
        while todo:
            node = nodes[todo.pop()]
            if node["id"] in packages:
                continue
            packages[node["id"]] = by_id[node["id"]]
            # Build scripts' and tests' dependencies are not linked, nor procedural macros
            # (they run in the compiler) and what only they use: normal library ones only.
            deps = {
                d["pkg"]
                for d in node["deps"]
                if any(k["kind"] is None for k in d["dep_kinds"])
                and not proc_macro(by_id[d["pkg"]])
            }
            edges.setdefault(node["id"], set()).update(deps)
            todo.extend(deps)
    return packages, edges


def proc_macro(package: dict) -> bool:
    return any("proc-macro" in t["kind"] for t in package["targets"])


def lock_checksums() -> dict[tuple[str, str], str]:
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    return {(p["name"], p["version"]): p["checksum"] for p in lock["package"] if "checksum" in p}


#: Run in the fresh environment: each distribution's name, version, license and requirements
#: that apply there.
_PYTHON_PROBE = r"""
import json, re, importlib.metadata as md
from packaging.requirements import Requirement
def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
out = {}
for d in md.distributions():
    reqs = []
    for r in d.requires or []:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            reqs.append(norm(req.name))
    lic = d.metadata.get("License-Expression") or d.metadata.get("License") or ""
    out[norm(d.metadata["Name"])] = {"version": d.version, "license": lic, "requires": reqs}
print(json.dumps(out))
"""


def python_graph(wheel: Path) -> dict[str, dict]:
    """The distributions a fresh install of ``wheel`` holds, pip and its kind left out."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        pip = str(venv / "bin" / "pip")
        run([pip, "install", "-q", "--only-binary=:all:", str(wheel), "packaging"])
        found = json.loads(run([str(venv / "bin" / "python"), "-c", _PYTHON_PROBE]))
    wanted: dict[str, dict] = {}
    todo = ["toolgate"]
    while todo:
        name = todo.pop()
        if name in wanted or name not in found:
            continue
        wanted[name] = found[name]
        todo.extend(found[name]["requires"])
    return wanted


def _license(text: str) -> list:
    """A package's licence as CycloneDX reads it: an SPDX id or expression as such, other
    text as a licence's name; a whole licence file (some packages give one) is left out."""
    text = text.strip()
    if not text or len(text) > 100 or "\n" in text:
        return []
    return [LicenseFactory().make_from_string(text)]


def write(path: Path, version: str, wheel: Path) -> None:
    bom = Bom()
    app = Component(
        name="toolgate",
        version=version,
        type=ComponentType.APPLICATION,
        bom_ref=f"pkg:pypi/toolgate@{version}",
        purl=PackageURL("pypi", name="toolgate", version=version),
        licenses=[LicenseExpression("Apache-2.0")],
    )
    bom.metadata.component = app
    refs: dict[str, Component] = {}

    packages, edges = rust_graph()
    checksums = lock_checksums()
    for pid, p in sorted(packages.items()):
        # The workspace's own crates are no registry's: they have no package URL.
        local = p["source"] is None
        purl = None if local else PackageURL("cargo", name=p["name"], version=p["version"])
        digest = checksums.get((p["name"], p["version"]))
        refs[pid] = Component(
            name=p["name"],
            version=p["version"],
            type=ComponentType.LIBRARY,
            bom_ref=f"{p['name']}@{p['version']}" if local else str(purl),
            purl=purl,
            licenses=_license(p.get("license") or ""),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest)] if digest else [],
        )
        bom.components.add(refs[pid])
    for pid, deps in edges.items():
        bom.register_dependency(refs[pid], [refs[d] for d in deps])

    dists = python_graph(wheel)
    py_refs: dict[str, Component] = {}
    for name, d in sorted(dists.items()):
        if name == "toolgate":
            continue
        purl = PackageURL("pypi", name=name, version=d["version"])
        py_refs[name] = Component(
            name=name,
            version=d["version"],
            type=ComponentType.LIBRARY,
            bom_ref=f"{purl}",
            purl=purl,
            licenses=_license(d["license"]),
        )
        bom.components.add(py_refs[name])
    for name, d in dists.items():
        deps = [py_refs[r] for r in d["requires"] if r in py_refs]
        if name != "toolgate":
            bom.register_dependency(py_refs[name], deps)
    (root_crate,) = [c for pid, c in refs.items() if packages[pid]["name"] == EXTENSION_CRATE]
    top = [py_refs[r] for r in dists["toolgate"]["requires"] if r in py_refs]
    bom.register_dependency(app, [root_crate, *top])
    path.write_text(JsonV1Dot6(bom).output_as_string(indent=2) + "\n")


def check(path: Path) -> None:
    """``path`` is valid CycloneDX, and holds the extension's crates and the wheel's
    Python dependencies."""
    text = path.read_text()
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise ReleaseError(f"{path.name} is not valid CycloneDX {SPEC}: {error}")
    doc = json.loads(text)
    named = {c.get("purl") or c["bom-ref"] for c in doc.get("components", [])}
    for needed in ("toolgate-core@", "pkg:cargo/tonic@", "pkg:pypi/grpcio@"):
        if not any(n.startswith(needed) for n in named):
            raise ReleaseError(f"{path.name} lists no {needed}")
