"""Type stubs for the Rust extension module."""

import os
from pathlib import Path
from typing import Any, Literal, final

__all__ = [
    "CODES",
    "DECIDER",
    "MAX_FILE_BYTES",
    "MAX_MAX",
    "OPT_LEVEL",
    "RELOAD_INTERVAL",
    "RELOAD_SETTLE",
    "SERVICES",
    "VERDICTS",
    "Approvals",
    "Decision",
    "Engine",
    "Explanation",
    "FileVersion",
    "LimitState",
    "Look",
    "ManualClock",
    "MetricFamily",
    "Policy",
    "PolicyError",
    "PolicyWatch",
    "Reloaded",
    "Sidecar",
    "SidecarSettings",
    "ValidationError",
    "__revision__",
    "__version__",
    "argument_digest",
    "format_seconds",
    "format_window",
    "inert",
    "inert_json",
    "is_mcp_tool_name",
    "load_tokens",
    "policy_keys",
    "read_document",
    "read_maxmemory_policy",
    "read_mcp_request",
    "read_version",
    "tool_digest",
]

__version__: str
#: The git commit the extension was built from; "" when unknown.
__revision__: str
#: cargo's opt-level the extension was compiled at: "3" (release), "1" (scripts/test's build).
OPT_LEVEL: str
#: The gRPC services a health check can name, besides "" (the whole server).
SERVICES: list[str]
#: The decision service's full name (``toolgate.v1.Decider``).
DECIDER: str
#: The largest file read whole (a pins file, a key, a policy).
MAX_FILE_BYTES: int
#: The largest ``max`` a limit may have.
MAX_MAX: float
#: Every verdict and every decision code, as the wire and the decision log name them.
VERDICTS: list[str]
CODES: list[str]

def format_window(ms: int) -> str:
    """A window for people, in its largest whole unit: ``1m``, ``90s``, ``1500ms``."""

def format_seconds(ms: int) -> str:
    """A wait for people, in seconds to a tenth: ``1.5s``."""

def inert(text: str) -> str:
    """``text`` safe to show a person: control, format and line-separator characters written
    ``\\u{HEX}``, backslashes doubled. For everything an agent sent (tool names, arguments,
    session and agent ids) before a terminal, chat or log shows it."""

def is_mcp_tool_name(name: str) -> bool:
    """Whether ``name`` is a tool name MCP allows (1 to 128 of ``A-Z a-z 0-9 _ - .``): the
    rule a policy holds its tool keys to."""

def policy_keys() -> list[tuple[str, list[tuple[str, str]]]]:
    """Every key of the policy language, by object: ``(heading, [(key, meaning)])``, as the
    loader accepts them; docs/policy-keys.md is made of them."""

def inert_json(json: str) -> str:
    """Compact JSON text (as the engine writes it) with every character ``inert`` escapes
    written as a JSON ``\\uXXXX`` escape: the same value, safe to show."""

def argument_digest(key: bytes, arguments: str) -> str:
    """The digest of a call's arguments (JSON text) as the decision log, the approvals store
    and webhooks write it under ``key`` (the state directory's ``grant.key``):
    ``hmac-sha256:`` and 64 hex digits. ValueError if the text is not one JSON value."""

def load_tokens(path: str) -> list[tuple[str, str]]:
    """A bearer tokens file (``--admin-tokens``, ``--authzen-tokens``): ``(name, token)`` per
    token, in the file's order. ValueError naming the file and line for a malformed one."""

def tool_digest(tool: str) -> str:
    """The digest a pin records of one tool definition (JSON text of one tool object of a
    ``tools/list`` answer): ``sha256:`` and 64 hex digits, over its name, title,
    description, input and output schema and annotations as canonical JSON."""

Verdict = Literal["ALLOW", "DENY", "REQUIRE_APPROVAL"]
Code = Literal[
    "ALLOWED",
    "HIDDEN",
    "DEFAULT_DENY",
    "RULE_DENY",
    "CONDITION_FAILED",
    "RATE_LIMITED",
    "APPROVAL_REQUIRED",
    "INVALID_REQUEST",
    "APPROVAL_DENIED",
    "STORE_UNAVAILABLE",
    "TOOL_CHANGED",
    "TOOL_UNPINNED",
    "CONFIRMATION_REQUIRED",
    "CONFIRMATION_DECLINED",
    "CONFIRMATION_EXPIRED",
    "CONFIRMATION_INVALID",
    "CONFIRMATION_UNAVAILABLE",
]

