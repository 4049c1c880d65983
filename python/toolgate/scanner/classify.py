"""Classify an MCP tool's risk from its definition: Read, Write, Execute, Destructive or Financial.

Pure and deterministic: no network, no model, the same tool always gives the same answer.
The evidence, strongest first:

1. **Annotations** the server sent: ``readOnlyHint: true`` says Read; ``destructiveHint: true``
   (without ``readOnlyHint``) says Destructive; ``readOnlyHint: false`` says "not Read".
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
from typing import Any, Literal

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
_RANK = {c: i for i, c in enumerate(CATEGORIES)}
#: The risk of a Read whose answer holds secrets or credentials.
SENSITIVE_READ_RISK: Risk = "high"


def riskier(a: Category, b: Category) -> Category:
    """The riskier of two categories (Financial > Destructive > Execute > Write > Read)."""
    return a if _RANK[a] >= _RANK[b] else b


# --- the vocabulary ------------------------------------------------------------------------------

_VERBS: dict[Category, str] = {
    READ: """get list read search find fetch retrieve query lookup show view describe explain
        inspect check count browse echo ping diff compare calculate compute convert estimate
        preview analyze analyse summarize summarise validate verify export download geocode
        screenshot hover return aggregate gather watch translate resolve lookup""",
    WRITE: """create add update set put post write edit modify patch insert upsert append push
        commit merge rename move copy upload save store send publish comment reply react assign
        label tag fork star register import change configure init initialize checkout stage
        unstage switch replace attach invite approve reject close reopen lock unlock fill type
        select enable disable toggle mark archive restore submit generate record track apply
        accept finalize cancel forward schedule book subscribe unsubscribe transfer place resend
        supply wrap unwrap mint reorder""",
    EXECUTE: """run execute exec eval evaluate invoke trigger launch spawn deploy build install
        upgrade restart reboot start stop call dispatch provision compile scale rollout click
        navigate press initiate""",
    DESTRUCTIVE: """delete remove rm destroy drop purge erase wipe truncate terminate kill
        uninstall unlink discard prune clear clean cleanup flush reset revoke expunge shred
        nuke deprovision""",
    FINANCIAL: """pay refund charge purchase buy sell trade withdraw deposit payout bill donate
        swap bridge stake unstake restake borrow repay lend redeem exercise""",
}
VERBS: dict[str, Category] = {
    word: category for category, words in _VERBS.items() for word in words.split()
}


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


#: Money words: a verb that changes something named so is Financial.
FINANCIAL_NOUNS = _set(
    """payment payments payout payouts refund refunds charge charges invoice invoices order
    orders subscription subscriptions fund funds money transaction transactions transfer
    transfers wallet wallets balance balances settlement settlements collateral loan loans
    position positions crypto cryptocurrency stablecoin stablecoins eth weth sol btc usdc usdt
    dai nft nfts"""
)
#: Words that mean money wherever they appear (unlike "order" or "subscription"): a changing
#: verb in the name acts on money if the description's opening says one of them.
MONEY_WORDS = _set(
    """money funds collateral loan loans crypto cryptocurrency stablecoin stablecoins eth weth
    sol btc usdc usdt dai nft nfts"""
)
#: Verbs that are verbs only with their object in the name: "place" an order, not
#: "maps_place_details".
VERB_OBJECTS = {"place": _set("order orders bet bets trade trades")}
#: Compute words: a verb that creates or changes something named so starts or changes running
#: infrastructure (PolicyLayer's example ``vm_create_image`` is Execute, ``create-ami`` Write).
COMPUTE_NOUNS = _set(
    """vm vms instance instances container containers pod pods cluster clusters job jobs
    pipeline pipelines workflow workflows machine machines deployment deployments"""
)
#: Names that describe data rather than an action: with no verb, they suggest Read.
READ_NOUNS = _set(
    """status log logs diff stats statistics info information details detail schema indexes
    size metadata health version versions history usage summary tree profile insights
    documentation docs help"""
)
#: Two words that are one noun, whose first word would otherwise read as a verb.
COMPOUND_NOUNS = frozenset({("pull", "request"), ("merge", "request"), ("pull", "requests")})
#: REST-generated names put the HTTP method first (``API-post-search``): the verb after it wins.
HTTP_METHODS = frozenset({"post", "put", "patch"})
CONJUNCTIONS = frozenset({"or", "and", "then"})

#: Schema fields that carry something to run.
EXECUTE_FIELDS = _set("command commands cmd script scripts shell program javascript bash manifest")
#: Schema fields that carry something to run when their description says so.
MAYBE_EXECUTE_FIELDS = _set("code expression source js python")
_RUN_WORDS = re.compile(r"\b(execut|run|evaluat|eval\b)", re.IGNORECASE)
_AMOUNT_FIELD = re.compile(r"(^|_)(amount|price|total|cost|fee)(_|$)")
_CURRENCY_FIELD = re.compile(r"(^|_)currency(_|$)")

_DESCRIPTION_PHRASES: list[tuple[re.Pattern[str], Category, str]] = [
    (
        re.compile(
            r"\b(refunds?|transfers?|moves?|sends?|withdraws?|pays?)\s+(the\s+)?(money|funds)\b"
        ),
        FINANCIAL,
        "moves money",
    ),
    (re.compile(r"\bcharges?\s+(the\s+)?(customer|card|payer)"), FINANCIAL, "charges a customer"),
    (
        re.compile(
            r"\b(buy|buys|buying|sell|sells|selling|swap|swaps|swapping|bridge|bridges|bridging"
            r"|stake|stakes|staking|unstake|unstakes|unstaking|borrow|borrows|borrowing|repay"
            r"|repays|repaying|lend|lends|lending|withdraw|withdraws|withdrawing|deposit|deposits"
            r"|depositing|transfer|transfers|transferring|send|sends|sending)\s+(\S+\s+){0,3}?"
            r"(tokens?|coins?|crypto\w*|stablecoins?|eth|weth|sol|btc|usdc|usdt|dai|nfts?|funds"
            r"|collateral|shares|stocks?)\b"
        ),
        FINANCIAL,
        "moves money or tokens",
    ),
    (
        re.compile(r"\b(place|places|placing|submit|submits|submitting)\s+(\S+\s+){0,3}?orders?\b"),
        FINANCIAL,
        "places an order",
    ),
    (
        re.compile(
            r"\b(complete|completes|completing|make|makes|making|process|processes)\s+"
            r"(the\s+|a\s+)?payments?\b"
        ),
        FINANCIAL,
        "completes a payment",
    ),
    (
        re.compile(r"\b(permanently|irreversibl\w*|cannot be undone|can't be undone)"),
        DESTRUCTIVE,
        "says it cannot be undone",
    ),
]

#: What a secret or credential is called: a Read that returns one is a sensitive read.
_SECRETS = re.compile(
    r"(?<![\w.])(secrets?|credentials?|passwords?|passphrases?|passwd|api[ _-]?keys?"
    r"|access[ _-]?keys?|private[ _-]?keys?|secret[ _-]?keys?|signing[ _-]?keys?|ssh[ _-]?keys?"
    r"|(?:access|auth|bearer|refresh|api|session|oauth)[ _-]?tokens?"
    r"|env(?:ironment)?[ _-]?var(?:iable)?s?|\.env|dotenv|keychain|keystore|kubeconfig)(?!\w)"
)


def _secret_words(name: str, description: str) -> str | None:
    """What in the name or the description's opening (what the tool does, not how: "with the
    current credentials") says the tool's answer holds a secret."""
    text = " ".join(name_words(name)) + " " + _opening_sentence(description).lower()
    m = _SECRETS.search(text)
    return m.group(1) if m else None


