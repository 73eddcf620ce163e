"""The contract's errors: one class per error code, raised by the domain and the API alike.

No HTTP here: gateway/api/responses.py maps each class to its status (one table). A class
carries the contract's ``code``, one human sentence and the details of its row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from gateway.sdk.codes import SERVER_CODES
from gateway.store.errors import StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")


class GatewayError(Exception):
    """A refusal with the contract's ``code`` and one human sentence."""

    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # One list of codes for the gateway and the SDK (gateway/sdk/codes.py): a code the
        # SDK has no class for cannot be defined here.
        super().__init_subclass__(**kwargs)
        if cls.code not in SERVER_CODES:
            raise TypeError(f"{cls.__name__}.code {cls.code!r} is not in gateway.sdk.codes")

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class InvalidRequest(GatewayError):
    code = "invalid_request"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}.", field=field, reason=reason)


class NotFound(GatewayError):
    code = "not_found"


class AgentExists(GatewayError):
    code = "agent_exists"


class IdempotencyConflict(GatewayError):
    code = "idempotency_conflict"


class HoldClosed(GatewayError):
    """An extension of the contract: the hold exists but is captured, released or expired."""

    code = "hold_closed"


class BalanceInsufficient(GatewayError):
    code = "balance_insufficient"


class LimitExceeded(GatewayError):
    """A cap refused the call: a per-call cap (PerCallLimitExceeded) or a window
    (WindowLimitExceeded, which says when to come back)."""

    code = "limit_exceeded"


class PerCallLimitExceeded(LimitExceeded):
    pass


class WindowLimitExceeded(LimitExceeded):
    pass


class LoopDetected(GatewayError):
    """The loop breaker: the same tool with the same arguments more than ``repeats`` times
    within ``window_s`` (details ``tool``, ``repeats``, ``window_s``, ``retry_after_s``)."""

    code = "loop_detected"


class AgentFrozen(GatewayError):
    code = "agent_frozen"


class Unavailable(GatewayError):
    code = "unavailable"


class MalformedJson(GatewayError):
    code = "malformed_json"


class RequestIncomplete(GatewayError):
    """The connection ended (or was cut for slowness) before the whole body arrived."""

    code = "malformed_request"


class BodyTooLarge(GatewayError):
    code = "body_too_large"


class UnsupportedMediaType(GatewayError):
    code = "unsupported_media_type"


class Unauthorized(GatewayError):
    code = "unauthorized"


class Forbidden(GatewayError):
    code = "forbidden"


class RateLimited(GatewayError):
    code = "rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("Too many failed authentications; retry after the time in "
                         "Retry-After.", retry_after_s=retry_after_s)


class UpstreamTimeout(GatewayError):
    """An extension of the contract: a tool's upstream did not answer in time (invoke)."""

    code = "upstream_timeout"


class UpstreamUnavailable(GatewayError):
    """An extension of the contract: a tool's upstream could not be reached (invoke)."""

    code = "upstream_unavailable"


def unavailable(exc: StoreUnavailable) -> Unavailable:
    """The contract's 503 for the store's failure (its message names no address)."""
    return Unavailable(str(exc))


def maps_store_errors(operation: Callable[P, Coroutine[Any, Any, R]]
                      ) -> Callable[P, Coroutine[Any, Any, R]]:
    """A domain operation whose store failures surface as the contract's ``Unavailable``."""

    @functools.wraps(operation)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await operation(*args, **kwargs)
        except StoreUnavailable as exc:
            raise unavailable(exc) from exc

    return run


class TaskClosed(GatewayError):
    """A call named a task that is closed or past its expiry."""

    code = "task_closed"


class TaskLimitExceeded(LimitExceeded):
    """A task's budget or max_calls, or require_task, refused the call (403)."""
