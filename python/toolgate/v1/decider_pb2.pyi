from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    ALLOW: _ClassVar[Verdict]
    DENY: _ClassVar[Verdict]
    REQUIRE_APPROVAL: _ClassVar[Verdict]

class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODE_UNSPECIFIED: _ClassVar[Code]
    ALLOWED: _ClassVar[Code]
    HIDDEN: _ClassVar[Code]
    DEFAULT_DENY: _ClassVar[Code]
    RULE_DENY: _ClassVar[Code]
    CONDITION_FAILED: _ClassVar[Code]
    RATE_LIMITED: _ClassVar[Code]
    APPROVAL_REQUIRED: _ClassVar[Code]
    INVALID_REQUEST: _ClassVar[Code]
    APPROVAL_DENIED: _ClassVar[Code]
    STORE_UNAVAILABLE: _ClassVar[Code]
    TOOL_CHANGED: _ClassVar[Code]
    TOOL_UNPINNED: _ClassVar[Code]
    CONFIRMATION_REQUIRED: _ClassVar[Code]
    CONFIRMATION_DECLINED: _ClassVar[Code]
    CONFIRMATION_EXPIRED: _ClassVar[Code]
    CONFIRMATION_INVALID: _ClassVar[Code]
    CONFIRMATION_UNAVAILABLE: _ClassVar[Code]
VERDICT_UNSPECIFIED: Verdict
ALLOW: Verdict
DENY: Verdict
REQUIRE_APPROVAL: Verdict
CODE_UNSPECIFIED: Code
ALLOWED: Code
HIDDEN: Code
DEFAULT_DENY: Code
RULE_DENY: Code
CONDITION_FAILED: Code
RATE_LIMITED: Code
APPROVAL_REQUIRED: Code
INVALID_REQUEST: Code
APPROVAL_DENIED: Code
STORE_UNAVAILABLE: Code
TOOL_CHANGED: Code
TOOL_UNPINNED: Code
CONFIRMATION_REQUIRED: Code
CONFIRMATION_DECLINED: Code
CONFIRMATION_EXPIRED: Code
CONFIRMATION_INVALID: Code
CONFIRMATION_UNAVAILABLE: Code

class Subject(_message.Message):
    __slots__ = ("grant", "agent", "session", "attributes", "peer_address")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    GRANT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    grant: str
    agent: str
    session: str
    attributes: _containers.ScalarMap[str, str]
    peer_address: str
    def __init__(self, grant: _Optional[str] = ..., agent: _Optional[str] = ..., session: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., peer_address: _Optional[str] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("server", "tool", "subject", "arguments_json", "dry_run")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    server: str
    tool: str
    subject: Subject
    arguments_json: bytes
    dry_run: bool
    def __init__(self, server: _Optional[str] = ..., tool: _Optional[str] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., arguments_json: _Optional[bytes] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class LimitState(_message.Message):
    __slots__ = ("counter", "rule", "scope", "max", "remaining", "reset_in_ms", "window_ms")
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_IN_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    counter: str
    rule: str
    scope: str
    max: float
    remaining: float
    reset_in_ms: int
    window_ms: int
    def __init__(self, counter: _Optional[str] = ..., rule: _Optional[str] = ..., scope: _Optional[str] = ..., max: _Optional[float] = ..., remaining: _Optional[float] = ..., reset_in_ms: _Optional[int] = ..., window_ms: _Optional[int] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("verdict", "code", "reason", "rule", "retry_after_ms", "limits", "revision", "shadow", "reservation", "approval_id", "marks_read", "marks_set")
    class MarksReadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    MARKS_READ_FIELD_NUMBER: _ClassVar[int]
    MARKS_SET_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    code: Code
    reason: str
    rule: str
    retry_after_ms: int
    limits: _containers.RepeatedCompositeFieldContainer[LimitState]
    revision: str
    shadow: bool
    reservation: int
    approval_id: str
    marks_read: _containers.ScalarMap[str, str]
    marks_set: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., code: _Optional[_Union[Code, str]] = ..., reason: _Optional[str] = ..., rule: _Optional[str] = ..., retry_after_ms: _Optional[int] = ..., limits: _Optional[_Iterable[_Union[LimitState, _Mapping]]] = ..., revision: _Optional[str] = ..., shadow: _Optional[bool] = ..., reservation: _Optional[int] = ..., approval_id: _Optional[str] = ..., marks_read: _Optional[_Mapping[str, str]] = ..., marks_set: _Optional[_Iterable[str]] = ...) -> None: ...

class DecideBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[DecideRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[DecideRequest, _Mapping]]] = ...) -> None: ...

class DecideBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[DecideResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[DecideResponse, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("reservation",)
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    reservation: int
    def __init__(self, reservation: _Optional[int] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...