#: Words a description may open with before its verb ("This tool will create ...").
DESCRIPTION_FILLER = _set(
    """this tool will can is are used use to a an the it lets allows helps you function
    method endpoint that which simply please we"""
)


# --- words ---------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def name_words(name: str) -> list[str]:
    """The lower-case words of a tool name, however it is written: ``create_pull_request``,
    ``create-pull-request``, ``createPullRequest``, ``github.create.pull.request`` all give
    ``["create", "pull", "request"]``. Digits are words of their own (``s3`` → ``s``, ``3``)."""
    words: list[str] = []
    for part in re.split(r"[^A-Za-z0-9]+", name):
        words.extend(w.lower() for w in _WORD.findall(part))
    return words


def _verb(word: str, *, inflected: bool) -> tuple[str, Category] | None:
    """The verb ``word`` is (``deletes`` → ``delete`` with ``inflected``), and its category."""
    if word in VERBS:
        return word, VERBS[word]
    if inflected:
        stems = []
        if word.endswith("ies"):
            stems.append(word[:-3] + "y")
        if word.endswith("es"):
            stems.append(word[:-2])
        if word.endswith("s"):
            stems.append(word[:-1])
        if word.endswith("ing") and len(word) > 5:
            # deleting → delete, running → run, listing → list
            base = word[:-3]
            stems += [base, base + "e"]
            if len(base) > 2 and base[-1] == base[-2]:
                stems.append(base[:-1])
        for stem in stems:
            if stem in VERBS:
                return stem, VERBS[stem]
    return None


