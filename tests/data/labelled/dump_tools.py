"""Rebuild labelled_tools.json's tool definitions from the real servers' published packages.

    source .venv/bin/activate   # toolgate and the mcp SDK (2.x), which do the scanning
    python tests/data/labelled/dump_tools.py [--workdir DIR]

Installs every pinned package below into DIR (default: a temporary directory; give one to reuse
the installs), starts each server over stdio with dummy credentials (listing tools calls no API),
reads its tools/list with ``toolgate.scanner.scan`` and merges the tools into labelled_tools.json:

- a tool already there keeps its ``label`` and ``why``; its definition is refreshed;
- a new tool is added with ``label: null``, to be labelled by hand (by what the tool does,
  never to fit the classifier); the test refuses a file with an unlabelled tool;
- entries whose source is not a package below (the tools of PolicyLayer's examples) are kept as
  they are.

Needs npm, network access to the npm registry and PyPI, and a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolgate.scanner.scan import scan_stdio

HERE = Path(__file__).resolve().parent
LABELLED = HERE / "labelled_tools.json"
TOOLKIT_SERVER = HERE / "toolkit_server.mjs"

NPM_PACKAGES = [
    "@modelcontextprotocol/server-github@2025.4.8",
    "@modelcontextprotocol/server-gitlab@2025.4.25",
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-memory@2026.8.31",
    "@modelcontextprotocol/server-slack@2025.4.25",
    "@modelcontextprotocol/server-puppeteer@2025.5.12",
    "@modelcontextprotocol/server-google-maps@0.6.2",
    "@modelcontextprotocol/server-brave-search@0.6.2",
    "@modelcontextprotocol/server-postgres@0.6.2",
    "@modelcontextprotocol/server-sequential-thinking@2026.8.31",
    "@modelcontextprotocol/server-everything@2026.8.31",
    "@modelcontextprotocol/server-everart@0.6.2",
    "@modelcontextprotocol/server-aws-kb-retrieval@0.6.2",
    "@paypal/agent-toolkit@1.8.0",
    "@stripe/agent-toolkit@0.7.12",
    "@notionhq/notion-mcp-server@2.5.2",
    "mongodb-mcp-server@3.0.4",
    "mcp-server-kubernetes@4.1.7",
]
#: Current servers, on the SDK 2.x.
PYPI_PACKAGES = ["mcp-server-git==2026.10.19", "mcp-server-time==2026.10.19"]
PYPI_PACKAGES += ["mcp-server-fetch==2026.10.24"]
#: Older servers written against the SDK 1.x (and sentry imports httpx without declaring it).
PYPI_OLD_PACKAGES = ["mcp-server-sqlite==2025.4.25", "mcp-server-sentry==2025.1.14"]
PYPI_OLD_PACKAGES += ["mcp<2", "httpx"]


@dataclass
class Server:
    source: str  # package@version, as stored in the labelled set
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


def npm_bin(workdir: Path, name: str, *args: str) -> list[str]:
    """``node <the package's bin script> args``."""
    root = workdir / "npm" / "node_modules" / name
    meta = json.loads((root / "package.json").read_text())
    entry = meta["bin"] if isinstance(meta["bin"], str) else next(iter(meta["bin"].values()))
    return ["node", str(root / entry), *args]


#: npm packages whose bin is the server: (package name, arguments, environment). ``{scratch}`` is
#: a scratch directory. Credentials are dummies: listing tools calls no API.
NPM_SERVERS: list[tuple[str, list[str], dict[str, str]]] = [
    ("@modelcontextprotocol/server-github", [], {"GITHUB_PERSONAL_ACCESS_TOKEN": "dummy"}),
    ("@modelcontextprotocol/server-gitlab", [], {"GITLAB_PERSONAL_ACCESS_TOKEN": "dummy"}),
    ("@modelcontextprotocol/server-filesystem", ["{scratch}"], {}),
    ("@modelcontextprotocol/server-memory", [], {"MEMORY_FILE_PATH": "{scratch}/memory.jsonl"}),
    (
        "@modelcontextprotocol/server-slack",
        [],
        {"SLACK_BOT_TOKEN": "xoxb-dummy", "SLACK_TEAM_ID": "T00000000"},
    ),
    ("@modelcontextprotocol/server-puppeteer", [], {}),
    ("@modelcontextprotocol/server-google-maps", [], {"GOOGLE_MAPS_API_KEY": "dummy"}),
    ("@modelcontextprotocol/server-brave-search", [], {"BRAVE_API_KEY": "dummy"}),
    ("@modelcontextprotocol/server-postgres", ["postgresql://127.0.0.1:1/none"], {}),
    ("@modelcontextprotocol/server-sequential-thinking", [], {}),
    ("@modelcontextprotocol/server-everything", ["stdio"], {}),
    ("@modelcontextprotocol/server-everart", [], {"EVERART_API_KEY": "dummy"}),
    (
        "@modelcontextprotocol/server-aws-kb-retrieval",
        [],
        {"AWS_ACCESS_KEY_ID": "dummy", "AWS_SECRET_ACCESS_KEY": "dummy", "AWS_REGION": "us-east-1"},
    ),
    ("@notionhq/notion-mcp-server", [], {"NOTION_TOKEN": "dummy"}),
    ("mongodb-mcp-server", [], {}),
    ("mcp-server-kubernetes", [], {}),
]
#: The payments toolkits ship their MCP server as a class: toolkit_server.mjs serves it.
TOOLKITS = {"@paypal/agent-toolkit": "paypal", "@stripe/agent-toolkit": "stripe"}
#: PyPI servers: (distribution, virtualenv, command after the virtualenv's bin/).
PYPI_SERVERS = [
    ("mcp-server-git", "py", ["python", "-m", "mcp_server_git"]),
    ("mcp-server-time", "py", ["python", "-m", "mcp_server_time"]),
    ("mcp-server-fetch", "py", ["python", "-m", "mcp_server_fetch"]),
    ("mcp-server-sqlite", "py-old", ["mcp-server-sqlite", "--db-path", "{scratch}/x.db"]),
    ("mcp-server-sentry", "py-old", ["mcp-server-sentry", "--auth-token", "dummy"]),
]


