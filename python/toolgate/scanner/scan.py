"""Read the tools an MCP server offers: from a running server over Streamable HTTP, from a stdio
server started for the purpose, or from a saved ``tools/list`` JSON file.

Every source gives the same thing: a :class:`Scan` whose ``tools`` are plain dicts
``{"name", "description", "inputSchema", "annotations"}`` in the server's order, every page of a
paginated ``tools/list`` followed. The official MCP Python SDK (``mcp`` on PyPI) does the talking;
it is imported only when a server is scanned, so the rest of toolgate does not need it.

    >>> scan = scan_file("tools.json")
    >>> [t["name"] for t in scan.tools]
    ['git_status', 'git_diff', ...]
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A server that keeps answering with new cursors is broken (or hostile): stop after this many.
MAX_PAGES = 1000

#: Default time a whole scan may take, in seconds: starting the server, the handshake, every page.
DEFAULT_TIMEOUT = 60.0


class ScanError(Exception):
    """The tools could not be read: the message says from where and why."""


class ScanUnreachable(ScanError):
    """The server did not answer: nothing listens at its URL, it timed out, or it failed on
    the way (a ``ScanError`` that is not this one is the input's: a file, a program)."""


@dataclass
class Scan:
    """The tools of one server.

    ``source`` says where they came from (a URL, a command line, a file); ``server`` is the
    server's ``serverInfo`` (``{"name", "version"}``) when it was asked; ``notes`` are things
    the reader fixed on the way (a duplicate name dropped, a missing schema) that a user should
    hear about.
    """

    source: str
    tools: list[dict[str, Any]]
    server: dict[str, str] | None = None
    pages: int = 1
    notes: list[str] = field(default_factory=list)
    #: The tool objects as the server listed them, every member kept: what a pin records.
    listed: list[dict[str, Any]] = field(default_factory=list)

    def tools_list(self) -> dict[str, Any]:
        """The tools as one ``tools/list`` result, as listed (every member kept), the form
        :func:`scan_file` reads back."""
        return {"tools": self.listed or self.tools}


# --- normalising ---------------------------------------------------------------------------------


def normalise_tools(raw: Sequence[Any], notes: list[str]) -> list[dict[str, Any]]:
    """Plain ``{name, description, inputSchema, annotations}`` dicts, in order.

    A tool without a usable name is dropped, and so is a second tool of the same name (a policy
    has one rule per name); each such fix is described in ``notes``.
    """
    tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            notes.append(f"tool #{i} is not an object: dropped")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            notes.append(f"tool #{i} has no name: dropped")
            continue
        if name in seen:
            notes.append(f"tool {name!r} is listed twice: kept the first")
            continue
        seen.add(name)
        description = entry.get("description")
        schema = entry.get("inputSchema")
        annotations = entry.get("annotations")
        if schema is not None and not isinstance(schema, Mapping):
            notes.append(f"tool {name!r}: inputSchema is not an object: ignored")
        tools.append(
            {
                "name": name,
                "description": description if isinstance(description, str) else "",
                "inputSchema": dict(schema) if isinstance(schema, Mapping) else {},
                "annotations": dict(annotations) if isinstance(annotations, Mapping) else {},
            }
        )
    return tools


def _pages_of(document: Any) -> list[Mapping[str, Any]] | None:
    """The ``tools/list`` results in a saved document, or None if it holds none."""
    if isinstance(document, Mapping):
        if "result" in document and isinstance(document["result"], Mapping):
            document = document["result"]  # a whole JSON-RPC response
        if isinstance(document.get("tools"), list):
            return [document]
        return None
    if isinstance(document, list):
        if all(isinstance(d, Mapping) and ("tools" in d or "result" in d) for d in document):
            pages = [_pages_of(d) for d in document]
            if document and all(p is not None for p in pages):
                return [page for p in pages if p is not None for page in p]
        if all(isinstance(d, Mapping) and "name" in d for d in document):
            return [{"tools": document}]  # a bare list of tools
    return None


def scan_file(path: str | Path) -> Scan:
    """Tools from a JSON file: a ``tools/list`` result (``{"tools": [...]}``), the whole
    JSON-RPC response, a list of such pages, or a bare list of tools."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ScanError(f"{source}: {err.strerror or err}") from err
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ScanError(f"{source}: not JSON: {err}") from err
    pages = _pages_of(document)
    if pages is None:
        raise ScanError(
            f'{source}: expected a tools/list result ({{"tools": [...]}}), a JSON-RPC response '
            "holding one, a list of them, or a list of tools"
        )
    notes: list[str] = []
    raw = [tool for page in pages for tool in page["tools"]]
    listed = [dict(t) for t in raw if isinstance(t, Mapping)]
    return Scan(source, normalise_tools(raw, notes), pages=len(pages), notes=notes, listed=listed)


# --- talking to servers --------------------------------------------------------------------------


#: What reading a server needs: the official MCP SDK and the libraries it is driven with
#: here, all installed by toolgate's ``scan`` extra.
SDK_PACKAGES = ("mcp", "anyio", "httpx2")


def _sdk() -> Any:
    """The MCP SDK, or ScanError naming what is missing and how to install it."""
    missing = []
    for name in SDK_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ScanError(
            "reading a server's tools needs the official MCP Python SDK, which toolgate's "
            f"'scan' extra installs: pip install 'toolgate[scan]' (missing: {', '.join(missing)})"
        )
    import mcp

    return mcp


async def list_all_tools(session: Any) -> tuple[list[Any], int]:
    """Every tool of an initialized ``mcp.ClientSession``, following ``nextCursor``; and the
    number of pages read."""
    import mcp.types as types

    tools: list[Any] = []
    cursors: set[str] = set()
    params: types.PaginatedRequestParams | None = None
    for page in range(1, MAX_PAGES + 1):
        result = await session.list_tools(params=params)
        tools.extend(result.tools)
        cursor = result.next_cursor
        if cursor is None:
            return tools, page
        if cursor in cursors:
            raise ScanError(f"the server sent cursor {cursor!r} twice: pagination never ends")
        cursors.add(cursor)
        params = types.PaginatedRequestParams(cursor=cursor)
    raise ScanError(f"tools/list still had more pages after {MAX_PAGES}: gave up")


async def _read(session: Any, source: str) -> Scan:
    init = await session.initialize()
    raw, pages = await list_all_tools(session)
    dicts = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in raw]
    notes: list[str] = []
    info = init.server_info
    server = {"name": info.name, "version": info.version} if info is not None else None
    tools = normalise_tools(dicts, notes)
    return Scan(source, tools, server=server, pages=pages, notes=notes, listed=dicts)


def _innermost(err: BaseException) -> BaseException:
    """The error an error the SDK raised holds (often inside task groups)."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return err


def _describe(err: BaseException) -> str:
    """The innermost useful message of an error the SDK raised."""
    err = _innermost(err)
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


async def scan_url_async(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Scan:
    """The tools of a running server at ``url`` (Streamable HTTP), e.g.
    ``http://127.0.0.1:3001/mcp``; ``headers`` go on every request (an Authorization)."""
    _sdk()
    import anyio
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    try:
        with anyio.fail_after(timeout):
            http = httpx2.AsyncClient(headers=dict(headers or {}), timeout=httpx2.Timeout(timeout))
            async with (
                http,
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                return await _read(session, url)
    except ScanError:
        raise
    except TimeoutError as err:
        raise ScanUnreachable(f"{url}: no complete answer within {timeout:g}s") from err
    except Exception as err:
        raise ScanUnreachable(f"{url}: {_describe(err)}") from err


async def scan_stdio_async(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Scan:
    """The tools of a stdio server started as ``command`` (``["uvx", "mcp-server-time"]``) and
    stopped again. The server gets the SDK's default environment (PATH, HOME, ...) plus
    ``env``; what it prints on stderr is shown only if the scan fails."""
    if not command:
        raise ScanError("no command to start the server with")
    _sdk()
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client

    source = " ".join(command)
    params = StdioServerParameters(
        command=command[0], args=list(command[1:]), env=dict(env or {}) or None, cwd=cwd
    )
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as errlog:
        try:
            with anyio.fail_after(timeout):
                async with (
                    stdio_client(params, errlog=errlog) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    return await _read(session, source)
        except ScanError:
            raise
        except TimeoutError as err:
            raise ScanUnreachable(
                f"{source}: no complete answer within {timeout:g}s{_tail(errlog)}"
            ) from err
        except Exception as err:
            # The program itself not there or not executable is the input's fault; a server
            # that started and then failed did not answer.
            given = isinstance(_innermost(err), FileNotFoundError | PermissionError)
            kind = ScanError if given else ScanUnreachable
            raise kind(f"{source}: {_describe(err)}{_tail(errlog)}") from err


def _tail(errlog: Any, lines: int = 20) -> str:
    errlog.flush()
    errlog.seek(0)
    text = errlog.read().strip()
    if not text:
        return ""
    return "\nthe server said:\n" + "\n".join(text.splitlines()[-lines:])


def scan_url(url: str, **kwargs: Any) -> Scan:
    """:func:`scan_url_async`, run to completion."""
    _sdk()
    import anyio

    return anyio.run(lambda: scan_url_async(url, **kwargs))


def scan_stdio(command: Sequence[str], **kwargs: Any) -> Scan:
    """:func:`scan_stdio_async`, run to completion."""
    _sdk()
    import anyio

    return anyio.run(lambda: scan_stdio_async(command, **kwargs))
