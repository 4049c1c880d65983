"""Collect the tools of the unseen set from clones of their servers' repositories.

    python tests/data/unseen/collect.py CLONES_DIR > /tmp/tools.json

CLONES_DIR holds one git clone per repository, named ``owner+name`` (``github+github-mcp-server``),
each with the commit below available. The tools are read from the source at that commit, as the
server declares them: the tool snapshots a server keeps (GitHub's), the decorators and docstrings
of a Python server (Alpaca's), the tool definitions of a Go or TypeScript server, or, for servers
whose README lists each tool with its description (Razorpay's, Base's), that list. What a file
did not say (a schema, annotations) is left empty. Labels are not made here: `tools.json` keeps
them, and `merge` below carries them over to a new collection.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

#: (repository, commit, where the tools are read from, server name in the set).
SOURCES = [
    ("github/github-mcp-server", "64a49f34", "pkg/github/__toolsnaps__", "github-mcp-server"),
    (
        "alpacahq/alpaca-mcp-server",
        "57ecdee",
        "src/alpaca_mcp_server/server.py",
        "alpaca-mcp-server",
    ),
    ("razorpay/razorpay-mcp-server", "ad68cf0", "README.md", "razorpay-mcp-server"),
    ("hashicorp/vault-mcp-server", "8d1967b", "pkg/tools", "vault-mcp-server"),
    ("bitwarden/mcp-server", "70a23d3", "src/tools", "bitwarden-mcp-server"),
    ("base/base-mcp", "ff21d9a", "README.md", "base-mcp"),
    ("coinbase/agentkit", "455a6c5a", "typescript/agentkit/src/action-providers", "agentkit-mcp"),
]
#: AgentKit's action providers in the set: wallets, tokens, swaps, bridges, lending, payments.
AGENTKIT_PROVIDERS = [
    "wallet/walletActionProvider",
    "erc20/erc20ActionProvider",
    "erc721/erc721ActionProvider",
    "weth/wethActionProvider",
    "compound/compoundActionProvider",
    "morpho/morphoActionProvider",
    "moonwell/moonwellActionProvider",
    "across/acrossActionProvider",
    "jupiter/jupiterActionProvider",
    "zeroX/zeroXActionProvider",
    "sushi/sushiRouterActionProvider",
    "superfluid/superfluidStreamActionProvider",
    "onramp/onrampActionProvider",
    "x402/x402ActionProvider",
    "cdp/cdpApiActionProvider",
    "pyth/pythActionProvider",
]


def git(clone: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(clone), *args], check=True, capture_output=True, text=True
    ).stdout


def show(clone: Path, commit: str, path: str) -> str:
    return git(clone, "show", f"{commit}:{path}")


def files(clone: Path, commit: str, under: str) -> list[str]:
    return git(clone, "ls-tree", "-r", "--name-only", commit, under).split()


def tool(
    name: str, description: str, schema: dict | None = None, annotations: dict | None = None
) -> dict:
    return {
        "name": name,
        "description": " ".join(description.split()),
        "inputSchema": schema or {},
        "annotations": annotations or {},
    }


def github(clone: Path, commit: str, under: str) -> list[dict]:
    out = []
    for path in files(clone, commit, under):
        d = json.loads(show(clone, commit, path))
        out.append(
            tool(d["name"], d.get("description", ""), d.get("inputSchema"), d.get("annotations"))
        )
    return out


def alpaca(clone: Path, commit: str, path: str) -> list[dict]:
    out = []
    for node in ast.walk(ast.parse(show(clone, commit, path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        decorators = [d for d in node.decorator_list if "mcp.tool" in ast.unparse(d)]
        if not decorators:
            continue
        annotations: dict[str, Any] = {}
        d = decorators[0]
        if isinstance(d, ast.Call):
            for kw in d.keywords:
                if kw.arg == "annotations":
                    annotations = {
                        k: v for k, v in ast.literal_eval(kw.value).items() if k.endswith("Hint")
                    }
        doc = (ast.get_docstring(node) or "").split("\n\n")[0]
        params = [a.arg for a in node.args.args if a.arg not in ("self", "ctx")]
        schema = {"type": "object", "properties": {p: {} for p in params}}
        out.append(tool(node.name, doc, schema, annotations))
    return out


def readme_table(clone: Path, commit: str, path: str) -> list[dict]:
    row = re.compile(r"^\|\s*`(\w+)`\s*\|\s*([^|]+?)\s*\|")
    return [
        tool(m.group(1), m.group(2))
        for line in show(clone, commit, path).splitlines()
        if (m := row.match(line))
    ]


def readme_sections(clone: Path, commit: str, path: str) -> list[dict]:
    text = show(clone, commit, path).split("## Available Tools", 1)[1].split("\n## ", 1)[0]
    out = []
    for section in text.split("\n### ")[1:]:
        name, _, body = section.partition("\n")
        paragraphs = [p.strip() for p in body.strip().split("\n\n")]
        params = re.findall(r"^- `(\w+)`", body, re.M)
        schema = {"type": "object", "properties": {p: {} for p in params}} if params else {}
        out.append(tool(name.strip(), paragraphs[0], schema))
    return out


_GO_STRING = r'"((?:[^"\\]|\\.)*)"'


def go_tools(clone: Path, commit: str, under: str) -> list[dict]:
    out = []
    for path in files(clone, commit, under):
        if not path.endswith(".go") or path.endswith("_test.go"):
            continue
        src = show(clone, commit, path)
        for block in src.split("mcp.NewTool(")[1:]:
            name = re.match(_GO_STRING, block)
            description = re.search(r"mcp\.WithDescription\(" + _GO_STRING, block)
            if not name or not description:
                continue
            body = block.split("Handler:", 1)[0]
            params = re.findall(
                r"mcp\.With(?:String|Number|Boolean|Array|Object)\(" + _GO_STRING, body
            )
            schema = {"type": "object", "properties": {p: {} for p in params}}
            out.append(tool(name.group(1), json.loads(f'"{description.group(1)}"'), schema))
    return out


_TS_STRING = r"(?:'((?:[^'\\]|\\.)*)'" + r'|"((?:[^"\\]|\\.)*)")'


def ts_tools(clone: Path, commit: str, under: str) -> list[dict]:
    out = []
    for path in files(clone, commit, under):
        if not path.endswith(".ts") or path.endswith("index.ts"):
            continue
        src = show(clone, commit, path)
        pattern = re.compile(
            r"^  name: " + _TS_STRING + r",\n  description:\s*((?:" + _TS_STRING + r"\s*\+?\s*)+),",
            re.M,
        )
        for m in pattern.finditer(src):
            name = m.group(1) or m.group(2)
            parts = re.findall(_TS_STRING, m.group(3))
            text = "".join(a or b for a, b in parts)
            out.append(tool(name, text.replace("\\'", "'").replace('\\"', '"')))
    return out


def agentkit(clone: Path, commit: str, under: str) -> list[dict]:
    out = []
    for provider in AGENTKIT_PROVIDERS:
        src = show(clone, commit, f"{under}/{provider}.ts")
        cls = re.search(r"export class (\w+)", src)
        assert cls, provider
        for m in re.finditer(
            r'@CreateAction\(\{\s*name: "(\w+)",\s*description:\s*(`[^`]*`|"[^"]*")', src
        ):
            out.append(tool(f"{cls.group(1)}_{m.group(1)}", m.group(2)[1:-1]))
    return out


READERS = {
    "github-mcp-server": github,
    "alpaca-mcp-server": alpaca,
    "razorpay-mcp-server": readme_table,
    "vault-mcp-server": go_tools,
    "bitwarden-mcp-server": ts_tools,
    "base-mcp": readme_sections,
    "agentkit-mcp": agentkit,
}


def collect(clones: Path) -> list[dict]:
    out = []
    for repo, commit, where, server in SOURCES:
        clone = clones / repo.replace("/", "+")
        for t in READERS[server](clone, commit, where):
            out.append({"server": server, "source": f"github.com/{repo}@{commit}:{where}", **t})
    return out


def merge(collected: list[dict], labelled: list[dict]) -> list[dict]:
    """Carry labels over by (server, name); new tools come in unlabelled."""
    known = {(t["server"], t["name"]): t for t in labelled}
    merged = []
    for t in collected:
        old = known.get((t["server"], t["name"]), {})
        merged.append(t | {k: old[k] for k in ("label", "sensitive", "why", "split") if k in old})
    return merged


if __name__ == "__main__":
    tools = collect(Path(sys.argv[1]))
    here = Path(__file__).with_name("tools.json")
    if here.exists():
        tools = merge(tools, json.loads(here.read_text()))
    json.dump(tools, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
