"""The IOU gateway's Python SDK: what an agent's code imports.

    from gateway.sdk import Client, BalanceInsufficient

    iou = Client()                      # IOU_URL, IOU_AGENT_KEY
    charge = iou.charge("web_search")   # Charge(cost=Decimal("0.05"), balance=...)

It imports httpx and orjson only, never the gateway's server modules.
"""

from __future__ import annotations

from gateway.sdk.aio import AsyncClient, AsyncHold, PendingHold
from gateway.sdk.client import Client, Hold
from gateway.sdk.errors import (
    ERROR_CLASSES,
    AgentExists,
    AgentFrozen,
    BadResponse,
    BalanceInsufficient,
    BodyTooLarge,
    Forbidden,
    HeadersTooLarge,
    HoldClosed,
    HttpVersionNotSupported,
    IdempotencyConflict,
    InternalError,
    InvalidRequest,
    IOUError,
    LimitExceeded,
    LoopDetected,
    MalformedJson,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    RequestTimeout,
    TaskClosed,
    Unauthorized,
    Unavailable,
    Unreachable,
    UnsupportedMediaType,
    UpstreamTimeout,
    UpstreamUnavailable,
    UriTooLong,
    error_for,
)
from gateway.sdk.models import (
    AgentSummary,
    Capture,
    Charge,
    HoldInfo,
    Invoked,
    LedgerEntry,
    Money,
    Release,
    Status,
)

__all__ = [
    "ERROR_CLASSES",
    "AgentExists",
    "AgentFrozen",
    "AgentSummary",
    "AsyncClient",
    "AsyncHold",
    "BadResponse",
    "BalanceInsufficient",
    "BodyTooLarge",
    "Capture",
    "Charge",
    "Client",
    "Forbidden",
    "HeadersTooLarge",
    "Hold",
    "HoldClosed",
    "HoldInfo",
    "HttpVersionNotSupported",
    "IOUError",
    "IdempotencyConflict",
    "InternalError",
    "InvalidRequest",
    "Invoked",
    "LedgerEntry",
    "LimitExceeded",
    "LoopDetected",
    "MalformedJson",
    "MalformedRequest",
    "MethodNotAllowed",
    "Money",
    "NotFound",
    "PendingHold",
    "RateLimited",
    "Release",
    "RequestTimeout",
    "Status",
    "TaskClosed",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "UnsupportedMediaType",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "UriTooLong",
    "error_for",
]
