"""One resource in many spellings, through a real Envoy: every spelling of a hidden or denied
file that the server would read as that file is refused, and never reaches it.

End to end, what an outside review of every-method decisions found through a real Envoy:
spellings of a hidden or denied file that the Go server (url.Parse, path.Clean) reads as that
file (a `file:` without authority, a trailing slash, a query, a fragment) were let through to
it. Each is refused now and never reaches the server, while the server alone, asked
directly, reads the file."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import policy
from envoy_proxy import Envoy, deployed
from mcp_servers import GoMcpServer, build_go_mcp_server
from sidecar import Sidecar
from test_methods_attacks import EVERY_RESOURCE_BUT, EXT_PROC, direct, reads, through

# Only the hidden file named: every other resource allowed.
HIDDEN_ONLY = policy(
    {"read_file": {}},
    hide={"resources": ["file:///etc/shadow"]},
    resources={"*": {}},
)


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_mcp_server(tmp_path_factory.mktemp("go-mcp-server"))


@contextlib.contextmanager
def gated(document: dict, binary: Path, work: Path) -> Iterator[tuple[Envoy, GoMcpServer]]:
    with (
        GoMcpServer(binary, work / "ran.jsonl") as upstream,
        Sidecar(document) as sidecar,
        deployed(EXT_PROC, sidecar.port, upstream.port) as envoy,
    ):
        yield envoy, upstream


@pytest.mark.parametrize(
    ("document", "uri"),
    [
        # Finding 1: no authority. Past the hide and the `file:///etc/*` deny.
        (EVERY_RESOURCE_BUT, "file:/etc/shadow"),
        (EVERY_RESOURCE_BUT, "file:/etc/hosts"),
        # Finding 2: a trailing slash, a query, a fragment. Past the (exact) hide.
        (HIDDEN_ONLY, "file:///etc/shadow/"),
        (HIDDEN_ONLY, "file:///etc/shadow?"),
        (HIDDEN_ONLY, "file:///etc/shadow?x=1"),
        (HIDDEN_ONLY, "file:///etc/shadow#x"),
    ],
)
def test_another_spelling_of_a_hidden_or_denied_file_never_reaches_the_server(
    document: dict, uri: str, go_binary: Path, tmp_path: Path
) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}}
    )
    with gated(document, go_binary, tmp_path) as (envoy, upstream):
        # The Go server reads it as a system file.
        assert "result" in direct(upstream, body)
        assert reads(upstream)[-1].startswith("/etc/")
        before = len(reads(upstream))
        answer = through(envoy, body)
        assert len(reads(upstream)) == before, f"{uri} reached the server: {answer}"
        assert "error" in answer, answer
