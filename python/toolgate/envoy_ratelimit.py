"""Envoy's rate limit service API (``envoy.service.ratelimit.v3.RateLimitService``), so
toolgate drops in where Limitador or envoyproxy/ratelimit run.

Mapping: ``domain`` selects the policy's ``servers`` section (a domain without one uses the
top-level policy); each descriptor is one call, its entries supply the tool (``tool``) and
the subject (``grant``, ``session``, ``agent``; any other key becomes
``subject.attributes.<key>``); ``hits_addend`` (0 means 1) is what each limit counts. The
answer is OK or OVER_LIMIT, never UNKNOWN: a descriptor the policy denies for any reason is
OVER_LIMIT, and so is one that cannot be decided. Descriptors are all-or-nothing: when one is
over, what the others reserved is given back.
"""

from __future__ import annotations

import math

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import duration_pb2

from toolgate._core import Decision, Engine
from toolgate.service import read_request

SERVICE_NAME = "envoy.service.ratelimit.v3.RateLimitService"

_Response = rls_pb2.RateLimitResponse
_UNITS = {
    1_000: _Response.RateLimit.SECOND,
    60_000: _Response.RateLimit.MINUTE,
    3_600_000: _Response.RateLimit.HOUR,
    86_400_000: _Response.RateLimit.DAY,
    604_800_000: _Response.RateLimit.WEEK,
}
_SUBJECT_KEYS = ("grant", "session", "agent")
_UINT32_MAX = 2**32 - 1


def _decide(engine: Engine, domain: str, descriptor: object, hits: int) -> Decision:
    entries = descriptor.entries  # type: ignore[attr-defined]
    fields: dict[str, str] = {}
    for entry in entries:
        if entry.key in fields:
            return engine.refuse(f"descriptor entry {entry.key!r} appears twice")
        fields[entry.key] = entry.value
    tool = fields.pop("tool", "")
    if not tool:
        return engine.refuse("descriptor has no non-empty 'tool' entry")
    subject = {k: fields.pop(k) or None for k in _SUBJECT_KEYS if k in fields}
    return engine.decide(
        tool, server=domain or None, attributes=fields or None, hits=hits, **subject
    )


def _status(decision: Decision, over: bool) -> _Response.DescriptorStatus:
    status = _Response.DescriptorStatus(code=_Response.OVER_LIMIT if over else _Response.OK)
    limits = decision.limits
    if not limits:
        return status
    # The limit that denied, or the one with the least room.
    limit = next((lim for lim in limits if lim.rule == decision.rule), None) or min(
        limits, key=lambda lim: lim.remaining
    )
    status.current_limit.CopyFrom(
        _Response.RateLimit(
            name=limit.counter,
            requests_per_unit=min(int(limit.max), _UINT32_MAX),
            unit=_UNITS.get(limit.window_ms, _Response.RateLimit.UNKNOWN),
        )
    )
    status.limit_remaining = min(int(limit.remaining), _UINT32_MAX)
    reset_ms = decision.retry_after_ms if over and decision.retry_after_ms else limit.reset_in_ms
    status.duration_until_reset.CopyFrom(duration_pb2.Duration(seconds=math.ceil(reset_ms / 1000)))
    return status


def _header(key: str, value: str) -> base_pb2.HeaderValue:
    return base_pb2.HeaderValue(key=key, value=value)


class RateLimitService:
    """Answers ``ShouldRateLimit`` from ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def should_rate_limit(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        req = read_request(rls_pb2.RateLimitRequest, request, context)
        decisions = []
        for descriptor in req.descriptors:
            own = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else 0
            hits = own or req.hits_addend or 1
            decisions.append(_decide(self.engine, req.domain, descriptor, hits))
        refused = [d for d in decisions if not d.allowed]
        if refused:
            # All or nothing: the descriptors that fitted give their counters back.
            for d in decisions:
                if d.allowed and d.reservation is not None:
                    self.engine.release(d.reservation)
        response = _Response(
            overall_code=_Response.OVER_LIMIT if refused else _Response.OK,
            statuses=[_status(d, over=not d.allowed) for d in decisions],
        )
        if refused:
            first = refused[0]
            response.response_headers_to_add.extend(
                [
                    _header("x-toolgate-verdict", first.verdict),
                    _header("x-toolgate-code", first.code),
                    _header("x-toolgate-rule", first.rule),
                ]
            )
            if first.retry_after_ms is not None:
                retry = max(1, math.ceil(first.retry_after_ms / 1000))
                response.response_headers_to_add.append(_header("retry-after", str(retry)))
            response.raw_body = (first.reason + "\n").encode()
        return response.SerializeToString()


def rate_limit_handler(service: RateLimitService) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {"ShouldRateLimit": grpc.unary_unary_rpc_method_handler(service.should_rate_limit)},
    )
