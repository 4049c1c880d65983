"""An image is built again when what it is built from changed, and only then
(scripts/images.py): a wheel built twice from the same code differs in its SBOM's serial number
and timestamp (maturin makes both anew), which must not count, while any other change must."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from images import _digest

SBOM = "toolgate-1.0.dist-info/sboms/toolgate-bindings.cyclonedx.json"
MEMBERS = {
    "toolgate/__init__.py": b"from ._core import *\n",
    "toolgate/_core.abi3.so": b"\x7fELF" + bytes(range(64)),
}


def wheel(path: Path, serial: str, stamp: str, members: dict[str, bytes] = MEMBERS) -> Path:
    sbom = {
        "bomFormat": "CycloneDX",
        "serialNumber": f"urn:uuid:{serial}",
        "metadata": {"timestamp": stamp, "component": {"name": "toolgate-bindings"}},
        "components": [{"name": "serde_json", "version": "1.0.140"}],
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr(SBOM, json.dumps(sbom, indent=2))
        # RECORD hashes the SBOM, so it changes with it.
        z.writestr("toolgate-1.0.dist-info/RECORD", f"{SBOM},sha256={serial},1\n")
    return path


builds = st.tuples(st.uuids().map(str), st.datetimes().map(lambda d: d.isoformat() + "Z"))


@settings(max_examples=50, deadline=None)
@given(first=builds, second=builds)
def test_the_same_code_built_twice_is_the_same_input(tmp_path_factory, first, second):
    tmp = tmp_path_factory.mktemp("wheels")
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    a = wheel(tmp / "a" / "toolgate.whl", *first)
    b = wheel(tmp / "b" / "toolgate.whl", *second)
    assert _digest([a], "1.0") == _digest([b], "1.0")


@settings(max_examples=50, deadline=None)
@given(
    member=st.sampled_from(sorted(MEMBERS)),
    at=st.integers(min_value=0, max_value=20),
    byte=st.integers(min_value=1, max_value=255),
)
def test_any_change_to_the_code_is_a_new_input(tmp_path_factory, member, at, byte):
    tmp = tmp_path_factory.mktemp("wheels")
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    changed = bytearray(MEMBERS[member])
    changed[at % len(changed)] ^= byte
    serial, stamp = "5d0e4b7c-0000-4000-8000-000000000000", "2026-01-01T00:00:00Z"
    a = wheel(tmp / "a" / "toolgate.whl", serial, stamp)
    b = wheel(tmp / "b" / "toolgate.whl", serial, stamp, {**MEMBERS, member: bytes(changed)})
    assert _digest([a], "1.0") != _digest([b], "1.0")
    # So does a change of version (the build argument) with the same files.
    assert _digest([a], "1.0") != _digest([a], "1.1")
