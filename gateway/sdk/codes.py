"""The contract's error codes: the one list the gateway answers from and the SDK maps.

The server's error classes check their ``code`` against ``SERVER_CODES`` when they are
defined (gateway/metering/errors.py), and the SDK builds one exception class per entry
(gateway/sdk/errors.py), so a code cannot exist on one side only. This module imports
nothing: the server imports it without pulling in the SDK's HTTP client.
"""

from __future__ import annotations

from typing import NamedTuple


class ErrorCode(NamedTuple):
    """One contract error: its ``code``, the HTTP statuses it comes with, the SDK's class."""

    code: str
    statuses: tuple[int, ...]
    class_name: str


SERVER_ERRORS: tuple[ErrorCode, ...] = (
    ErrorCode("malformed_json", (400,), "MalformedJson"),
    ErrorCode("malformed_request", (400,), "MalformedRequest"),
    ErrorCode("unauthorized", (401,), "Unauthorized"),
    ErrorCode("balance_insufficient", (402,), "BalanceInsufficient"),
    ErrorCode("forbidden", (403,), "Forbidden"),
    ErrorCode("limit_exceeded", (403, 429), "LimitExceeded"),
    ErrorCode("not_found", (404,), "NotFound"),
    ErrorCode("method_not_allowed", (405,), "MethodNotAllowed"),
    ErrorCode("request_timeout", (408,), "RequestTimeout"),
    ErrorCode("agent_exists", (409,), "AgentExists"),
    ErrorCode("idempotency_conflict", (409,), "IdempotencyConflict"),
    ErrorCode("hold_closed", (409,), "HoldClosed"),
    ErrorCode("task_closed", (409,), "TaskClosed"),
    ErrorCode("body_too_large", (413,), "BodyTooLarge"),
    ErrorCode("uri_too_long", (414,), "UriTooLong"),
    ErrorCode("unsupported_media_type", (415,), "UnsupportedMediaType"),
    ErrorCode("invalid_request", (422,), "InvalidRequest"),
    ErrorCode("agent_frozen", (423,), "AgentFrozen"),
    ErrorCode("rate_limited", (429,), "RateLimited"),
    ErrorCode("loop_detected", (429,), "LoopDetected"),
    ErrorCode("headers_too_large", (431,), "HeadersTooLarge"),
    ErrorCode("http_version_not_supported", (505,), "HttpVersionNotSupported"),
    ErrorCode("internal", (500,), "InternalError"),
    ErrorCode("upstream_unavailable", (502,), "UpstreamUnavailable"),
    ErrorCode("unavailable", (503,), "Unavailable"),
    ErrorCode("upstream_timeout", (504,), "UpstreamTimeout"),
)
SERVER_CODES: frozenset[str] = frozenset(e.code for e in SERVER_ERRORS)

# Raised by the SDK itself, never answered by a gateway: the answer never arrived (after the
# retries), or it was not the contract's JSON (something else listens at the URL).
CLIENT_ERRORS: tuple[ErrorCode, ...] = (
    ErrorCode("unreachable", (), "Unreachable"),
    ErrorCode("bad_response", (), "BadResponse"),
)
