"""Rules that name no tool their server lists. A misspelt name (``create_amii``) is a valid
rule, and under ``default: allow`` the real ``create-ami`` then runs without it. Given a
server's listing (a saved ``tools/list``, or one read from the server), each rule naming a
tool it does not list is reported, with the listed name nearest to it."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from toolgate._core import Policy, inert

#: ``SERVER=SOURCE``: a listing for the section of server SERVER (else the top-level one).
_FOR_SERVER = re.compile(r"([A-Za-z0-9_.-]+)=(.+)", re.DOTALL)


@dataclass(frozen=True)
class Unlisted:
    """A rule (at ``pointer``) naming ``name``, which its server does not list."""

    pointer: str
    name: str
    nearest: str | None

    def message(self) -> str:
        near = f" (nearest listed: {inert(self.nearest)})" if self.nearest else ""
        return f"{self.pointer}: names {inert(self.name)}, which the server does not list{near}"


def split_source(spec: str) -> tuple[str | None, str]:
    """``SERVER=SOURCE`` as (SERVER, SOURCE); a bare SOURCE is for the top-level section."""
    m = _FOR_SERVER.fullmatch(spec)
    return (m.group(1), m.group(2)) if m else (None, spec)


def read_listings(
    specs: Sequence[str], read: Callable[[str], Collection[str]]
) -> dict[str | None, set[str]]:
    """Each ``[SERVER=]SOURCE`` read with ``read`` (the names it lists), by server: listings
    of one server add up (its pages, or several sources)."""
    listings: dict[str | None, set[str]] = {}
    for spec in specs:
        server, source = split_source(spec)
        listings.setdefault(server, set()).update(read(source))
    return listings


def unlisted(policy: Policy, listings: Mapping[str | None, Collection[str]]) -> list[Unlisted]:
    """The rules of ``policy`` naming a tool their server's listing lacks. A section is checked
    against the listing of its server (the top-level one against the listing given without a
    server, and against that of any server without a section of its own); a section with no
    listing given is not checked."""
    own = set(policy.servers)
    by_section: dict[str | None, set[str]] = {}
    for server, names in listings.items():
        section = server if server in own else None
        by_section.setdefault(section, set()).update(names)
    found = []
    for server, name, pointer in policy.named_tools():
        names = by_section.get(server)
        if names is None or name in names:
            continue
        nearest = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
        found.append(Unlisted(pointer, name, nearest[0] if nearest else None))
    return found
