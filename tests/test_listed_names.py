"""Rules checked against what a server lists (``toolgate validate --tools/--url``, ``toolgate
test --tools``): a rule naming a tool its server does not list is reported with the nearest
listed name, for generated names and listings, per section, from a saved listing and from a
real MCP server; and a tool name MCP does not allow is refused by ``validate`` itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import hypothesis.strategies as st
from conftest import policy
from hypothesis import given, settings
from mcp_servers import ExampleServer
from sidecar import TOOLGATE
from toolgate import Policy
from toolgate.authoring.listed_names import split_source, unlisted
from toolgate.cli import exits

ROOT = Path(__file__).resolve().parent.parent
NAMES = st.text(alphabet="abcdefghij_-.", min_size=1, max_size=10)


def toolgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOOLGATE, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def listing(path: Path, *names: str) -> Path:
    path.write_text(json.dumps({"tools": [{"name": n, "inputSchema": {}} for n in names]}))
    return path


@settings(max_examples=100, deadline=None)
@given(ruled=st.sets(NAMES, min_size=1, max_size=6), listed=st.sets(NAMES, max_size=8))
def test_exactly_the_rules_naming_no_listed_tool_are_reported(ruled, listed):
    loaded = Policy.from_dict(policy({name: {} for name in ruled}))
    found = unlisted(loaded, {None: listed})
    assert {u.name for u in found} == ruled - listed
    for u in found:
        assert u.nearest is None or u.nearest in listed
    # Without a listing for the section nothing is said about it.
    assert unlisted(loaded, {}) == []


@settings(max_examples=60, deadline=None)
@given(name=st.text(alphabet="abcdefghij", min_size=5, max_size=12), at=st.integers(0, 11))
def test_a_name_one_letter_off_is_reported_with_the_listed_one(name, at):
    at %= len(name)
    typo = name[:at] + ("z" if name[at] != "z" else "y") + name[at + 1 :]
    loaded = Policy.from_dict(policy({typo: {}}))
    (found,) = unlisted(loaded, {None: {name, "something-else-entirely"}})
    assert (found.name, found.nearest, found.pointer) == (typo, name, f"/tools/{typo}")


def test_globs_are_not_names_and_each_section_meets_its_own_listing():
    loaded = Policy.from_dict(
        {
            "version": "1",
            "tools": {"delete_*": {}, "create-ami": {}},
            "servers": {"fs": {"tools": {"read_file": {}, "raed_file": {}}}},
        }
    )
    found = unlisted(loaded, {None: {"create-ami"}, "fs": {"read_file"}})
    assert [(u.pointer, u.nearest) for u in found] == [("/servers/fs/tools/raed_file", "read_file")]
    # A listing of a server without a section of its own is the top-level section's.
    found = unlisted(loaded, {"other": {"create-amii"}})
    assert [(u.pointer, u.nearest) for u in found] == [("/tools/create-ami", "create-amii")]


def test_a_listing_names_its_server_before_an_equals_sign():
    assert split_source("fs=tools.json") == ("fs", "tools.json")
    assert split_source("tools.json") == (None, "tools.json")
    assert split_source("http://127.0.0.1:8000/mcp?a=b") == (None, "http://127.0.0.1:8000/mcp?a=b")
    # Any server id without "=" (a policy's ids are any text).
    assert split_source("github:prod=a=b.json") == ("github:prod", "a=b.json")


def test_validate_reports_a_misspelt_tool_against_a_saved_listing(tmp_path: Path):
    (tmp_path / "policy.json").write_text(json.dumps(policy({"create_amii": {}})))
    listing(tmp_path / "tools.json", "create-ami", "list_images")
    done = toolgate("validate", "policy.json", "--tools", "tools.json", cwd=tmp_path)
    assert done.returncode == exits.FAILED, done.stderr
    assert done.stderr.strip() == (
        "policy.json: /tools/create_amii: names create_amii, which the server does not list "
        "(nearest listed: create-ami)"
    )
    # Spelt right, it validates; without a listing nothing is checked.
    (tmp_path / "policy.json").write_text(json.dumps(policy({"create-ami": {}})))
    done = toolgate("validate", "policy.json", "--tools", "tools.json", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (exits.OK, "policy.json: ok\n"), done.stderr


def test_validate_reads_the_listing_from_a_running_server(tmp_path: Path):
    (tmp_path / "policy.json").write_text(json.dumps(policy({"list_image": {}})))
    with ExampleServer(tmp_path / "requests.jsonl") as server:
        done = toolgate("validate", "policy.json", "--url", server.url, cwd=tmp_path)
    assert done.returncode == exits.FAILED, done.stderr
    assert "(nearest listed: list_images)" in done.stderr


def test_test_fails_a_run_whose_policy_names_an_unlisted_tool(tmp_path: Path):
    (tmp_path / "policy.json").write_text(json.dumps(policy({"create_amii": {}})))
    listing(tmp_path / "tools.json", "create-ami")
    (tmp_path / "cases.yaml").write_text(
        "policy: policy.json\ncases:\n  - name: anything\n    steps:\n"
        "      - call: {tool: create_amii}\n        expect: {verdict: ALLOW}\n"
    )
    passing = toolgate("test", "cases.yaml", cwd=tmp_path)
    assert passing.returncode == exits.OK, passing.stdout + passing.stderr
    checked = toolgate("test", "cases.yaml", "--tools", "tools.json", cwd=tmp_path)
    assert checked.returncode == exits.FAILED
    assert "nearest listed: create-ami" in checked.stderr


def test_validate_refuses_a_tool_name_mcp_does_not_allow(tmp_path: Path):
    (tmp_path / "policy.json").write_text('{"version": "1",\n "tools": {\n  "create ami": {}}}\n')
    done = toolgate("validate", "policy.json", cwd=tmp_path)
    assert done.returncode == exits.FAILED
    assert done.stderr.startswith('policy.json: /tools/create ami: "create ami" is not a tool')
    assert done.stderr.rstrip().endswith("(line 3)")


def _pinned_policy(tmp: Path, ruled: set[str], pinned: set[str], unpinned: str, server: bool):
    """A policy whose section (the top level, or server ``crm``'s) names ``ruled`` and pins
    ``pinned`` in pins.json, with ``unpinned`` as its pins' ``unpinned``."""
    pins = {name: {"digest": "sha256:" + "0" * 64} for name in pinned}
    doc = {"version": "1", "tools": {}, "servers": {}}
    if server:
        doc["servers"] = {"crm": {"tools": pins}}
    else:
        doc["tools"] = pins
    (tmp / "pins.json").write_text(json.dumps(doc))
    section = {
        "pins": {"file": "pins.json", "unpinned": unpinned},
        "tools": {name: {} for name in ruled},
    }
    top = policy(servers={"crm": {"version": "1", **section}}) if server else policy(**section)
    path = tmp / "policy.json"
    path.write_text(json.dumps(top))
    return Policy.from_file(path)


@settings(max_examples=60, deadline=None)
@given(
    ruled=st.sets(NAMES, min_size=1, max_size=6),
    pinned=st.sets(NAMES, max_size=8),
    unpinned=st.sampled_from(["hide", "allow"]),
    server=st.booleans(),
)
def test_a_pins_file_that_withholds_unpinned_tools_is_the_sections_listing(
    tmp_path_factory, ruled, pinned, unpinned, server
):
    loaded = _pinned_policy(tmp_path_factory.mktemp("p"), ruled, pinned, unpinned, server)
    found = unlisted(loaded, {})
    if unpinned == "allow":
        # Pins of some tools only: no listing of what the server has.
        assert found == []
        return
    assert {u.name for u in found} == ruled - pinned
    assert all(u.pins == "pins.json" and "does not pin" in u.message() for u in found)
    # A listing given for the section is what it is checked against instead.
    listed = set(ruled)
    assert unlisted(loaded, {("crm" if server else None): listed}) == []


def test_validate_checks_a_pinned_section_against_its_pins_file(tmp_path: Path):
    policy_text = (ROOT / "examples/crm/policy.yaml").read_text()
    assert "crm_read:" in policy_text
    (tmp_path / "pins.json").write_bytes((ROOT / "examples/crm/pins.json").read_bytes())
    ok = tmp_path / "policy.yaml"
    ok.write_text(policy_text)
    done = toolgate("validate", "-q", str(ok), cwd=tmp_path)
    assert done.returncode == exits.OK, done.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text(policy_text.replace("crm_read:", "crm_raed:", 1))
    done = toolgate("validate", str(typo), cwd=tmp_path)
    assert done.returncode == exits.FAILED
    assert (
        "/servers/crm/tools/crm_raed: names crm_raed, which pins.json does not pin, so the tool "
        "is withheld (unpinned: hide) (nearest pinned: crm_read)"
    ) in done.stderr
