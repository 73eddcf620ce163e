"""JSON responses (orjson), the contract's error body, and the one table of HTTP statuses
of the contract's errors (gateway/metering/errors.py has the classes, without statuses)."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import orjson
from starlette.responses import Response

from gateway.metering import errors
from gateway.metering.errors import GatewayError

JSON = "application/json"
INTERNAL_STATUS = 500

# The contract's status of each error class (a subclass answers its nearest ancestor's).
HTTP_STATUS: dict[type[GatewayError], int] = {
    errors.MalformedJson: 400,
    errors.RequestIncomplete: 400,
    errors.Unauthorized: 401,
    errors.BalanceInsufficient: 402,
    errors.Forbidden: 403,
    errors.PerCallLimitExceeded: 403,
    errors.TaskLimitExceeded: 403,
    errors.NotFound: 404,
    errors.AgentExists: 409,
    errors.IdempotencyConflict: 409,
    errors.HoldClosed: 409,
    errors.TaskClosed: 409,
    errors.BodyTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.InvalidRequest: 422,
    errors.AgentFrozen: 423,
    errors.WindowLimitExceeded: 429,
    errors.RateLimited: 429,
    errors.LoopDetected: 429,
    errors.UpstreamUnavailable: 502,
    errors.Unavailable: 503,
    errors.UpstreamTimeout: 504,
}
_status_of_type: dict[type[GatewayError], int] = {}


def http_status(exc: GatewayError) -> int:
    """The HTTP status of ``exc``: its class's, else its nearest ancestor's in HTTP_STATUS."""
    kind = type(exc)
    status = _status_of_type.get(kind)
    if status is None:
        status = next((HTTP_STATUS[c] for c in kind.__mro__ if c in HTTP_STATUS),
                      INTERNAL_STATUS)
        _status_of_type[kind] = status
    return status


log = logging.getLogger("iou.api")


def log_refusal(exc: GatewayError) -> None:
    """One line per refusal (the request id and agent come from the log context): info for
    a client's refusal, warning when the gateway could not serve (5xx)."""
    status = http_status(exc)
    level = logging.WARNING if status >= 500 else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, "refused %d: %s", status, exc.message, extra={"error": exc.code})


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def error_response(exc: GatewayError) -> Response:
    # Every refusal that says when to come back (window caps, rate limits) sets Retry-After.
    log_refusal(exc)
    headers = None
    if "retry_after_s" in exc.details:
        headers = {"Retry-After": str(exc.details["retry_after_s"])}
    return json_response(http_status(exc), exc.to_dict(), headers)


def error_body(exc: GatewayError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The same error as error_response, as raw ASGI parts (status, body, extra headers)."""
    log_refusal(exc)
    extra = []
    if "retry_after_s" in exc.details:
        extra.append((b"retry-after", str(exc.details["retry_after_s"]).encode()))
    return http_status(exc), orjson.dumps(exc.to_dict()), extra


def iso_ms(ms: int) -> str:
    """Unix ms as an ISO 8601 UTC timestamp with milliseconds."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
