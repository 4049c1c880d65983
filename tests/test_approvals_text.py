"""Text an agent chose is inert wherever a person reads an approval, whatever the text:
``toolgate approvals list`` and ``watch`` rows, the JSON webhook, and Slack's mrkdwn.
Generated hostile strings (hypothesis); the sidecar's own examples are in
test_approvals_bounds.py.
"""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from toolgate.cli.approvals import _line
from toolgate.sidecar.approvals.admin import approval_message
from toolgate.sidecar.approvals.rows import Row
from toolgate.sidecar.approvals.webhook import payload

#: What a display may act on: controls, format characters, line and paragraph separators.
UNSAFE = ("Cc", "Cf", "Zl", "Zp")

#: Text that tries its hand: line breaks, escapes, bidi overrides, Slack's markup.
hostile = st.lists(
    st.one_of(
        st.characters(exclude_categories=["Cs"]),  # text that was UTF-8
        st.sampled_from(
            ["\n", "\r", "\x1b", "\x9b", "\u202e", "\u2028", "\u200b", "`", "<", ">", "&", "|"]
        ),
        st.sampled_from(["<!channel>", "<https://x.example|approve>", "\x1b[2K", "*b*", "apr_"]),
    ),
    max_size=20,
).map("".join)


def unsafe(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE]


def row(tool: str, server: str, session: str, agent: str, arguments: str) -> Row:
    return Row(
        id="apr_" + "a" * 32,
        key="0" * 32,
        server=server or None,
        tool=tool,
        grant="hmac-sha256:" + "b" * 32,
        session=session or None,
        agent=agent or None,
        arguments=arguments,
        arguments_digest="c" * 64,
        rule="/tools/term*",
        revision="r",
        approvers=[],
        created_ms=0,
        timeout_ms=60_000,
        deadline_ms=60_000,
        stored_state="PENDING",
        decided_by=None,
        decided_ms=None,
        reason=None,
        used_ms=None,
        arguments_cut=False,
        arguments_bytes=len(arguments.encode()),
        owner="d" * 32,
    )


@settings(max_examples=300, deadline=None)
@given(hostile, hostile, hostile, hostile, hostile)
def test_a_list_or_watch_row_is_one_line_with_nothing_a_terminal_acts_on(
    tool, server, session, agent, arguments
):
    line = _line(approval_message(row(tool, server, session, agent, arguments), 0))
    assert line.splitlines() == [line], "one line, whatever the fields"
    assert not unsafe(line)
    assert line.startswith("apr_" + "a" * 32 + "  PENDING")


@settings(max_examples=300, deadline=None)
@given(hostile, hostile, hostile, hostile, hostile)
def test_slack_text_shows_agent_text_only_inside_code_spans_it_cannot_close(
    tool, server, session, agent, arguments
):
    text = json.loads(payload(row(tool, server, session, agent, arguments), 0, "slack", "h:1"))[
        "text"
    ]
    assert "<" not in text and ">" not in text, "no mention, link or command"
    assert not unsafe(text)
    # Outside the code spans, only the template's words: the agent's text is all inside.
    on = [" on "] if server else []
    template = ["Approval needed: ", " wants to call ", *on, " with ", " (", "). ", " or "]
    assert text.split("`")[0::2] == [*template, "; it lapses in 60 s."]


@settings(max_examples=300, deadline=None)
@given(hostile, hostile, hostile, hostile, hostile)
def test_the_json_webhook_carries_agent_text_inert_and_no_key(
    tool, server, session, agent, arguments
):
    sent = json.loads(payload(row(tool, server, session, agent, arguments), 0, "json", "h:1"))
    approval = sent["approval"]
    assert "key" not in approval and "owner" not in approval
    for field in ("tool", "server", "session", "agent", "arguments"):
        assert not unsafe(approval[field] or ""), field


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(hostile, st.lists(hostile, max_size=3), max_size=3))
def test_the_json_webhooks_arguments_are_the_same_json_made_inert(arguments):
    text = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
    sent = json.loads(payload(row("t", "", "", "", text), 0, "json", "h:1"))
    shown = sent["approval"]["arguments"]
    assert not unsafe(shown)
    assert json.loads(shown) == arguments