@final
class ValidationError:
    """One validation problem: where it is and what is wrong."""

    @property
    def pointer(self) -> str: ...
    @property
    def line(self) -> int | None: ...
    @property
    def message(self) -> str: ...

class PolicyError(ValueError):
    """A policy failed validation; ``errors`` lists every problem. From
    ``Engine.reload_file``, ``pins_read`` lists each pins file the policy named with the
    SHA-256 (hex) of what was read (None: it could not be)."""

    errors: list[ValidationError]
    pins_read: list[tuple[Path, str | None]]

@final
class MetricFamily:
    """One metric family as the core describes it: a histogram's ``buckets`` are its
    cumulative counts at each upper bound (seconds), its count and its sum; other kinds have
    ``samples``, each label values and value."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> Literal["counter", "gauge", "histogram"]: ...
    @property
    def help(self) -> str: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def samples(self) -> list[tuple[list[str], float]]: ...
    @property
    def buckets(self) -> tuple[list[tuple[float, int]], int, float] | None: ...
    @property
    def exemplars(self) -> list[tuple[str, str, float, float] | None]:
        """A histogram's exemplars per bucket (each bound, then ``+Inf``): a sampled
        decision's trace id, span id, duration (seconds) and time (seconds since the epoch);
        empty for other kinds."""

#: Seconds between looks at a watched policy file, unless told otherwise.
RELOAD_INTERVAL: float
#: Seconds an in-place edit of the policy file must read unchanged before it is loaded.
RELOAD_SETTLE: float

@final
class FileVersion:
    """One reading of the policy file through its symlinks; equal readings are of one file
    with one content, size and mtime."""

    @property
    def identity(self) -> tuple[int, int]: ...
    @property
    def digest(self) -> str: ...
    @property
    def content(self) -> bytes: ...

def read_version(path: Path) -> FileVersion | None:
    """The policy file as it is now (a regular file only); None if it cannot be read."""

@final
class Look:
    """What one look at the policy file found."""

    @property
    def kind(self) -> Literal["unchanged", "unreadable", "settling", "load"]: ...
    @property
    def first(self) -> bool: ...
    @property
    def pins(self) -> bool: ...
    @property
    def why(self) -> str | None: ...
    @property
    def content(self) -> bytes | None: ...

@final
class PolicyWatch:
    """When the policy file at ``path`` is to be loaded again."""

    def __new__(
        cls,
        path: Path,
        settle: float,
        loaded: FileVersion | None,
        pins: list[tuple[Path, str | None]],
        follow_writers: bool = True,
    ) -> PolicyWatch: ...
    @property
    def unwatched(self) -> str | None: ...
    def next_wait(self, interval: float) -> float: ...
    def look(self, forced: bool, now: float) -> Look: ...
    def tried(self, pins: list[tuple[Path, str | None]]) -> None: ...

@final
class Reloaded:
    """What a reload made live."""

    @property
    def revision_before(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def pins_loaded(self) -> list[tuple[Path, str]]:
        """The pins files the new policy read, each with the SHA-256 (hex) of its bytes."""
    @property
    def self_asserted(self) -> list[ValidationError]:
        """Its limits, marks and conditions that rest on an identity the client asserts."""

@final
class Policy:
    """A validated policy document."""

    @staticmethod
    def from_file(path: str | os.PathLike[str]) -> Policy: ...
    @staticmethod
    def from_str(
        text: str,
        format: Literal["json", "yaml", "auto"] = "auto",
        *,
        path: str | os.PathLike[str] | None = None,
    ) -> Policy:
        """``auto``: by ``path``'s extension when given (the file the text was read from),
        else JSON when the text starts with ``{`` or ``[`` (after a byte-order mark)."""
    @staticmethod
    def from_dict(document: dict[str, Any]) -> Policy: ...
    @property
    def revision(self) -> str: ...
    @property
    def servers(self) -> list[str]: ...
    @property
    def needs_approval(self) -> bool:
        """True when some call could wait for a person's approval: a ``require_approval`` rule
        in enforce mode, in any section."""
    @property
    def pins_loaded(self) -> list[tuple[Path, str]]:
        """The pins files the policy read (``pins.file``, relative to its directory), each with
        the SHA-256 (hex) of the bytes it read."""
    def pinned_tools(self) -> list[tuple[str | None, str, list[str]]]:
        """For each section whose ``pins`` withhold unpinned tools (``unpinned: hide``):
        ``(server, pins file, the names it pins for that server)``, ``server`` None for the
        top-level section."""
    def named_tools(self) -> list[tuple[str | None, str, str]]:
        """The tools it names exactly (not by a glob), in rules and in ``hide``:
        ``(server, name, pointer)``, ``server`` None for the top-level section."""
    def self_asserted(
        self, agent_verified: bool = False, session_verified: bool = False
    ) -> list[ValidationError]:
        """Limits and conditions resting on an identity the client asserts (a session id, an
        agent id unless ``agent_verified``), as notes."""

PolicySource = Policy | dict[str, Any] | str | os.PathLike[str]

@final
class LimitState:
    """The state of one limit a decision touched."""

    @property
    def counter(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def max(self) -> float: ...
    @property
    def window_ms(self) -> int: ...
    @property
    def remaining(self) -> float: ...
    @property
    def reset_in_ms(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Decision:
    """The answer for one tool call: from ``Engine.decide``, or from a sidecar through
    ``toolgate.Client``."""

    @staticmethod
    def from_wire(response: bytes) -> Decision:
        """A serialized ``toolgate.v1.DecideResponse``; ValueError if the bytes are not one or
        carry a verdict or code this version does not know."""
    @staticmethod
    def from_batch_wire(response: bytes) -> list[Decision]:
        """The decisions of a serialized ``toolgate.v1.DecideBatchResponse``, in order."""

    @property
    def verdict(self) -> Verdict: ...
    @property
    def allowed(self) -> bool: ...
    @property
    def code(self) -> Code: ...
    @property
    def reason(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def retry_after_ms(self) -> int | None: ...
    @property
    def limits(self) -> list[LimitState]: ...
    @property
    def revision(self) -> str: ...
    @property
    def shadow(self) -> bool: ...
    @property
    def reservation(self) -> int | None: ...
    @property
    def approval_id(self) -> str | None:
        """The human approval this decision is about (``apr_…``): waited for
        (REQUIRE_APPROVAL), used by this allowed call, or refused (APPROVAL_DENIED)."""
    @property
    def marks(self) -> dict[str, Any] | None:
        """The session marks the decision read and set: ``{"read": {name: "set" | "unset" |
        "no_scope" | "unread"}, "set": [name, ...]}``; None when it read and set none."""
    def to_dict(self) -> dict[str, Any]: ...

@final
class Explanation:
    """How one call was decided (``Engine.explain``): the decision and the steps the engine
    took to it, each a dict with a ``step`` key: ``section``, ``hide``, ``rule``, ``rules``,
    ``action``, ``condition``, ``limits``, ``approval``, ``shadow``, ``decision``."""

    @property
    def decision(self) -> Decision: ...
    @property
    def dry_run(self) -> bool:
        """True when nothing was counted."""
    @property
    def steps(self) -> list[dict[str, Any]]: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class ManualClock:
    """A clock that moves only when told to."""

    def __new__(cls, start: float = 0.0) -> ManualClock: ...
    def advance(self, seconds: float) -> None: ...
    @property
    def now(self) -> float: ...

@final
class Engine:
    """Decides tool calls against a policy, with counters that survive reloads."""

    def __new__(
        cls,
        policy: PolicySource,
        *,
        capacity: int = ...,
        reservations: int = ...,
        clock: ManualClock | None = None,
    ) -> Engine: ...
    @staticmethod
    def from_file(
        path: str | os.PathLike[str],
        *,
        capacity: int = ...,
        reservations: int = ...,
        clock: ManualClock | None = None,
    ) -> Engine: ...
    def decide(
        self,
        tool: str,
        *,
        server: str | None = None,
        grant: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        attributes: dict[str, str] | None = None,
        arguments: dict[str, Any] | str | bytes | None = None,
        dry_run: bool = False,
        hits: int | None = None,
        grant_verified: bool = False,
        kind: str = "tool",
    ) -> Decision:
        """``kind``: what ``tool`` names, ``"tool"``, ``"resource"`` (its URI), ``"prompt"``
        or ``"method"``. ``arguments`` as JSON text is read strictly: ValueError if it is not a
        JSON object or could be read two ways (a key twice, keys differing only by case, a
        number beyond 2^53). ``grant_verified``: the grant is a verified identity (a JWT
        claim) that approvals and logs may show as it is, not a credential."""
    def explain(
        self,
        tool: str,
        *,
        server: str | None = None,
        grant: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        attributes: dict[str, str] | None = None,
        arguments: dict[str, Any] | str | bytes | None = None,
        dry_run: bool = True,
        hits: int | None = None,
        grant_verified: bool = False,
        can_confirm: bool = False,
        kind: str = "tool",
    ) -> Explanation:
        """Decide as ``decide`` does, through the same code, and say how. A dry run unless
        ``dry_run=False`` (then it counts, as a decision does)."""
    def list_tools(
        self,
        tools: str,
        *,
        server: str | None = None,
        grant: str | None = None,
        session: str | None = None,
        agent: str | None = None,
        attributes: dict[str, str] | None = None,
        grant_verified: bool = False,
    ) -> list[tuple[str, Code | None]]:
        """Filter a ``tools/list`` answer's tools (JSON text of the array) as the sidecar
        does for this caller: each tool's name and None (shown) or the code its calls would
        be denied with. Each definition is recorded, and held to its pin, for later calls."""
    def refuse(self, reason: str) -> Decision:
        """An INVALID_REQUEST decision for a request that cannot be decided (counted)."""
    def release(self, reservation: int) -> bool: ...
    def reload(self, policy: PolicySource) -> str: ...
    def reload_file(
        self,
        content: bytes,
        path: str | os.PathLike[str],
        *,
        agent_verified: bool = False,
        session_verified: bool = False,
    ) -> Reloaded:
        """A policy file's bytes, as the reload read them, made the policy in one step: parsed
        (``path`` picks the format and is where its pins files are read), validated and
        swapped in, counters kept. Raises PolicyError (or ValueError: not UTF-8), and then
        the old policy stays."""
    @property
    def revision(self) -> str: ...
    def vouch_for(self, grant: str) -> bool: ...
    @property
    def policy(self) -> Policy: ...
    def metrics(self) -> list[MetricFamily]:
        """The engine's metric families, read now."""

@final
class SidecarSettings:
    """``toolgate serve``'s options for the sidecar, by their flags' names (``--store-mode``
    is ``store_mode``); those not given are the defaults. Checked when made: ValueError for
    an option with no such name, of the wrong type, or with a value the sidecar cannot take,
    naming its flag."""

    #: The options that take one of a few words, and those words.
    CHOICES: dict[str, list[str]]
    #: gRPC: ``HOST:PORT`` or ``unix:PATH``.
    listen: str
    #: Serving threads; None: one per CPU this process may use.
    threads: int | None
    capacity: int
    reservations: int
    max_argument_bytes: int
    max_message_bytes: int
    metrics_per_tool: bool
    #: ``local``, or a Redis URL (docs/redis.md), and how it is used.
    store: str
    store_prefix: str
    store_timeout_ms: int
    store_unavailable: Literal["deny", "local"]
    store_mode: Literal["exact", "cached"]
    store_flush_ms: int
    store_connect_wait: float
    store_clock: Literal["redis", "engine"]
    #: A file, ``-`` for stdout, or None.
    decision_log: str | None
    decision_log_filter: Literal["all", "denials"]
    decision_log_rotate_mib: float
    decision_log_queue: int
    decision_log_queue_bytes: int
    approval_pending_per_grant: int
    approval_pending_per_rule: int
    approval_preview_bytes: int
    approvals_capacity: int
    approvals_queue: int
    grant_header: str
    session_header: str
    agent_header: str
    server_header: str
    #: ``header`` or ``jwt:CLAIM``.
    grant_from: str
    session_from: str
    agent_from: str
    jwt_payload_key: str
    max_request_bytes: int
    grant_vouched_by_server: bool
    #: The collector's OTLP/gRPC address, or None: decisions are not traced.
    otlp_endpoint: str | None
    otlp_sample_ratio: float
    #: The AuthZEN listener's ``HOST:PORT`` or ``unix:PATH``, or None: no listener.
    authzen_listen: str | None
    #: Its callers' bearer tokens file, or None.
    authzen_tokens: str | None
    def __new__(cls, **options: object) -> SidecarSettings: ...
    def replace(self, **changes: object) -> SidecarSettings:
        """These settings with ``changes`` made, checked again."""
    def as_dict(self) -> dict[str, object]:
        """Every option's name and value."""
    def serving_threads(self) -> int:
        """``threads``, or one per CPU this process may use (its affinity and its cgroup's
        CPU quota, in whole CPUs)."""
    @property
    def verified(self) -> tuple[bool, bool]:
        """Whether the agent, and the session, come from a claim of a JWT the proxy
        verified rather than from a header the client chooses."""

@final
class Sidecar:
    """The sidecar, assembled in one step from its options: an engine, where it counts, its
    decision log and approvals, and the server that answers on them (``serve()``)."""

    def __new__(
        cls,
        policy: PolicySource,
        settings: SidecarSettings | None = None,
        *,
        key: bytes = ...,
        approvals_table: str | os.PathLike[str] | None = None,
        clock: ManualClock | None = None,
    ) -> Sidecar:
        """Made as ``settings`` say (the defaults if None). ``key`` keys every digest of a
        credential: the decision log's grants, the approvals' calls and, with Redis, users'
        confirmations. Approvals run with their table in the file ``approvals_table`` (made if
        missing; it outlives the process; one of another layout version is set aside), the
        key then 32 bytes or more. ``clock``: a manual clock, for tests. ValueError for wrong
        options, OSError for a file that cannot be opened."""
    @property
    def engine(self) -> Engine: ...
    @property
    def store_connected(self) -> bool:
        """Whether the counter store was reached within ``store_connect_wait``."""
    def metrics(self) -> list[MetricFamily]:
        """The sidecar's metric families (the engine's, and its ext_proc service's), read
        now."""
    def set_store_evictable(self, evictable: bool) -> None:
        """Whether Redis may evict counter keys now (and that was not accepted): while it
        may, limits follow the store's outage behaviour. Nothing for the local table."""
    def take_approvals(self) -> Approvals | None:
        """The approvals, for the control plane (None without ``approvals_table``); once."""
    @property
    def decision_log_break(self) -> str | None:
        """What the log held after its last line of the chain when it was opened (a line
        cut by a crash...), now accounted for by a break line; None: nothing."""
    def decision_log_head(self) -> tuple[int, str] | None:
        """``(seq, sha256)`` of the decision log's last line (None without a log)."""
    def sync_decision_log(self, timeout: float) -> bool:
        """Wait until every decision logged so far is written out; False on timeout."""
    def serve(self) -> str:
        """Bind and answer calls, NOT_SERVING until told otherwise; the address it
        listens on. ValueError without ``listen``, OSError if it cannot bind."""
    def authzen_address(self) -> str | None:
        """The address the AuthZEN listener listens on (``--authzen-listen``), while it
        serves."""
    def set_serving(self, serving: bool) -> None:
        """SERVING or NOT_SERVING on grpc.health.v1; calls are answered either way."""
    def stop(self, grace: float) -> None:
        """Refuse new calls, let those in flight finish within ``grace`` seconds."""

def read_document(
    text: str,
    *,
    format: Literal["json", "yaml", "auto"] = "auto",
    path: str | os.PathLike[str] | None = None,
) -> tuple[Any, dict[str, int]]:
    """JSON or YAML read as policies are (duplicate keys and aliases refused): the document,
    and each value's JSON pointer mapped to its line. ValueError, with the line, if it is not
    valid."""

def read_mcp_request(body: bytes) -> dict[str, Any]:
    """How the Envoy gate reads one JSON-RPC request body: ``kind`` is ``call`` (``id``,
    ``method``, ``name``, ``arguments``), ``other`` (``id``, ``method``), ``response``
    (``id``) or ``refused`` (``code``, ``message``, ``id``)."""

def read_maxmemory_policy(
    url: str, wait: float
) -> tuple[Literal["policy", "unreadable", "unreachable"], str]:
    """The ``maxmemory-policy`` of the Redis primary ``url`` names (found as ``--store`` finds
    it: Sentinel asked, TLS verified), waiting at most ``wait`` seconds: ``("policy", name)``;
    ``("unreadable", why)`` when Redis refuses both ``CONFIG GET`` and ``INFO``;
    ``("unreachable", why)`` when it does not answer. ValueError for a URL that is not a
    store's."""

@final
class Approvals:
    """A sidecar's approvals (from ``Sidecar.take_approvals``): the control plane drains
    their news, reconciles the table with its store, and records approvers' decisions."""

    def next_events(self, timeout: float, limit: int = 256) -> list[dict[str, Any]]:
        """News since the last call (``event``: ``opened`` with the call's details, or
        ``used``), waiting up to ``timeout`` seconds for the first."""
    def decide(self, id: str, approve: bool) -> dict[str, Any]:
        """An approver's decision on a pending approval; ValueError if it is unknown,
        expired or already decided."""
    def get(self, id: str) -> dict[str, Any] | None: ...
    def slots(self) -> list[dict[str, Any]]: ...
    def apply(
        self,
        id: str,
        key: str,
        state: str,
        created_ms: int,
        deadline_ms: int,
        owner: str | None = None,
    ) -> bool: ...
    def forget(self, id: str) -> bool: ...
    def now_ms(self) -> int: ...
    @property
    def set_aside(self) -> str | None:
        """Where opening the table set aside a file of another layout version, or None."""
    @property
    def dropped(self) -> int: ...
