"""Write the figures README.md and docs/*.md quote from bench/RESULTS.md's headline table.

Every figure the documentation quotes sits between two markers naming what it is:

    <!-- headline: peers -->(the figures, as the table has them)<!-- /headline -->

and this script rewrites what is between them from the "Headline figures" table of
bench/RESULTS.md, so a figure can only be quoted as the table has it. After the benchmarks are
rerun and the table updated, rerun this:

    .venv/bin/python bench/headline.py            # rewrite the quoted figures
    .venv/bin/python bench/headline.py --check    # change nothing; exit 1 naming each
                                                  # place that disagrees (the tests run it)

``QUOTES`` says what each marker holds: ``{row}`` is a row's whole figure cell, ``{row.N}``
the Nth figure in bold in it (from 1), rows being found by what their first cell says
(``ROWS``). A row or a bold figure that is not there, or a marker this script does not know,
is an error naming it, never a quote left as it was.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"

#: The documents that quote headline figures.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Each headline row, found by a pattern its first cell ("what") matches.
ROWS = {
    "limitador": r"against Limitador \(in-memory\)",
    "opa": r"against OPA",
    "redis": r"counters on Redis",
    "floor": r"against a constant-answer server",
    "ext-authz": r"what Envoy's ext_authz adds",
    "ext-proc": r"what ext_proc adds",
    "envoy-module": r"what toolgate's Envoy module adds",
    "threads": r"a runtime per serving thread",
    "memory": r"idle memory",
    "core": r"one decision in the Rust core",
    "decision-log": r"to the decision log",
    "approval": r"require_approval",
    "bodies": r"1 MiB MCP body",
    "fuzzing": r"fuzzing",
}

#: What each marker's text is made of.
QUOTES = {
    "peers": (
        "{limitador.1} Limitador's rate-limit throughput at {limitador.2} its CPU per call, "
        "{opa.1} OPA's ext_authz throughput at {opa.2}"
    ),
    "threads": "{threads}",
    "ext-authz": "{ext-authz}",
    "ext-proc": "{ext-proc}",
    "envoy-module": "{envoy-module}",
    "redis": "{redis}",
    "memory": "{memory.1}",
}

MARKER = re.compile(r"(<!-- headline: ([a-z-]+) -->)(.*?)(<!-- /headline -->)", re.S)
_FIELD = re.compile(r"\{([a-z-]+)(?:\.(\d+))?\}")


class HeadlineError(Exception):
    """The table or a marker is not as this script expects: the message says where."""


def headline_rows(text: str) -> dict[str, str]:
    """Each row of the "Headline figures" table, by key of ``ROWS``: its figure cell."""
    section = re.search(r"^## Headline figures\n(.*?)(?=^## )", text, re.M | re.S)
    if section is None:
        raise HeadlineError(f"{RESULTS.name}: no '## Headline figures' section")
    rows = []
    for line in section.group(1).splitlines():
        if line.startswith("|") and not re.match(r"\|\s*(what|-+)\s*\|", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if len(cells) >= 2:
                rows.append((cells[0], cells[1]))
    out = {}
    for key, pattern in ROWS.items():
        found = [figure for what, figure in rows if re.search(pattern, what, re.I)]
        if len(found) != 1:
            raise HeadlineError(
                f"{RESULTS.name}: {len(found)} headline rows match {pattern!r} (row {key!r})"
            )
        out[key] = found[0]
    return out


def quote(name: str, rows: dict[str, str]) -> str:
    """The text of marker ``name``."""
    if name not in QUOTES:
        raise HeadlineError(f"no quote named {name!r} (bench/headline.py QUOTES)")

    def field(m: re.Match[str]) -> str:
        cell = rows[m.group(1)]
        if m.group(2) is None:
            return cell
        bold = re.findall(r"\*\*(.+?)\*\*", cell)
        n = int(m.group(2))
        if not 1 <= n <= len(bold):
            raise HeadlineError(f"row {m.group(1)!r} has no bold figure {n}: {cell}")
        return bold[n - 1]

    return _FIELD.sub(field, QUOTES[name])


@dataclass
class Stale:
    path: Path
    line: int
    name: str
    quoted: str
    table: str

    def __str__(self) -> str:
        where = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return (
            f"{where}:{self.line}: {self.name}: quotes {self.quoted!r}, "
            f"the table has {self.table!r}"
        )


def rewrite(text: str, rows: dict[str, str], path: Path) -> tuple[str, list[Stale]]:
    """``text`` with every marker's quote written from ``rows``, and the quotes that differed."""
    stale: list[Stale] = []

    def one(m: re.Match[str]) -> str:
        name, quoted = m.group(2), m.group(3)
        wanted = quote(name, rows)
        if quoted != wanted:
            line = text.count("\n", 0, m.start()) + 1
            stale.append(Stale(path, line, name, quoted, wanted))
        return f"{m.group(1)}{wanted}{m.group(4)}"

    return MARKER.sub(one, text), stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a quote disagrees"
    )
    args = parser.parse_args(argv)
    try:
        rows = headline_rows(RESULTS.read_text())
        stale: list[Stale] = []
        for path in DOCUMENTS:
            text = path.read_text()
            new, found = rewrite(text, rows, path)
            stale += found
            if found and not args.check:
                path.write_text(new)
    except HeadlineError as err:
        print(f"headline.py: {err}", file=sys.stderr)
        return 2
    for s in stale:
        print(s, file=sys.stderr if args.check else sys.stdout)
    if args.check and stale:
        print(
            "headline.py: run `.venv/bin/python bench/headline.py` to rewrite them", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