# --- evidence ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """One observation about a tool: where it was seen, what it suggests, in words."""

    source: Literal["annotation", "name", "description", "schema", "default"]
    category: Category
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "category": self.category, "text": self.text}


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


def _name_verdict(words: list[str]) -> tuple[Category, list[str]] | None:
    """The category of the name's main verb (and of any verb joined to it by and/or), with the
    verbs found; money or compute nouns among the words qualify a changing verb."""
    i = 0
    while i < len(words):
        if (words[i], words[i + 1] if i + 1 < len(words) else "") in COMPOUND_NOUNS:
            i += 2
            continue
        found = _verb(words[i], inflected=False)
        if found is None or (found[0] in VERB_OBJECTS and not VERB_OBJECTS[found[0]] & set(words)):
            i += 1
            continue
        verbs = [found]
        j = i + 1
        if found[0] in HTTP_METHODS and j < len(words):
            after = _verb(words[j], inflected=False)
            if after is not None:
                verbs = [after]
                j += 1
        while j + 1 < len(words) and words[j] in CONJUNCTIONS:
            joined = _verb(words[j + 1], inflected=False)
            if joined is None:
                break
            verbs.append(joined)
            j += 2
        category: Category = READ
        for _, c in verbs:
            category = riskier(category, c)
        return category, [v for v, _ in verbs]
    return None


def _qualified(category: Category, words: Iterable[str]) -> tuple[Category, str | None]:
    """A changing verb on money is Financial; a Write verb on compute is Execute."""
    words = set(words)
    if category in (WRITE, EXECUTE, DESTRUCTIVE) and (money := words & FINANCIAL_NOUNS):
        return FINANCIAL, f'on money ("{sorted(money)[0]}")'
    if category == WRITE and (compute := words & COMPUTE_NOUNS):
        return EXECUTE, f'on compute ("{sorted(compute)[0]}")'
    return category, None


def _opening_sentence(description: str) -> str:
    text = description.strip()
    first_line = text.split("\n", 1)[0]
    if "|" in first_line:  # "Service | What it does"
        text = first_line.rsplit("|", 1)[1]
    return re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]


#: Beside these, "remove" takes something out of a set or a field ("add or remove a label",
#: "set or remove the type"): a Write, not a deletion.
_MEMBERSHIP_VERBS = frozenset({"add", "set", "assign"})
#: What separates the verbs of a list: "list, create, rename or delete", "add/update/delete".
_LIST_SEPARATORS = frozenset({",", "/", "&", "or", "and"})


def _description_verb(description: str) -> tuple[str, Category, list[str]] | None:
    """The verbs a description opens with, and the riskiest of them: "Deletes a file", "This
    tool will create a customer", "Notion | Retrieve a user", "Lists, creates, renames or deletes
    branches" (Destructive: the riskiest action it admits). Only the opening counts: a verb
    later in the sentence is as often a noun ("with progress updates")."""
    tokens = re.findall(r"[a-z]+|[,/&]", _opening_sentence(description).lower())
    words = [t for t in tokens if t.isalpha()]
    for i, token in enumerate(tokens):
        if token in DESCRIPTION_FILLER or not token.isalpha():
            continue
        found = _verb(token, inflected=True)
        if found is None:
            return None
        verbs = [found]
        j = i + 1
        while j < len(tokens):
            k = j
            while k < len(tokens) and tokens[k] in _LIST_SEPARATORS:
                k += 1
            following = _verb(tokens[k], inflected=True) if k > j and k < len(tokens) else None
            if following is None:
                break
            verbs.append(following)
            j = k + 1
        if any(v == "remove" for v, _ in verbs) and {v for v, _ in verbs} & _MEMBERSHIP_VERBS:
            verbs = [(v, WRITE if v == "remove" else c) for v, c in verbs]
        verb, category = verbs[0]
        for v, c in verbs[1:]:
            if _RANK[c] > _RANK[category]:
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