def servers(workdir: Path) -> list[Server]:
    versions = {p.rpartition("@")[0]: p for p in NPM_PACKAGES}
    versions |= {p.partition("==")[0]: p.replace("==", "@") for p in PYPI_PACKAGES}
    versions |= {p.partition("==")[0]: p.replace("==", "@") for p in PYPI_OLD_PACKAGES}
    scratch = workdir / "scratch"
    scratch.mkdir(exist_ok=True)

    def fill(text: str) -> str:
        return text.replace("{scratch}", str(scratch))

    out = []
    for name, args, env in NPM_SERVERS:
        command = npm_bin(workdir, name, *map(fill, args))
        out.append(Server(versions[name], command, {k: fill(v) for k, v in env.items()}))
    for name, which in TOOLKITS.items():
        out.append(
            Server(versions[name], ["node", str(workdir / "npm" / TOOLKIT_SERVER.name), which])
        )
    for name, venv, (program, *args) in PYPI_SERVERS:
        command = [str(workdir / venv / "bin" / program), *map(fill, args)]
        out.append(Server(versions[name], command))
    return out


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(args), file=sys.stderr)
    subprocess.run(args, cwd=cwd, env=env, check=True)


def install(workdir: Path) -> None:
    npm_dir = workdir / "npm"
    npm_dir.mkdir(parents=True, exist_ok=True)
    if not (npm_dir / "package.json").exists():
        (npm_dir / "package.json").write_text('{"private": true}\n')
    # No install scripts: puppeteer would download a browser, which listing tools does not need.
    env = {**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"}
    run("npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", *NPM_PACKAGES,
        cwd=npm_dir, env=env)  # fmt: skip
    (npm_dir / TOOLKIT_SERVER.name).write_text(TOOLKIT_SERVER.read_text())
    for venv, packages in (("py", PYPI_PACKAGES), ("py-old", PYPI_OLD_PACKAGES)):
        if not (workdir / venv / "bin" / "python").exists():
            run(sys.executable, "-m", "venv", str(workdir / venv))
        run(str(workdir / venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages)


def merge(scanned: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    old = json.loads(LABELLED.read_text()) if LABELLED.exists() else {"tools": []}
    labels = {(t["source"], t["name"]): t for t in old["tools"]}
    merged = [t for t in old["tools"] if t["source"] not in scanned]
    for source, tools in scanned.items():
        for tool in tools:
            before = labels.pop((source, tool["name"]), {})
            merged.append(
                {"source": source, **tool, "label": before.get("label"), "why": before.get("why")}
            )
    for source, name in labels:
        if source in scanned:
            print(f"gone from {source}: {name} (its label is dropped)", file=sys.stderr)
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="install here (kept); default: a temp dir")
    parser.add_argument("--no-install", action="store_true", help="reuse --workdir's installs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="toolgate-dump-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        if not args.no_install:
            install(workdir)
        scanned = {}
        for server in servers(workdir):
            scan = scan_stdio(server.command, env=server.env, timeout=120)
            print(f"{server.source}: {len(scan.tools)} tools", file=sys.stderr)
            scanned[server.source] = scan.tools
    merged = merge(scanned)
    document = {
        "about": "Real MCP tools with a hand-made label each; see README.md beside this file.",
        "tools": merged,
    }
    LABELLED.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    unlabelled = [t for t in merged if t["label"] is None]
    print(f"{len(merged)} tools, {len(unlabelled)} unlabelled", file=sys.stderr)
    for t in unlabelled:
        print(f"  unlabelled: {t['source']} {t['name']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
