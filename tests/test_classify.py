"""The risk classifier: PolicyLayer's example tools, its invariants, and its accuracy on the
labelled set of real tools (tests/data/labelled/). ``python tests/test_classify.py`` prints the
accuracy and the confusion matrices as Markdown, for docs/scan.md."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from toolgate.scanner.categories import CATEGORIES, RANK, RISK
from toolgate.scanner.categories import RANK as _RANK
from toolgate.scanner.classify import classify
from toolgate.scanner.vocabulary import (
    COMPUTE_NOUNS,
    DESCRIPTION_FILLER,
    FINANCIAL_NOUNS,
    VERBS,
    name_words,
)

LABELLED = Path(__file__).resolve().parent / "data" / "labelled" / "labelled_tools.json"
#: Tools of servers the rules were not written against (tests/data/unseen/README.md).
UNSEEN = Path(__file__).resolve().parent / "data" / "unseen" / "tools.json"

#: PolicyLayer's example tools as its examples describe them, and the catalogue's category and
#: risk.
POLICYLAYER_EXAMPLE_TOOLS = [
    ({"name": "create-ami", "description": "Create an AMI"}, "Write", "medium"),
    ({"name": "create_access_key", "description": ""}, "Write", "medium"),
    (
        {"name": "vm_create_image", "description": "Create an AMI from a VM instance"},
        "Execute",
        "high",
    ),
    (
        {"name": "update_image_set_metadata", "description": "update_image_set_metadata"},
        "Write",
        "medium",
    ),
    ({"name": "stream_group_create", "description": "Create consumer group"}, "Write", "medium"),
]


@pytest.mark.parametrize(
    ("tool", "category", "risk"), POLICYLAYER_EXAMPLE_TOOLS, ids=lambda x: str(x)[:30]
)
def test_policylayer_example_tools_are_classified_as_its_examples_say(
    tool: dict[str, Any], category: str, risk: str
) -> None:
    c = classify(tool)
    assert (c.category, c.risk) == (category, risk)
    assert c.reason and c.evidence


def test_every_category_has_its_risk() -> None:
    assert RISK == {
        "Read": "low",
        "Write": "medium",
        "Execute": "high",
        "Destructive": "critical",
        "Financial": "critical",
    }


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("create_pull_request", ["create", "pull", "request"]),
        ("create-pull-request", ["create", "pull", "request"]),
        ("createPullRequest", ["create", "pull", "request"]),
        ("github.create.pull.request", ["create", "pull", "request"]),
        ("getHTTPResponse", ["get", "http", "response"]),
        ("list_s3_buckets", ["list", "s", "3", "buckets"]),
        ("listS3Buckets", ["list", "s", "3", "buckets"]),
        ("API-post-search", ["api", "post", "search"]),
    ],
)
def test_name_words(name: str, words: list[str]) -> None:
    if name.startswith("github."):
        words = ["github", *words]
    assert name_words(name) == words


@pytest.mark.parametrize(
    ("tool", "category", "evidence"),
    [
        ({"name": "delete_repo"}, "Destructive", 'verb "delete"'),
        ({"name": "runCommand"}, "Execute", 'verb "run"'),
        ({"name": "github.create_issue"}, "Write", 'verb "create"'),
        ({"name": "list-issues"}, "Read", 'verb "list"'),
        ({"name": "pay_invoice"}, "Financial", 'verb "pay"'),
        ({"name": "create_refund"}, "Financial", "on money"),
        ({"name": "cancel_subscription"}, "Financial", "on money"),
        ({"name": "list_refunds"}, "Read", 'verb "list"'),
        ({"name": "create_instance"}, "Execute", "on compute"),
        ({"name": "get_or_create_user"}, "Write", '"get" or "create"'),
        ({"name": "get_pull_request"}, "Read", 'verb "get"'),
        ({"name": "merge_pull_request"}, "Write", 'verb "merge"'),
        ({"name": "API-post-search"}, "Read", 'verb "search"'),
        ({"name": "thing", "description": "Deletes the thing."}, "Destructive", '"delete"'),
        ({"name": "thing", "description": "This tool will create a thing."}, "Write", '"create"'),
        ({"name": "thing", "description": "Notion | Retrieve a block"}, "Read", '"retrieve"'),
        ({"name": "git_status"}, "Read", '"status"'),
        (
            {"name": "settle", "inputSchema": {"properties": {"amount": {}, "currency": {}}}},
            "Financial",
            '"amount" and "currency"',
        ),
        (
            {"name": "sandbox", "inputSchema": {"properties": {"command": {"type": "string"}}}},
            "Execute",
            'field "command"',
        ),
        (
            {
                "name": "box",
                "inputSchema": {"properties": {"code": {"description": "Code to run"}}},
            },
            "Execute",
            'field "code"',
        ),
        (
            {
                "name": "country",
                "inputSchema": {"properties": {"code": {"description": "ISO code"}}},
            },
            "Execute",
            "effects unknown",
        ),
        ({"name": "mystery"}, "Execute", "effects unknown"),
        ({"name": "mystery", "annotations": {"readOnlyHint": True}}, "Read", "readOnlyHint"),
        (
            {"name": "mystery", "annotations": {"destructiveHint": True}},
            "Destructive",
            "destructiveHint",
        ),
        ({"name": "mystery", "annotations": {"readOnlyHint": False}}, "Write", "readOnlyHint"),
        ({"name": "get_x", "annotations": {"readOnlyHint": False}}, "Write", "readOnlyHint"),
        ({"name": "update_x", "annotations": {"destructiveHint": True}}, "Write", "may overwrite"),
        (
            {"name": "search_x", "annotations": {"destructiveHint": True}},
            "Destructive",
            "destructiveHint",
        ),
        ({"name": "delete_x", "annotations": {"readOnlyHint": True}}, "Destructive", "riskier"),
        (
            {"name": "accept_claim", "description": "Accepts it. PayPal refunds money to them."},
            "Financial",
            "moves money",
        ),
        ({"name": "write_query", "description": "Execute an INSERT query"}, "Execute", '"execute"'),
        ({"name": "read_query", "description": "Execute a SELECT query"}, "Read", 'verb "read"'),
    ],
)
def test_rules(tool: dict[str, Any], category: str, evidence: str) -> None:
    c = classify(tool)
    assert c.category == category, c
    assert evidence in c.reason, c.reason


# --- the riskiest action admitted, money in trading and crypto, secrets ---------------------------


@pytest.mark.parametrize(
    ("tool", "category", "evidence"),
    [
        (
            {"name": "branches", "description": "Lists, creates, renames or deletes branches."},
            "Destructive",
            'description says "delete"',
        ),
        (
            {"name": "issues", "description": "Get, create, update, delete GitHub issues."},
            "Destructive",
            'description says "delete"',
        ),
        (
            {"name": "labels", "description": "Add/update/delete labels of a repository"},
            "Destructive",
            'description says "delete"',
        ),
        (
            {"name": "run_ops", "description": "Runs, re-runs and cancels runs, and deleting logs"},
            "Destructive",
            'admits "deleting"',
        ),
        (
            {
                "name": "label_write",
                "inputSchema": {"properties": {"method": {"enum": ["create", "update", "delete"]}}},
            },
            "Destructive",
            'field "method" admits "delete"',
        ),
        (
            {
                "name": "workflow_read",
                "inputSchema": {"properties": {"method": {"enum": ["get_workflow_run"]}}},
            },
            "Read",
            'verb "read"',
        ),
        (
            {"name": "deps", "description": "Add or remove an issue dependency."},
            "Write",
            'description says "add"',
        ),
        (
            {"name": "issue_type", "description": "Set or remove the type of an issue."},
            "Write",
            'description says "set"',
        ),
        (
            {"name": "get_x", "description": "Gets x. It does not delete anything."},
            "Read",
            'verb "get"',
        ),
        (
            {"name": "run_sql", "description": "Run an INSERT, UPDATE or DELETE statement."},
            "Execute",
            'verb "run"',
        ),
        ({"name": "place_stock_order"}, "Financial", 'on money ("order")'),
        ({"name": "maps_place_details"}, "Read", '"details" in the name names data'),
        ({"name": "swap_tokens"}, "Financial", 'verb "swap"'),
        ({"name": "bridge_usdc"}, "Financial", 'verb "bridge"'),
        ({"name": "stake"}, "Financial", 'verb "stake"'),
        ({"name": "borrow_asset"}, "Financial", 'verb "borrow"'),
        ({"name": "exercise_option"}, "Financial", 'verb "exercise"'),
        ({"name": "close_position"}, "Financial", 'on money ("position")'),
        ({"name": "create_settlement"}, "Financial", 'on money ("settlement")'),
        (
            {"name": "native_send", "description": "Sends native ETH to an address."},
            "Financial",
            'on money ("eth") in the name and description',
        ),
        (
            {"name": "supply", "description": "Supplies collateral to the lending pool."},
            "Financial",
            'on money ("collateral")',
        ),
        (
            {"name": "execute", "description": "This tool will swap USDC for ETH on a DEX."},
            "Financial",
            "moves money or tokens",
        ),
        (
            {"name": "submit", "description": "Verify and submit the code to complete payment."},
            "Financial",
            "completes a payment",
        ),
        (
            {"name": "initiate_payment", "description": "Initiate a payment"},
            "Financial",
            'verb "initiate" on money',
        ),
        (
            {"name": "toggle_updates", "description": "Toggle updates of a subscription."},
            "Write",
            'verb "toggle"',
        ),
    ],
)
def test_riskiest_action_and_money_rules(
    tool: dict[str, Any], category: str, evidence: str
) -> None:
    c = classify(tool)
    assert c.category == category, c
    assert evidence in c.reason, c.reason


@pytest.mark.parametrize(
    ("tool", "secret"),
    [
        (
            {"name": "get_env", "description": "Returns the environment variables."},
            "environment variables",
        ),
        ({"name": "read_credentials"}, "credentials"),
        ({"name": "list_api_keys"}, "api keys"),
        ({"name": "get_access_token"}, "access token"),
        (
            {"name": "export_private_key", "description": "Get the wallet's private key."},
            "private key",
        ),
        ({"name": "read_secret", "description": "Read a secret from a KV mount."}, "secret"),
        ({"name": "show_password"}, "password"),
        ({"name": "cat_file", "description": "Show the .env file"}, ".env"),
    ],
)
def test_reading_secrets_is_a_sensitive_read(tool: dict[str, Any], secret: str) -> None:
    c = classify(tool)
    assert (c.category, c.sensitive, c.risk) == ("Read", True, "high"), c
    assert f'reads secrets ("{secret}")' in c.reason
    assert c.to_dict()["sensitive"] is True


@pytest.mark.parametrize(
    "tool",
    [
        {"name": "get_balance", "description": "Get the balance of an ERC20 token."},
        {"name": "get_teams", "description": "Get teams. Limited to the current credentials."},
        {"name": "search", "description": "Search issues. E.g. 'login fails after password reset'"},
        {"name": "write_secret", "description": "Writes a secret value."},
        {"name": "delete_api_key"},
    ],
)
def test_what_is_not_a_sensitive_read(tool: dict[str, Any]) -> None:
    c = classify(tool)
    assert not c.sensitive, c
    assert c.risk == RISK[c.category]


# Verbs that are also money or compute nouns ("transfer") qualify themselves; "remove" beside
# "add" or "set" is a Write (tested above).
_LIST_VERBS = sorted(
    v
    for v in VERBS
    if v not in DESCRIPTION_FILLER | FINANCIAL_NOUNS | COMPUTE_NOUNS and v != "remove"
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_LIST_VERBS), min_size=1, max_size=5))
def test_a_list_of_actions_takes_the_riskiest(verbs: list[str]) -> None:
    """A tool that says it does several things is classified by the riskiest of them."""
    text = ", ".join(verbs[:-1]) + " or " + verbs[-1] if len(verbs) > 1 else verbs[0]
    c = classify({"name": "widget", "description": f"{text.capitalize()} the widget."})
    want = max((VERBS[v] for v in verbs), key=_RANK.__getitem__)
    assert c.category == want, (text, c.reason)


def test_conflicts_and_defaults_have_low_confidence() -> None:
    assert classify({"name": "mystery"}).confidence == "low"
    assert classify({"name": "delete_x", "annotations": {"readOnlyHint": True}}).confidence == "low"
    both = {"name": "delete_x", "annotations": {"destructiveHint": True, "readOnlyHint": False}}
    assert classify(both).confidence == "high"


def test_bad_fields_are_ignored_not_fatal() -> None:
    tool = {"name": "get_x", "description": 7, "inputSchema": [], "annotations": "yes"}
    assert classify(tool).category == "Read"


# --- properties ----------------------------------------------------------------------------------

_VOCABULARY = [*sorted(VERBS), "user", "issue", "file", "refund", "vm", "pull", "request", "status"]
word = st.one_of(st.sampled_from(_VOCABULARY), st.from_regex(r"[a-z][a-z0-9]{1,8}", fullmatch=True))
words = st.lists(word, min_size=1, max_size=5)
annotations = st.fixed_dictionaries(
    {},
    optional={
        "readOnlyHint": st.booleans(),
        "destructiveHint": st.booleans(),
        "idempotentHint": st.booleans(),
        "openWorldHint": st.booleans(),
    },
)
properties = st.dictionaries(
    st.sampled_from(["amount", "currency", "command", "code", "path", "query", "unit_amount"]),
    st.fixed_dictionaries({}, optional={"description": st.sampled_from(["Code to run", "x"])}),
    max_size=4,
)
tools = st.builds(
    lambda w, d, a, p: {
        "name": "_".join(w),
        "description": d,
        "annotations": a,
        "inputSchema": {"type": "object", "properties": p},
    },
    words,
    st.one_of(st.text(max_size=60), st.builds(" ".join, words)),
    annotations,
    properties,
)


def _styles(ws: list[str]) -> list[str]:
    camel = ws[0] + "".join(w[:1].upper() + w[1:] for w in ws[1:])
    return ["_".join(ws), "-".join(ws), camel, ".".join(ws)]


@settings(max_examples=300, deadline=None)
@given(tools)
def test_deterministic(tool: dict[str, Any]) -> None:
    first = classify(tool)
    again = classify(copy.deepcopy(tool))
    assert first == again
    assert first.to_dict() == again.to_dict()
    assert first.category in CATEGORIES and first.risk == RISK[first.category]
    assert first.reason and "\n" not in first.reason


@settings(max_examples=300, deadline=None)
@given(tools)
def test_destructive_hint_is_never_read(tool: dict[str, Any]) -> None:
    tool["annotations"] = {**tool["annotations"], "destructiveHint": True}
    tool["annotations"].pop("readOnlyHint", None)
    assert classify(tool).category != "Read"
    tool["annotations"]["readOnlyHint"] = False
    assert classify(tool).category != "Read"


@settings(max_examples=300, deadline=None)
@given(tools, annotations)
def test_annotations_never_lower_what_the_words_say(tool: dict[str, Any], hints: Any) -> None:
    """A server's annotations raise the category its tool's name, description and schema
    give, never lower it; where they say nothing (the default), the annotations decide. A
    readOnlyHint that contradicts the words is flagged: low confidence, named as overruled."""
    words_only = classify({**tool, "annotations": {}})
    annotated = classify({**tool, "annotations": hints})
    said_nothing = any(e.source == "default" for e in words_only.evidence)
    if not said_nothing:
        assert RANK[annotated.category] >= RANK[words_only.category], (words_only, annotated)
    if hints.get("readOnlyHint") is True and not said_nothing and words_only.category != "Read":
        assert annotated.confidence == "low"
        assert "readOnlyHint: true" in annotated.reason


def test_a_tool_that_sends_text_out_is_no_read_for_saying_so() -> None:
    tool = {
        "name": "send_text",
        "description": "Sends any text to an external URL.",
        "annotations": {"readOnlyHint": True},
    }
    c = classify(tool)
    assert (c.category, c.confidence) == ("Write", "low")
    assert "readOnlyHint: true" in c.reason


@settings(max_examples=300, deadline=None)
@given(tools)
def test_read_only_false_is_never_read(tool: dict[str, Any]) -> None:
    tool["annotations"] = {"readOnlyHint": False}
    assert classify(tool).category != "Read"


@settings(max_examples=300, deadline=None)
@given(words, tools)
def test_name_style_does_not_matter(ws: list[str], tool: dict[str, Any]) -> None:
    results = {classify({**tool, "name": name}).category for name in _styles(ws)}
    assert len(results) == 1, (_styles(ws), results)
    assert len({tuple(name_words(name)) for name in _styles(ws)}) == 1


@settings(max_examples=200, deadline=None)
@given(tools)
def test_money_never_reads_as_read(tool: dict[str, Any]) -> None:
    """An amount with a currency is Financial whatever else the tool says."""
    tool["inputSchema"] = {"properties": {"amount": {}, "currency": {}}}
    assert classify(tool).category == "Financial"


# --- the labelled set ----------------------------------------------------------------------------


def labelled() -> list[dict[str, Any]]:
    return json.loads(LABELLED.read_text())["tools"]


def confusion(entries: list[dict[str, Any]], *, annotations: bool = True) -> Counter[Any]:
    """(label, classified) → count."""
    matrix: Counter[Any] = Counter()
    for t in entries:
        tool = t if annotations else {**t, "annotations": {}}
        matrix[(t["label"], classify(tool).category)] += 1
    return matrix


def recall(matrix: Counter[Any], category: str) -> float:
    total = sum(matrix[(category, c)] for c in CATEGORIES)
    return matrix[(category, category)] / total


def accuracy(matrix: Counter[Any]) -> float:
    return sum(matrix[(c, c)] for c in CATEGORIES) / sum(matrix.values())


#: Measured when the classifier was written (docs/scan.md): recall per category on every
#: labelled tool, and overall accuracy. The test fails if a change makes any of them worse.
#: Read fell from 0.96 when annotations stopped lowering what the words say: two read-only
#: tools whose words say otherwise ("trigger-long-running-operation", "disconnect": "Close a
#: ... connection") are now classified by their words, with low confidence.
FLOORS = {
    "Read": 0.955,
    "Write": 0.91,
    "Execute": 0.77,
    "Destructive": 1.0,
    "Financial": 1.0,
}
ACCURACY_FLOOR = 0.94


def test_labelled_set_is_complete() -> None:
    entries = labelled()
    assert len(entries) >= 100
    real = [t for t in entries if not t["source"].startswith("policylayer-example")]
    assert len(real) >= 100
    keys = [(t["source"], t["name"]) for t in entries]
    assert len(keys) == len(set(keys)), "a tool is listed twice"
    for t in entries:
        assert t["label"] in CATEGORIES, f"{t['source']} {t['name']}: label {t['label']!r}"
        assert isinstance(t["why"], str) and t["why"], f"{t['name']}: no justification"
        assert set(t) >= {"source", "name", "description", "inputSchema", "annotations"}
    assert {t["label"] for t in real} == set(CATEGORIES)


def test_accuracy_per_category_does_not_fall() -> None:
    matrix = confusion(labelled())
    got = {c: round(recall(matrix, c), 4) for c in CATEGORIES}
    for category, floor in FLOORS.items():
        assert got[category] >= floor, (category, got)
    assert accuracy(matrix) >= ACCURACY_FLOOR


def test_destructive_and_financial_tools_are_never_read() -> None:
    matrix = confusion(labelled())
    assert matrix[("Destructive", "Read")] == 0
    assert matrix[("Financial", "Read")] == 0


def test_policylayer_example_entries_agree_with_its_catalogue() -> None:
    for t in labelled():
        if t["source"].startswith("policylayer-example"):
            assert classify(t).category == t["label"], t["name"]


# --- the unseen set ------------------------------------------------------------------------------


def unseen() -> list[dict[str, Any]]:
    return json.loads(UNSEEN.read_text())


#: Measured on the unseen set once the rules were tuned on its dev split (docs/scan.md): recall
#: per category and accuracy of each split; the test fails if a change makes any worse.
UNSEEN_FLOORS = {
    "dev": {"Read": 1.0, "Write": 0.86, "Destructive": 1.0, "Financial": 0.8, "accuracy": 0.93},
    "heldout": {
        "Read": 0.93,
        "Write": 0.78,
        "Destructive": 1.0,
        "Financial": 0.81,
        "accuracy": 0.87,
    },
}


def test_unseen_set_is_complete_and_apart() -> None:
    entries = unseen()
    assert len(entries) >= 100
    keys = [(t["server"], t["name"]) for t in entries]
    assert len(keys) == len(set(keys)), "a tool is listed twice"
    for t in entries:
        assert t["label"] in CATEGORIES, t["name"]
        assert isinstance(t["why"], str) and t["why"], t["name"]
        assert t["split"] in ("dev", "heldout"), t["name"]
        assert isinstance(t["sensitive"], bool), t["name"]
        assert not t["sensitive"] or t["label"] == "Read", t["name"]
        assert t["source"].startswith("github.com/"), t["name"]
    # No server of the old set, and every server wholly in one split.
    old_sources = {t["source"].rsplit("@", 1)[0].split("/")[-1] for t in labelled()}
    splits: dict[str, set[str]] = {}
    for t in entries:
        splits.setdefault(t["server"], set()).add(t["split"])
    assert all(len(s) == 1 for s in splits.values()), splits
    assert not set(splits) & old_sources
    assert {t["label"] for t in entries} == set(CATEGORIES)


@pytest.mark.parametrize("split", ["dev", "heldout"])
def test_unseen_accuracy_does_not_fall(split: str) -> None:
    matrix = confusion([t for t in unseen() if t["split"] == split])
    floors = UNSEEN_FLOORS[split]
    for category in CATEGORIES:
        if category in floors:
            assert round(recall(matrix, category), 4) >= floors[category], (category, matrix)
    assert accuracy(matrix) >= floors["accuracy"]
    assert matrix[("Destructive", "Read")] == 0
    assert matrix[("Financial", "Read")] == 0


def sensitive_counts(entries: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(found, flagged wrongly, missed) sensitive reads."""
    found = wrong = missed = 0
    for t in entries:
        flagged = classify(t).sensitive
        found += flagged and t["sensitive"]
        wrong += flagged and not t["sensitive"]
        missed += t["sensitive"] and not flagged
    return found, wrong, missed


