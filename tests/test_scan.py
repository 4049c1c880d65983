"""Reading tools from MCP servers: saved files, real servers over stdio (mcp-server-git,
mcp-server-time from PyPI) and Streamable HTTP (server-everything from npm), pagination against a
paginating server written with the SDK's low-level API, and the scan/suggest commands end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import toolgate
from conftest import make_engine
from mcp_servers import EverythingServer, node_executable
from test_classify import labelled
from toolgate.authoring.suggest import suggest, to_yaml
from toolgate.cli import exits
from toolgate.cli.main import main
from toolgate.scanner.classify import classify_all
from toolgate.scanner.scan import ScanError, normalise_tools, scan_file, scan_stdio, scan_url

needs_node = pytest.mark.skipif(node_executable() is None, reason="no node executable (Node 20+)")


def _labelled_names(package: str) -> list[str]:
    return [t["name"] for t in labelled() if t["source"].rsplit("@", 1)[0] == package]


def _loads_and_decides(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The suggested policy for ``tools``: it loads (JSON and YAML) and decides by category."""
    classifications = classify_all(tools)
    policy = suggest(classifications)
    toolgate.Policy.from_str(to_yaml(policy, classifications), format="yaml")
    engine = make_engine(policy)
    codes = {"Destructive": "HIDDEN", "Financial": "APPROVAL_REQUIRED"}
    for c in classifications:
        want = "APPROVAL_REQUIRED" if c.sensitive else codes.get(c.category, "ALLOWED")
        assert engine.decide(c.name, grant="g", session=c.name).code == want  # flow rules
    return policy


# --- files ---------------------------------------------------------------------------------------

TOOLS = [
    {"name": "a", "description": "Get a", "inputSchema": {"type": "object"}},
    {"name": "b", "annotations": {"readOnlyHint": True}},
]


@pytest.mark.parametrize(
    "document",
    [
        {"tools": TOOLS},
        {"jsonrpc": "2.0", "id": 1, "result": {"tools": TOOLS}},
        [{"tools": TOOLS[:1], "nextCursor": "x"}, {"tools": TOOLS[1:]}],
        [{"jsonrpc": "2.0", "id": 1, "result": {"tools": TOOLS}}],
        TOOLS,
    ],
    ids=["result", "response", "pages", "responses", "bare-list"],
)
def test_file_forms(tmp_path: Path, document: Any) -> None:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(document))
    scan = scan_file(path)
    assert [t["name"] for t in scan.tools] == ["a", "b"]
    assert scan.tools[1] == {
        "name": "b",
        "description": "",
        "inputSchema": {},
        "annotations": {"readOnlyHint": True},
    }
    assert scan.notes == []


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "not JSON"), ('{"x": 1}', "expected a tools/list result"), ("[1, 2]", "expected")],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tools.json"
    path.write_text(text)
    with pytest.raises(ScanError, match=message):
        scan_file(path)
    with pytest.raises(ScanError, match="No such file"):
        scan_file(tmp_path / "missing.json")


def test_normalising_drops_what_a_policy_cannot_hold() -> None:
    notes: list[str] = []
    raw = [{"name": "a"}, {"name": "a"}, {"name": ""}, "junk", {"name": "b", "inputSchema": 3}]
    tools = normalise_tools(raw, notes)
    assert [t["name"] for t in tools] == ["a", "b"]
    assert tools[1]["inputSchema"] == {}
    assert len(notes) == 4 and "listed twice" in notes[0]


# --- real servers over stdio ---------------------------------------------------------------------


def test_mcp_server_git_over_stdio(tmp_path: Path) -> None:
    pytest.importorskip("mcp_server_git", reason="pip install mcp-server-git==2026.10.19")
    scan = scan_stdio([sys.executable, "-m", "mcp_server_git"], cwd=tmp_path)
    assert scan.server is not None and scan.server["name"] == "mcp-git"
    names = [t["name"] for t in scan.tools]
    assert names == _labelled_names("mcp-server-git")
    by_name = {c.name: c for c in classify_all(scan.tools)}
    assert by_name["git_status"].category == "Read"
    assert by_name["git_commit"].category == "Write"
    assert by_name["git_reset"].category == "Destructive"  # the server marks it destructive
    policy = _loads_and_decides(scan.tools)
    assert policy["hide"] == ["git_reset"]


def test_mcp_server_time_over_stdio() -> None:
    pytest.importorskip("mcp_server_time", reason="pip install mcp-server-time==2026.10.19")
    scan = scan_stdio([sys.executable, "-m", "mcp_server_time"])
    assert [t["name"] for t in scan.tools] == ["get_current_time", "convert_time"]
    assert {c.category for c in classify_all(scan.tools)} == {"Read"}
    policy = _loads_and_decides(scan.tools)
    assert policy["tools"] == {"get_current_time": {}, "convert_time": {}}


