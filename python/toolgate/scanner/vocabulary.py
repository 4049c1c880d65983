"""The words the classifier reads a tool by: verbs by category, nouns of money, compute and
reading, field names that run code or carry an amount, description phrases and words of
secrets; and a name split into its words."""

from __future__ import annotations

import re

from toolgate.scanner.categories import DESTRUCTIVE, EXECUTE, FINANCIAL, READ, WRITE, Category

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
RUN_WORDS = re.compile(r"\b(execut|run|evaluat|eval\b)", re.IGNORECASE)
AMOUNT_FIELD = re.compile(r"(^|_)(amount|price|total|cost|fee)(_|$)")
CURRENCY_FIELD = re.compile(r"(^|_)currency(_|$)")

DESCRIPTION_PHRASES: list[tuple[re.Pattern[str], Category, str]] = [
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


def secret_words(name: str, description: str) -> str | None:
    """What in the name or the description's opening (what the tool does, not how: "with the
    current credentials") says the tool's answer holds a secret."""
    text = " ".join(name_words(name)) + " " + opening_sentence(description).lower()
    m = _SECRETS.search(text)
    return m.group(1) if m else None


#: Words a description may open with before its verb ("This tool will create ...").
DESCRIPTION_FILLER = _set(
    """this tool will can is are used use to a an the it lets allows helps you function
    method endpoint that which simply please we"""
)


_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def name_words(name: str) -> list[str]:
    """The lower-case words of a tool name, however it is written: ``create_pull_request``,
    ``create-pull-request``, ``createPullRequest``, ``github.create.pull.request`` all give
    ``["create", "pull", "request"]``. Digits are words of their own (``s3`` → ``s``, ``3``)."""
    words: list[str] = []
    for part in re.split(r"[^A-Za-z0-9]+", name):
        words.extend(w.lower() for w in _WORD.findall(part))
    return words


def verb_of(word: str, *, inflected: bool) -> tuple[str, Category] | None:
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


def opening_sentence(description: str) -> str:
    """A description's first sentence (after a ``Service |`` prefix): what the tool does."""
    text = description.strip()
    first_line = text.split("\n", 1)[0]
    if "|" in first_line:  # "Service | What it does"
        text = first_line.rsplit("|", 1)[1]
    return re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]