# --- the report for docs/scan.md -----------------------------------------------------------------


def _matrix_lines(title: str, m: Counter[Any]) -> list[str]:
    out = [f"**{title}**: accuracy {accuracy(m):.1%}\n"]
    out.append("| label ↓ / classified → | " + " | ".join(CATEGORIES) + " | n | recall |")
    out.append("|---|" + "---:|" * (len(CATEGORIES) + 2))
    for a in CATEGORIES:
        n = sum(m[(a, b)] for b in CATEGORIES)
        cells = " | ".join(str(m[(a, b)]) for b in CATEGORIES)
        out.append(f"| {a} | {cells} | {n} | {recall(m, a) if n else 0:.0%} |")
    out.append("")
    return out


def unseen_report() -> str:
    entries = unseen()
    out = []
    for title, rows in [
        ("dev split", [t for t in entries if t["split"] == "dev"]),
        ("held-out split", [t for t in entries if t["split"] == "heldout"]),
        ("all", entries),
    ]:
        out += _matrix_lines(f"Unseen set, {title} ({len(rows)} tools)", confusion(rows))
        found, wrong, missed = sensitive_counts(rows)
        out.append(f"Sensitive reads: {found} found, {wrong} flagged wrongly, {missed} missed.\n")
    return "\n".join(out)


def report() -> str:
    entries = labelled()
    real = [t for t in entries if not t["source"].startswith("policylayer-example")]
    out = []
    for title, rows, ann in [
        (f"All {len(entries)} labelled tools", entries, True),
        (f"The {len(real)} real tools (without PolicyLayer's five)", real, True),
        (f"All {len(entries)} with their annotations removed", entries, False),
    ]:
        m = confusion(rows, annotations=ann)
        out.append(f"**{title}**: accuracy {accuracy(m):.1%}\n")
        out.append("| label ↓ / classified → | " + " | ".join(CATEGORIES) + " | n | recall |")
        out.append("|---|" + "---:|" * (len(CATEGORIES) + 2))
        for a in CATEGORIES:
            n = sum(m[(a, b)] for b in CATEGORIES)
            cells = " | ".join(str(m[(a, b)]) for b in CATEGORIES)
            out.append(f"| {a} | {cells} | {n} | {recall(m, a):.0%} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(report())
    print(unseen_report())
