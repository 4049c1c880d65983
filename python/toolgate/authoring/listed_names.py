"""Rules that name no tool their server lists. A misspelt name (``create_amii``) is a valid
rule, and under ``default: allow`` the real ``create-ami`` then runs without it. Given a
server's listing (a saved ``tools/list``, or one read from the server), each rule naming a
tool it does not list is reported, with the listed name nearest to it. A section whose pins
withhold unpinned tools has a listing already: its pins file, which names every tool the
section can reach."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from toolgate._core import Policy, inert


@dataclass(frozen=True)
class Unlisted:
    """A rule (at ``pointer``) naming ``name``, which its server does not list."""

    pointer: str
    name: str
    nearest: str | None
    #: The pins file the name was looked for in; None: a listing of the server's.
    pins: str | None = None

    def message(self) -> str:
        if self.pins is None:
            near = f" (nearest listed: {inert(self.nearest)})" if self.nearest else ""
            return f"{self.pointer}: names {inert(self.name)}, which the server does not list{near}"
        near = f" (nearest pinned: {inert(self.nearest)})" if self.nearest else ""
        return (
            f"{self.pointer}: names {inert(self.name)}, which {inert(self.pins)} does not pin, "
            f"so the tool is withheld (unpinned: hide){near}"
        )


def split_source(spec: str) -> tuple[str | None, str]:
    """``SERVER=SOURCE`` as (SERVER, SOURCE): SERVER is what comes before the first ``=``,
    any server id without one (``github:prod``). A bare SOURCE, for the top-level section, is
    a URL (``http://...``, whose query may hold ``=``), a file that is there, or a text
    without ``=``."""
    if re.match(r"https?://", spec) or os.path.exists(spec) or "=" not in spec:
        return None, spec
    server, _, source = spec.partition("=")
    return server, source


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


def sectionless(policy: Policy, listings: Mapping[str | None, Collection[str]]) -> list[str]:
    """The servers given a listing that have no section of their own in ``policy`` (a typo of
    one that has, perhaps): each is checked against the top-level section, and said."""
    own = set(policy.servers)
    return sorted(s for s in listings if s is not None and s not in own)


def unlisted(policy: Policy, listings: Mapping[str | None, Collection[str]]) -> list[Unlisted]:
    """The rules of ``policy`` naming a tool their server's listing lacks. A section is checked
    against the listing of its server (the top-level one against the listing given without a
    server, and against that of any server without a section of its own); a section with no
    listing given is checked against its pins file when its pins withhold unpinned tools, and
    otherwise not at all."""
    own = set(policy.servers)
    by_section: dict[str | None, set[str]] = {}
    for server, names in listings.items():
        section = server if server in own else None
        by_section.setdefault(section, set()).update(names)
    pinned = {server: (file, set(names)) for server, file, names in policy.pinned_tools()}
    found = []
    for server, name, pointer in policy.named_tools():
        names = by_section.get(server)
        pins = None
        if names is None and server in pinned:
            pins, names = pinned[server]
        if names is None or name in names:
            continue
        nearest = difflib.get_close_matches(name, sorted(names), n=1, cutoff=0.6)
        found.append(Unlisted(pointer, name, nearest[0] if nearest else None, pins))
    return found