def _destructive_in_description(description: str) -> str | None:
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


def _schema_actions(schema: Mapping[str, Any]) -> tuple[str, str, Category] | None:
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
            found = _name_verdict(name_words(value))
            if found is not None:
                verbs.update({v: VERBS[v] for v in found[1]})
        if "remove" in verbs and verbs.keys() & _MEMBERSHIP_VERBS:
            verbs["remove"] = WRITE
        for verb, category in verbs.items():
            if best is None or _RANK[category] > _RANK[best[2]]:
                best = (str(key), verb, category)
    return best


def _schema_evidence(schema: Mapping[str, Any]) -> list[Evidence]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return []
    names = {str(k): v for k, v in properties.items()}
    lowered = {k.lower(): v for k, v in names.items()}
    out: list[Evidence] = []
    amounts = sorted(k for k in lowered if _AMOUNT_FIELD.search(k))
    currencies = sorted(k for k in lowered if _CURRENCY_FIELD.search(k))
    if amounts and currencies:
        out.append(Evidence("schema", FINANCIAL, f'fields "{amounts[0]}" and "{currencies[0]}"'))
    for key, spec in sorted(lowered.items()):
        base = re.sub(r"[^a-z]", "", key)
        described = isinstance(spec, Mapping) and isinstance(spec.get("description"), str)
        if base in EXECUTE_FIELDS or (
            base in MAYBE_EXECUTE_FIELDS and described and _RUN_WORDS.search(spec["description"])
        ):
            out.append(Evidence("schema", EXECUTE, f'field "{key}"'))
            break
    return out


def _annotation(annotations: Mapping[str, Any], key: str) -> bool | None:
    value = annotations.get(key)
    return value if isinstance(value, bool) else None


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
    verdict = _name_verdict(words)
    if verdict is not None:
        from_name, verbs = verdict
        said = " or ".join(f'"{v}"' for v in verbs)
        evidence.append(Evidence("name", from_name, f"verb {said} in the name"))
        qualified, why = _qualified(from_name, words)
        where = "in the name"
        if why is None and qualified in (WRITE, EXECUTE):
            # The description may say what the name's verb acts on: "transfer ... ETH".
            opening = re.findall(r"[a-z]+", _opening_sentence(description).lower())[:12]
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
    found = _description_verb(description)
    if found is not None:
        verb, from_description, description_words = found
        evidence.append(Evidence("description", from_description, f'description says "{verb}"'))
        qualified, why = _qualified(from_description, description_words[:12])
        if why is not None and from_name is None:
            from_description = qualified
            evidence.append(Evidence("description", qualified, f'description: "{verb}" {why}'))
    lowered = description.lower()
    phrase_hits = [(c, t) for pattern, c, t in _DESCRIPTION_PHRASES if pattern.search(lowered)]
    # The riskiest action the tool admits decides: a destructive verb anywhere in the
    # description ("..., and deleting run logs"), or in the values of an action field.
    if (destructive_word := _destructive_in_description(description)) is not None:
        phrase_hits.append((DESTRUCTIVE, f'admits "{destructive_word}"'))
    for c, text in phrase_hits:
        evidence.append(Evidence("description", c, f"description {text}"))
    action = _schema_actions(schema)
    if action is not None:
        field_name, verb, c = action
        evidence.append(Evidence("schema", c, f'field "{field_name}" admits "{verb}"'))
        phrase_hits.append((c, ""))

    schema_evidence = _schema_evidence(schema)
    evidence.extend(schema_evidence)

    read_only = _annotation(annotations, "readOnlyHint")
    destructive = _annotation(annotations, "destructiveHint")
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
        elif _RANK[from_description] > _RANK[category] and (
            from_description in (DESTRUCTIVE, FINANCIAL) or category == WRITE
        ):
            category, conflict = from_description, True
    for c, _ in phrase_hits:
        if category is None or _RANK[c] > _RANK[category]:
            category = c
    for e in schema_evidence:
        # An amount with a currency is money even on a read; a field to run is Execute.
        if category is None or _RANK[e.category] > _RANK[category]:
            category = e.category
            conflict = conflict or from_name is not None

    # The annotations: the server's own claim, overruled only towards more risk.
    if read_only is True:
        if category is None or category in (READ, WRITE):
            category = READ
        else:
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
    secret = _secret_words(name, description) if category == READ else None
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
