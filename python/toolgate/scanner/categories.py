"""The categories a tool is classified into, from the least to the most risky, and the risk
each carries."""

from __future__ import annotations

from typing import Literal

Category = Literal["Read", "Write", "Execute", "Destructive", "Financial"]
Risk = Literal["low", "medium", "high", "critical"]
Confidence = Literal["high", "medium", "low"]

READ: Category = "Read"
WRITE: Category = "Write"
EXECUTE: Category = "Execute"
DESTRUCTIVE: Category = "Destructive"
FINANCIAL: Category = "Financial"

#: Every category, from the least to the most risky.
CATEGORIES: tuple[Category, ...] = (READ, WRITE, EXECUTE, DESTRUCTIVE, FINANCIAL)
RISK: dict[Category, Risk] = {
    READ: "low",
    WRITE: "medium",
    EXECUTE: "high",
    DESTRUCTIVE: "critical",
    FINANCIAL: "critical",
}
#: Each category's place in that order.
RANK = {c: i for i, c in enumerate(CATEGORIES)}
#: The risk of a Read whose answer holds secrets or credentials.
SENSITIVE_READ_RISK: Risk = "high"


def riskier(a: Category, b: Category) -> Category:
    """The riskier of two categories (Financial > Destructive > Execute > Write > Read)."""
    return a if RANK[a] >= RANK[b] else b
