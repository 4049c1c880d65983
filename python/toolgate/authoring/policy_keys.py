"""docs/policy-keys.md: every key of the policy language, by object, as the loader accepts
them (``toolgate._core.policy_keys``, their one owner). ``python -m
toolgate.authoring.policy_keys`` rewrites the page; tests/test_policy_keys.py checks it."""

from __future__ import annotations

import sys
from pathlib import Path

from toolgate._core import policy_keys

#: Where the page's generated part starts.
MARKER = "<!-- made from toolgate._core.policy_keys: python -m toolgate.authoring.policy_keys -->"


def tables() -> str:
    """One table per object, under its heading."""
    out = []
    for heading, keys in policy_keys():
        rows = "".join(f"| `{name}` | {meaning} |\n" for name, meaning in keys)
        out.append(f"## {heading}\n\n| key | meaning |\n|---|---|\n{rows}")
    return "\n".join(out)


def page(current: str) -> str:
    """``current`` (the page as it is) with its generated part made anew."""
    intro, _, _ = current.partition(MARKER)
    return f"{intro}{MARKER}\n\n{tables()}"


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/policy-keys.md")
    path.write_text(page(path.read_text() if path.exists() else ""))
