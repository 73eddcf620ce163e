"""JSON responses (orjson) and the contract's error body."""

from __future__ import annotations

import datetime
from typing import Any

import orjson
from starlette.responses import Response

from gateway.metering.errors import GatewayError

JSON = "application/json"


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def error_response(exc: GatewayError) -> Response:
    # Every refusal that says when to come back (window caps, rate limits) sets Retry-After.
    headers = None
    if "retry_after_s" in exc.details:
        headers = {"Retry-After": str(exc.details["retry_after_s"])}
    return json_response(exc.status, exc.to_dict(), headers)


def error_body(exc: GatewayError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The same error as error_response, as raw ASGI parts (status, body, extra headers)."""
    extra = []
    if "retry_after_s" in exc.details:
        extra.append((b"retry-after", str(exc.details["retry_after_s"]).encode()))
    return exc.status, orjson.dumps(exc.to_dict()), extra


def iso_ms(ms: int) -> str:
    """Unix ms as an ISO 8601 UTC timestamp with milliseconds."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
