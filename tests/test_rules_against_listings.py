"""Rules checked against a server's listing: ``validate --tools/--url [SERVER=]SOURCE`` and
``test --tools`` (toolgate.authoring.listed_names) report a rule naming no listed tool, with
the nearest listed name, and show a hostile listing's names inert.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_process import no_traceback, run, write
from sidecar import free_port


@pytest.fixture
def listing(tmp_path: Path) -> Path:
    return write(
        tmp_path / "github.json",
        {"tools": [{"name": "delete_repo"}, {"name": "read_file"}, {"name": "create_issue"}]},
    )


def test_a_misspelt_rule_is_reported_with_the_nearest_name(tmp_path: Path, listing: Path) -> None:
    policy = write(
        tmp_path / "p.json",
        {"version": "1", "default": "allow", "tools": {"delete_repoo": {"action": "deny"}}},
    )
    p = run("validate", policy, "--tools", listing)
    no_traceback(p)
    assert p.returncode == 1, p
    assert "/tools/delete_repoo" in p.stderr and "nearest listed: delete_repo)" in p.stderr
    # The section of a server is checked against that server's listing.
    section = write(
        tmp_path / "s.json",
        {
            "version": "1",
            "default": "allow",
            "servers": {"github": {"default": "allow", "tools": {"delet_repo": {}}}},
        },
    )
    p = run("validate", section, "--tools", f"github={listing}")
    assert p.returncode == 1 and "/servers/github/tools/delet_repo" in p.stderr, p


def test_a_hostile_listings_names_are_shown_inert(tmp_path: Path) -> None:
    """A server's names (control characters, a newline, bidi overrides) printed as the
    nearest listed name cannot write to the terminal or forge a line."""
    names = [
        "delete_repo\x1b[2J\x1b[31mowned",
        "delete_repo\np.json: ok",
        "delete_rep\u202eo",
        "delete_re\x00po",
    ]
    hostile = write(tmp_path / "hostile.json", {"tools": [{"name": n} for n in names]})
    policy = write(
        tmp_path / "p.json",
        {"version": "1", "default": "allow", "tools": {"delete_repoo": {"action": "deny"}}},
    )
    p = run("validate", policy, "--tools", hostile)
    assert p.returncode == 1, p
    out = p.stdout + p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr
    for raw in ("\x1b", "\u202e", "\x00", "p.json: ok"):
        assert raw not in out, out


@pytest.mark.parametrize("command", ["validate", "test"])
def test_a_misspelt_hide_is_reported(tmp_path: Path, listing: Path, command: str) -> None:
    hide = {"version": "1", "default": "allow", "hide": ["delet_repo"]}
    policy = write(tmp_path / "p.json", hide)
    if command == "validate":
        p = run("validate", policy, "--tools", listing)
    else:
        cases = tmp_path / "p.tests.yaml"
        cases.write_text(
            "policy: p.json\ncases:\n  - name: x\n    call: {tool: read_file}\n"
            "    expect: {verdict: ALLOW}\n"
        )
        p = run("test", cases, "--tools", listing)
    assert p.returncode == 1, p
    assert "delet_repo" in p.stderr, p.stderr


def test_a_listing_for_a_server_the_policy_does_not_name_is_said(
    tmp_path: Path, listing: Path
) -> None:
    policy = write(
        tmp_path / "p.json",
        {
            "version": "1",
            "default": "allow",
            "servers": {"github": {"default": "allow", "tools": {"delete_repoo": {}}}},
        },
    )
    p = run("validate", policy, "--tools", f"githb={listing}")
    assert p.returncode != 0 or "githb" in p.stderr, p


def test_any_server_id_of_the_policy_can_be_given_a_listing(tmp_path: Path, listing: Path) -> None:
    policy = write(
        tmp_path / "p.json",
        {
            "version": "1",
            "default": "allow",
            "servers": {"github:prod": {"default": "allow", "tools": {"delete_repoo": {}}}},
        },
    )
    p = run("validate", policy, "--tools", f"github:prod={listing}")
    assert p.returncode == 1, p
    assert "/servers/github:prod/tools/delete_repoo" in p.stderr, p.stderr


@pytest.mark.parametrize("timeout", ["nan", "-1"])
def test_validate_timeout_that_is_no_duration_is_2(tmp_path: Path, timeout: str) -> None:
    policy = write(tmp_path / "p.json", {"version": "1", "default": "allow"})
    url = f"http://127.0.0.1:{free_port()}/mcp"
    p = run("validate", policy, "--url", url, "--timeout", timeout)
    no_traceback(p)
    assert p.returncode == 2, p