def test_a_server_that_fails_to_start_says_why() -> None:
    with pytest.raises(ScanError, match=r"the server said:\n(.|\n)*boom"):
        scan_stdio([sys.executable, "-c", "import sys; sys.exit('boom')"], timeout=30)
    with pytest.raises(ScanError):
        scan_stdio(["/nonexistent/server"], timeout=30)


# --- a real server over Streamable HTTP ----------------------------------------------------------


@needs_node
def test_server_everything_over_http() -> None:
    with EverythingServer() as server:
        scan = scan_url(server.url, timeout=60)
    assert scan.server is not None and "everything" in scan.server["name"]
    names = [t["name"] for t in scan.tools]
    # The same pinned version as the labelled set's stdio dump: the transport changes nothing.
    assert set(_labelled_names("@modelcontextprotocol/server-everything")) <= set(names)
    by_name = {c.name: c.category for c in classify_all(scan.tools)}
    assert by_name["echo"] == "Read" and by_name["toggle-simulated-logging"] == "Write"
    _loads_and_decides(scan.tools)


def test_nothing_listening() -> None:
    with pytest.raises(ScanError, match=r"127\.0\.0\.1:9/mcp"):
        scan_url("http://127.0.0.1:9/mcp", timeout=20)


# --- pagination ----------------------------------------------------------------------------------

#: A stdio server written with the SDK's low-level Server: ``N`` tools, ``PAGE`` per tools/list
#: page, or (``loop``) a cursor that never ends.
PAGER = textwrap.dedent(
    """
    import sys

    import anyio
    import mcp.types as types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    N, PAGE = int(sys.argv[1]), int(sys.argv[2])
    LOOP = sys.argv[3:] == ["loop"]
    TOOLS = [
        types.Tool(name=f"delete_{i:03d}" if i % 7 == 0 else f"get_{i:03d}",
                   description=f"Tool number {i}", input_schema={"type": "object"})
        for i in range(N)
    ]

    async def list_tools(ctx, params):
        if LOOP:
            return types.ListToolsResult(tools=TOOLS[:1], next_cursor="again")
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + PAGE
        return types.ListToolsResult(tools=TOOLS[start:end],
                                     next_cursor=str(end) if end < N else None)

    server = Server("pager", version="1.0", on_list_tools=list_tools)

    async def main():
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)
    """
)


@pytest.fixture
def pager(tmp_path: Path) -> Path:
    path = tmp_path / "pager.py"
    path.write_text(PAGER)
    return path


def test_pagination_is_followed(pager: Path) -> None:
    scan = scan_stdio([sys.executable, str(pager), "50", "7"])
    assert scan.pages == 8
    assert [int(t["name"].split("_")[1]) for t in scan.tools] == list(range(50))
    hidden = suggest(classify_all(scan.tools))["hide"]
    assert hidden == [f"delete_{i:03d}" for i in range(0, 50, 7)]


def test_a_cursor_that_never_ends_is_refused(pager: Path) -> None:
    with pytest.raises(ScanError, match="cursor 'again' twice"):
        scan_stdio([sys.executable, str(pager), "5", "1", "loop"])


# --- the commands --------------------------------------------------------------------------------


def test_scan_save_then_suggest(
    pager: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "tools.json"
    assert main(["scan", "--save", str(saved), "--", sys.executable, str(pager), "9", "4"]) == 0
    table = capsys.readouterr().out
    assert "pager 1.0): 9 tools" in table and "delete_007" in table
    assert "Read 7, Destructive 2" in table
    assert main(["scan", "--file", str(saved), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["category"] for t in report["tools"]].count("Destructive") == 2
    assert set(report["tools"][0]) == {
        "name",
        "category",
        "risk",
        "sensitive",
        "confidence",
        "reason",
        "evidence",
    }
    assert main(["suggest", "-q", "-o", str(tmp_path / "policy.json"), "--file", str(saved)]) == 0
    assert main(["validate", str(tmp_path / "policy.json")]) == 0


def test_scan_needs_exactly_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan"]) == exits.UNUSABLE
    assert "exactly one" in capsys.readouterr().err
    assert main(["scan", "--file", "x.json", "--url", "http://127.0.0.1:9/mcp"]) == exits.UNUSABLE


def test_the_sdk_is_needed_only_to_scan_a_server(tmp_path: Path) -> None:
    """Without the mcp package: the CLI still loads (serve needs no SDK), files still scan, and
    scanning a server says what to install."""
    (tmp_path / "tools.json").write_text(json.dumps({"tools": TOOLS}))
    script = textwrap.dedent(
        """
        import sys
        sys.modules["mcp"] = None  # import mcp fails
        from toolgate.cli.main import build_parser
        from toolgate.scanner.scan import ScanError, scan_file, scan_url
        build_parser()
        assert len(scan_file("tools.json").tools) == 2
        try:
            scan_url("http://127.0.0.1:9/mcp")
        except ScanError as err:
            print(err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'toolgate[scan]'" in done.stdout
