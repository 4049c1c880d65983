"""What each part of a tool says of its category: the name's verb (qualified by its nouns),
the description's opening verbs and destructive words, the input schema's fields and action
values, and the annotations the server sent."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from toolgate.scanner.categories import (
    DESTRUCTIVE,
    EXECUTE,
    FINANCIAL,
    RANK,
    READ,
    WRITE,
    Category,
    riskier,
)
from toolgate.scanner.vocabulary import (
    AMOUNT_FIELD,
    COMPOUND_NOUNS,
    COMPUTE_NOUNS,
    CONJUNCTIONS,
    CURRENCY_FIELD,
    DESCRIPTION_FILLER,
    EXECUTE_FIELDS,
    FINANCIAL_NOUNS,
    HTTP_METHODS,
    MAYBE_EXECUTE_FIELDS,
    RUN_WORDS,
    VERB_OBJECTS,
    VERBS,
    name_words,
    opening_sentence,
    verb_of,
)


@dataclass(frozen=True)
class Evidence:
    """One observation about a tool: where it was seen, what it suggests, in words."""

    source: Literal["annotation", "name", "description", "schema", "default"]
    category: Category
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "category": self.category, "text": self.text}


def name_verdict(words: list[str]) -> tuple[Category, list[str]] | None:
    """The category of the name's main verb (and of any verb joined to it by and/or), with the
    verbs found; money or compute nouns among the words qualify a changing verb."""
    i = 0
    while i < len(words):
        if (words[i], words[i + 1] if i + 1 < len(words) else "") in COMPOUND_NOUNS:
            i += 2
            continue
        found = verb_of(words[i], inflected=False)
        if found is None or (found[0] in VERB_OBJECTS and not VERB_OBJECTS[found[0]] & set(words)):
            i += 1
            continue
        verbs = [found]
        j = i + 1
        if found[0] in HTTP_METHODS and j < len(words):
            after = verb_of(words[j], inflected=False)
            if after is not None:
                verbs = [after]
                j += 1
        while j + 1 < len(words) and words[j] in CONJUNCTIONS:
            joined = verb_of(words[j + 1], inflected=False)
            if joined is None:
                break
            verbs.append(joined)
            j += 2
        category: Category = READ
        for _, c in verbs:
            category = riskier(category, c)
        return category, [v for v, _ in verbs]
    return None


def qualify(category: Category, words: Iterable[str]) -> tuple[Category, str | None]:
    """A changing verb on money is Financial; a Write verb on compute is Execute."""
    words = set(words)
    if category in (WRITE, EXECUTE, DESTRUCTIVE) and (money := words & FINANCIAL_NOUNS):
        return FINANCIAL, f'on money ("{sorted(money)[0]}")'
    if category == WRITE and (compute := words & COMPUTE_NOUNS):
        return EXECUTE, f'on compute ("{sorted(compute)[0]}")'
    return category, None


#: Beside these, "remove" takes something out of a set or a field ("add or remove a label",
#: "set or remove the type"): a Write, not a deletion.
_MEMBERSHIP_VERBS = frozenset({"add", "set", "assign"})
#: What separates the verbs of a list: "list, create, rename or delete", "add/update/delete".
_LIST_SEPARATORS = frozenset({",", "/", "&", "or", "and"})


def description_verb(description: str) -> tuple[str, Category, list[str]] | None:
    """The verbs a description opens with, and the riskiest of them: "Deletes a file", "This
    tool will create a customer", "Notion | Retrieve a user", "Lists, creates, renames or deletes
    branches" (Destructive: the riskiest action it admits). Only the opening counts: a verb
    later in the sentence is as often a noun ("with progress updates")."""
    tokens = re.findall(r"[a-z]+|[,/&]", opening_sentence(description).lower())
    words = [t for t in tokens if t.isalpha()]
    for i, token in enumerate(tokens):
        if token in DESCRIPTION_FILLER or not token.isalpha():
            continue
        found = verb_of(token, inflected=True)
        if found is None:
            return None
        verbs = [found]
        j = i + 1
        while j < len(tokens):
            k = j
            while k < len(tokens) and tokens[k] in _LIST_SEPARATORS:
                k += 1
            following = verb_of(tokens[k], inflected=True) if k > j and k < len(tokens) else None
            if following is None:
                break
            verbs.append(following)
            j = k + 1
        if any(v == "remove" for v, _ in verbs) and {v for v, _ in verbs} & _MEMBERSHIP_VERBS:
            verbs = [(v, WRITE if v == "remove" else c) for v, c in verbs]
        verb, category = verbs[0]
        for v, c in verbs[1:]:
            if RANK[c] > RANK[category]:
                verb, category = v, c
        return verb, category, words
    return None


#: Destructive verbs as a description may say them anywhere: "..., and deleting run logs".
_DESTRUCTIVE_WORDS = re.compile(
    r"\b(delete|deletes|deleting|destroy|destroys|destroying|drop|drops|dropping|purge|purges"
    r"|purging|erase|erases|erasing|wipe|wipes|wiping|truncate|truncates|truncating)\b"
)
_NEGATIONS = frozenset({"not", "never", "no", "without", "cannot", "t", "nor"})
#: Schema fields whose values name what the tool does (`method: delete_item`).
ACTION_FIELDS = frozenset({"method", "operation", "action", "op", "mode"})


def destructive_in_description(description: str) -> str | None:
    """A destructive verb the description admits anywhere, unless negated ("does not delete"),
    quoted (another tool's name) or in capitals (``DELETE``: a statement or HTTP method the tool
    passes on, which makes it Execute, not a deletion of its own)."""
    text = re.sub(r"`[^`]*`|'[^']*'|\"[^\"]*\"", " ", description)
    for m in _DESTRUCTIVE_WORDS.finditer(text.lower()):
        if text[m.start() : m.end()].isupper():
            continue
        before = re.findall(r"[a-z]+", text[max(0, m.start() - 40) : m.start()].lower())[-3:]
        if not _NEGATIONS.intersection(before):
            return m.group(1)
    return None


def schema_actions(schema: Mapping[str, Any]) -> tuple[str, str, Category] | None:
    """The riskiest verb among the values of an action field's enum (``method: [create, update,
    delete]``), with the field; removing beside adding is a membership edit (Write)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return None
    best: tuple[str, str, Category] | None = None
    for key, spec in properties.items():
        if str(key).lower() not in ACTION_FIELDS or not isinstance(spec, Mapping):
            continue
        values = [v for v in spec.get("enum") or [] if isinstance(v, str)]
        # Each value's own verb comes first (`get_workflow_run`: "get", not "run").
        verbs = {}
        for value in values:
            found = name_verdict(name_words(value))
            if found is not None:
                verbs.update({v: VERBS[v] for v in found[1]})
        if "remove" in verbs and verbs.keys() & _MEMBERSHIP_VERBS:
            verbs["remove"] = WRITE
        for verb, category in verbs.items():
            if best is None or RANK[category] > RANK[best[2]]:
                best = (str(key), verb, category)
    return best


def evidence_from_schema(schema: Mapping[str, Any]) -> list[Evidence]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return []
    names = {str(k): v for k, v in properties.items()}
    lowered = {k.lower(): v for k, v in names.items()}
    out: list[Evidence] = []
    amounts = sorted(k for k in lowered if AMOUNT_FIELD.search(k))
    currencies = sorted(k for k in lowered if CURRENCY_FIELD.search(k))
    if amounts and currencies:
        out.append(Evidence("schema", FINANCIAL, f'fields "{amounts[0]}" and "{currencies[0]}"'))
    for key, spec in sorted(lowered.items()):
        base = re.sub(r"[^a-z]", "", key)
        described = isinstance(spec, Mapping) and isinstance(spec.get("description"), str)
        if base in EXECUTE_FIELDS or (
            base in MAYBE_EXECUTE_FIELDS and described and RUN_WORDS.search(spec["description"])
        ):
            out.append(Evidence("schema", EXECUTE, f'field "{key}"'))
            break
    return out


def annotation(annotations: Mapping[str, Any], key: str) -> bool | None:
    value = annotations.get(key)
    return value if isinstance(value, bool) else None
