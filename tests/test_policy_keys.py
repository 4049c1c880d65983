"""docs/policy-keys.md is the loader's list of keys (their one owner), and the loader accepts
exactly those: each key of each object is accepted where it belongs, and the same object with
a key no table lists is refused, naming the keys expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toolgate import Policy, PolicyError
from toolgate._core import policy_keys
from toolgate.authoring.policy_keys import page

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "policy-keys.md"
KEYS = dict(policy_keys())


def test_the_page_is_made_from_the_loaders_keys():
    current = PAGE.read_text()
    assert current == page(current), "run: python -m toolgate.authoring.policy_keys"


#: A valid document holding each object once, and the JSON pointer of each object in it.
DOCUMENT = {
    "version": "1",
    "hide": {"tools": ["x_*"], "resources": [], "prompts": []},
    "pins": {"file": "pins.json", "mode": "shadow", "unpinned": "allow"},
    "tools": {
        "pay": {
            "action": "require_approval",
            "approval": {"timeout": "5m", "approvers": ["alice"]},
            "limits": [{"counter": "c", "window": "minute", "max": 3, "scope": "grant"}],
            "marks": [{"name": "paid", "scope": "grant", "ttl": "1h"}],
            "require": [{"path": "args.n", "op": "lt", "value": 5}],
            "deny_if": [{"any": [{"path": "args.n", "op": "eq", "value": 4}]}],
        },
        "ask": {
            "action": "require_confirmation",
            "confirmation": {"message": "Sure?", "timeout": "1m", "fallback": "deny"},
            "require": [{"conditions": [{"path": "args.n", "op": "exists"}], "on_deny": "No n."}],
        },
    },
}
WHERE = {
    "Top level (and each `servers` section)": (),
    "Rules": ("tools", "pay"),
    "Limits": ("tools", "pay", "limits", 0),
    "Conditions": ("tools", "pay", "require", 0),
    "Combinators": ("tools", "pay", "deny_if", 0),
    "Condition groups": ("tools", "ask", "require", 0),
    "Approval": ("tools", "pay", "approval"),
    "Confirmation": ("tools", "ask", "confirmation"),
    "Marks": ("tools", "pay", "marks", 0),
    "Pins": ("pins",),
    "Hide": ("hide",),
}


def loaded(doc: dict, tmp_path: Path) -> Policy:
    (tmp_path / "pins.json").write_text('{"version": "1", "tools": {}, "servers": {}}')
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return Policy.from_file(path)


def test_every_object_of_the_page_is_tried():
    assert set(WHERE) == set(KEYS)


@pytest.mark.parametrize("heading", sorted(WHERE))
def test_each_object_takes_no_key_its_table_does_not_list(heading, tmp_path):
    loaded(DOCUMENT, tmp_path)
    doc = json.loads(json.dumps(DOCUMENT))
    node = doc
    for step in WHERE[heading]:
        node = node[step]
    listed = {name for name, _ in KEYS[heading]}
    # Every key the object holds here is one its table lists.
    assert set(node) <= listed, set(node) - listed
    node["not_a_key"] = 1
    with pytest.raises(PolicyError) as refused:
        loaded(doc, tmp_path)
    (error,) = [e for e in refused.value.errors if "not_a_key" in e.message]
    expected = ", ".join(name for name, _ in KEYS[heading])
    # A condition's own message names both kinds it may be.
    if heading not in ("Conditions", "Combinators"):
        assert expected in error.message, error.message
