"""Classify an MCP tool's risk from its definition: Read, Write, Execute, Destructive or Financial.

Pure and deterministic: no network, no model, the same tool always gives the same answer.
The evidence, strongest first:

1. **Annotations** the server sent: ``readOnlyHint: true`` says Read; ``destructiveHint: true``
   (without ``readOnlyHint``) says Destructive; ``readOnlyHint: false`` says "not Read". They
   only ever raise what the name and description say: ``readOnlyHint: true`` on a tool whose
   words say it writes is a contradiction, flagged (low confidence, the hint named as
   overruled), and the words' category stands.
2. **The name's verb**, the first known verb among the name's words (``snake_case``,
   ``kebab-case``, ``camelCase`` and ``dotted.names`` split alike): ``delete_*`` Destructive,
   ``run_*`` Execute, ``create_*`` Write, ``get_*`` Read, ``pay_*``, ``swap_*``, ``stake_*``
   Financial. A changing verb on money (``create_refund``, ``cancel_subscription``,
   ``close_position``, or "Transfers ETH ..." in the description) is Financial; on compute
   (``vm_create_image``, ``create_instance``) Execute.
3. **The description's opening verbs** ("Deletes ...", "This tool will create ...", "Lists,
   creates or deletes ..."), used when the name has none, and able to raise the name's
   category (never lower it): a tool is as risky as the riskiest action it admits, so a
   destructive verb anywhere in the description raises it too, and phrases ("refunds money",
   "swaps USDC for ETH", "cannot be undone") as well.
4. **The input schema**: an amount with a currency is Financial; a ``command``, ``script`` or
   ``manifest`` field (or a ``code`` field described as run) is Execute; the values of an
   action field (``method: [create, update, delete]``) raise it to their riskiest verb.

A Read whose name or description's opening says it returns secrets or credentials (passwords,
API keys, tokens of access, private keys, environment variables) is a *sensitive read*: risk
``high``, and the starter policy asks a person's approval for it.

Conflicts go to the riskier category: calling a destructive or financial tool Read is the worst
mistake. With no evidence at all a tool is Execute (unknown effects) with low confidence.

    >>> c = classify({"name": "delete_repo", "description": "", "inputSchema": {}})
    >>> c.category, c.risk, c.reason
    ('Destructive', 'critical', 'verb "delete" in the name')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from toolgate.scanner.categories import (
    DESTRUCTIVE,
    EXECUTE,
    FINANCIAL,
    RANK,
    READ,
    RISK,
    SENSITIVE_READ_RISK,
    WRITE,
    Category,
    Confidence,
    Risk,
)
from toolgate.scanner.evidence import (
    Evidence,
    annotation,
    description_verb,
    destructive_in_description,
    evidence_from_schema,
    name_verdict,
    qualify,
    schema_actions,
)
from toolgate.scanner.vocabulary import (
    DESCRIPTION_PHRASES,
    MONEY_WORDS,
    READ_NOUNS,
    name_words,
    opening_sentence,
    secret_words,
)


@dataclass(frozen=True)
class Classification:
    """What a tool is: its category and risk, why (one line), how sure, and the evidence.
    ``sensitive``: a Read whose answer holds secrets or credentials (risk ``high``)."""

    name: str
    category: Category
    risk: Risk
    reason: str
    confidence: Confidence
    evidence: tuple[Evidence, ...]
    sensitive: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "risk": self.risk,
            "sensitive": self.sensitive,
            "confidence": self.confidence,
            "reason": self.reason,
            "evidence": [e.to_dict() for e in self.evidence],
        }


def classify(tool: Mapping[str, Any]) -> Classification:
    """Classify one tool, a ``tools/list`` entry (``name``, ``description``, ``inputSchema``,
    ``annotations``; all but the name may be missing)."""
    name = str(tool.get("name", ""))
    description = tool.get("description")
    description = description if isinstance(description, str) else ""
    schema = tool.get("inputSchema")
    schema = schema if isinstance(schema, Mapping) else {}
    annotations = tool.get("annotations")
    annotations = annotations if isinstance(annotations, Mapping) else {}

    evidence: list[Evidence] = []
    words = name_words(name)

    # The name, then the description: each a category and the evidence for it.
    from_name: Category | None = None
    verdict = name_verdict(words)
    if verdict is not None:
        from_name, verbs = verdict
        said = " or ".join(f'"{v}"' for v in verbs)
        evidence.append(Evidence("name", from_name, f"verb {said} in the name"))
        qualified, why = qualify(from_name, words)
        where = "in the name"
        if why is None and qualified in (WRITE, EXECUTE):
            # The description may say what the name's verb acts on: "transfer ... ETH".
            opening = re.findall(r"[a-z]+", opening_sentence(description).lower())[:12]
            if money := set(opening) & MONEY_WORDS:
                qualified, why = FINANCIAL, f'on money ("{sorted(money)[0]}")'
                where = "in the name and description"
        if why is not None:
            from_name = qualified
            evidence.append(Evidence("name", qualified, f"verb {said} {why} {where}"))
    elif nouns := [w for w in words if w in READ_NOUNS]:
        from_name = READ
        evidence.append(Evidence("name", READ, f'"{nouns[0]}" in the name names data'))

    from_description: Category | None = None
    found = description_verb(description)
    if found is not None:
        verb, from_description, description_words = found
        evidence.append(Evidence("description", from_description, f'description says "{verb}"'))
        qualified, why = qualify(from_description, description_words[:12])
        if why is not None and from_name is None:
            from_description = qualified
            evidence.append(Evidence("description", qualified, f'description: "{verb}" {why}'))
    lowered = description.lower()
    phrase_hits = [(c, t) for pattern, c, t in DESCRIPTION_PHRASES if pattern.search(lowered)]
    # The riskiest action the tool admits decides: a destructive verb anywhere in the
    # description ("..., and deleting run logs"), or in the values of an action field.
    if (destructive_word := destructive_in_description(description)) is not None:
        phrase_hits.append((DESTRUCTIVE, f'admits "{destructive_word}"'))
    for c, text in phrase_hits:
        evidence.append(Evidence("description", c, f"description {text}"))
    action = schema_actions(schema)
    if action is not None:
        field_name, verb, c = action
        evidence.append(Evidence("schema", c, f'field "{field_name}" admits "{verb}"'))
        phrase_hits.append((c, ""))

    schema_evidence = evidence_from_schema(schema)
    evidence.extend(schema_evidence)

    read_only = annotation(annotations, "readOnlyHint")
    destructive = annotation(annotations, "destructiveHint")
    if read_only is True:
        evidence.append(Evidence("annotation", READ, "readOnlyHint: true"))
    elif destructive is True:
        evidence.append(Evidence("annotation", DESTRUCTIVE, "destructiveHint: true"))
        if from_name is not None and from_name != READ:
            evidence.append(Evidence("annotation", WRITE, "destructiveHint: true (may overwrite)"))
    elif read_only is False:
        evidence.append(Evidence("annotation", WRITE, "readOnlyHint: false"))

    # What the words say: the name's verb, raised (never lowered) by the description.
    category: Category | None = from_name
    conflict = False
    if from_description is not None:
        if category is None:
            category = from_description
        # A description may raise a Write name to Execute ("write_query: Execute an INSERT"),
        # but "read_query: Execute a SELECT" stays a read.
        elif RANK[from_description] > RANK[category] and (
            from_description in (DESTRUCTIVE, FINANCIAL) or category == WRITE
        ):
            category, conflict = from_description, True
    for c, _ in phrase_hits:
        if category is None or RANK[c] > RANK[category]:
            category = c
    for e in schema_evidence:
        # An amount with a currency is money even on a read; a field to run is Execute.
        if category is None or RANK[e.category] > RANK[category]:
            category = e.category
            conflict = conflict or from_name is not None

    # The annotations: the server's own claim, which may raise the category the words give
    # and never lower it (a tool that sends text out is no Read for saying readOnlyHint); it
    # decides alone only where the words say nothing.
    if read_only is True:
        if category is None:
            category = READ
        elif category != READ:
            conflict = True
    elif destructive is True:
        # MCP's destructiveHint means "may do more than add": an update or an overwrite is
        # destructive to the spec. With a changing verb in the name that is just what the verb
        # says (Write); with a reading verb, or none, the hint wins.
        if category is None or category == READ:
            conflict = category == READ
            category = DESTRUCTIVE
    elif read_only is False and (category is None or category == READ):
        conflict = category == READ
        category = WRITE

    if category is None:
        category = EXECUTE
        evidence.append(
            Evidence("default", EXECUTE, "no known verb, annotation or field: effects unknown")
        )

    # Reading secrets is a read like no other: its answer is a credential.
    secret = secret_words(name, description) if category == READ else None
    if secret is not None:
        evidence.append(Evidence("description", READ, f'reads secrets ("{secret}")'))

    confidence = _confidence(category, evidence, conflict, read_only, destructive)
    return Classification(
        name=name,
        category=category,
        risk=SENSITIVE_READ_RISK if secret is not None else RISK[category],
        reason=_reason(category, evidence, conflict),
        confidence=confidence,
        evidence=tuple(evidence),
        sensitive=secret is not None,
    )


def _confidence(
    category: Category,
    evidence: list[Evidence],
    conflict: bool,
    read_only: bool | None,
    destructive: bool | None,
) -> Confidence:
    if conflict or any(e.source == "default" for e in evidence):
        return "low"
    sources = {e.source for e in evidence if e.category == category}
    annotated = read_only is not None or destructive is not None
    if "name" in sources and (not annotated or "annotation" in sources):
        return "high" if annotated or len(sources) > 1 else "medium"
    if "annotation" in sources and len(sources) > 1:
        return "high"
    if sources:
        return "medium"
    return "low"


def _reason(category: Category, evidence: list[Evidence], conflict: bool) -> str:
    """One line: the evidence for the category, then (on a conflict) what it overruled."""
    support = [e.text for e in evidence if e.category == category]
    against = [e.text for e in evidence if e.category != category and e.source != "default"]
    # Evidence that led here through a qualifier ("create" on "refund") is listed as support.
    if not support:
        support = [e.text for e in evidence]
    text = "; ".join(dict.fromkeys(support))
    if conflict and against:
        text += "; riskier than " + "; ".join(dict.fromkeys(against))
    return text


def classify_all(tools: Iterable[Mapping[str, Any]]) -> list[Classification]:
    """:func:`classify` for each tool, in order."""
    return [classify(t) for t in tools]
