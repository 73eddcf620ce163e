"""One exception class per contract error code, all subclasses of ``IOUError``.

The classes are named by gateway/sdk/codes.py, the list the server's own errors are checked
against; ``error_for`` turns an answer into the instance of its class (an unknown code is a
plain ``IOUError``), with the details of the body as typed attributes and money as Decimal.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.sdk.codes import CLIENT_ERRORS, SERVER_ERRORS

# Details that carry an amount of tokens; turned into Decimal when they are decimal strings.
MONEY_DETAILS = frozenset({"balance", "cost", "max", "spent", "amount", "budget"})


def _detail(name: str, value: Any) -> Any:
    if name in MONEY_DETAILS and isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return value
    return value


class IOUError(Exception):
    """A refusal of the gateway (``status`` its HTTP status) or, with ``status`` 0, a call
    whose answer never arrived (``Unreachable``) or was not the contract's (``BadResponse``).

    ``code`` is the contract's error code, ``message`` its human sentence, ``body`` the whole
    error object; every other field of the body is in ``details`` and is an attribute too.
    """

    code: str = "error"
    retry_after_s: int | None = None

    def __init__(self, message: str, *, status: int = 0, body: Mapping[str, Any] | None = None,
                 code: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body: dict[str, Any] = dict(body or {})
        if code is not None:
            self.code = code
        self.details = {k: _detail(k, v) for k, v in self.body.items()
                        if k not in ("error", "message")}
        for name, value in self.details.items():
            if name.isidentifier() and not name.startswith("_") and name not in _RESERVED:
                setattr(self, name, value)
        if self.retry_after_s is None:
            self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"


_RESERVED = frozenset({"code", "status", "message", "body", "details", "args"})


class MalformedJson(IOUError):
    code = "malformed_json"


class MalformedRequest(IOUError):
    code = "malformed_request"


class Unauthorized(IOUError):
    code = "unauthorized"


class BalanceInsufficient(IOUError):
    """The call costs more than the balance: pause the agent (top up, then go on)."""

    code = "balance_insufficient"
    balance: Decimal | None = None
    cost: Decimal | None = None


class Forbidden(IOUError):
    code = "forbidden"


class LimitExceeded(IOUError):
    """A cap refused the call; ``limit`` names it, ``retry_after_s`` is set for windows."""

    code = "limit_exceeded"
    limit: str | None = None
    category: str | None = None
    scope: str | None = None
    max: Decimal | None = None
    spent: Decimal | None = None
    cost: Decimal | None = None


class NotFound(IOUError):
    code = "not_found"


class MethodNotAllowed(IOUError):
    code = "method_not_allowed"


class RequestTimeout(IOUError):
    code = "request_timeout"


class AgentExists(IOUError):
    code = "agent_exists"


class IdempotencyConflict(IOUError):
    code = "idempotency_conflict"


class HoldClosed(IOUError):
    code = "hold_closed"
    state: str | None = None


class TaskClosed(IOUError):
    code = "task_closed"


class BodyTooLarge(IOUError):
    code = "body_too_large"


class UriTooLong(IOUError):
    code = "uri_too_long"


class UnsupportedMediaType(IOUError):
    code = "unsupported_media_type"


class InvalidRequest(IOUError):
    code = "invalid_request"
    field: str | None = None
    reason: str | None = None


class AgentFrozen(IOUError):
    code = "agent_frozen"


class RateLimited(IOUError):
    code = "rate_limited"


class LoopDetected(IOUError):
    code = "loop_detected"
    tool: str | None = None
    repeats: int | None = None
    window_s: int | None = None


class HeadersTooLarge(IOUError):
    code = "headers_too_large"


class HttpVersionNotSupported(IOUError):
    code = "http_version_not_supported"


class InternalError(IOUError):
    code = "internal"


class UpstreamUnavailable(IOUError):
    code = "upstream_unavailable"


class Unavailable(IOUError):
    """The gateway fails closed (503): retried by the client, raised when retries ran out."""

    code = "unavailable"


class UpstreamTimeout(IOUError):
    code = "upstream_timeout"


class Unreachable(IOUError):
    """No answer arrived (refused, reset, timed out), also after the retries."""

    code = "unreachable"


class BadResponse(IOUError):
    """Something answered that is not the gateway's JSON."""

    code = "bad_response"


def _classes() -> dict[str, type[IOUError]]:
    """The class of each code, by the name the code list gives it: a code without its class
    (or a class with another code) fails here, at import."""
    found: dict[str, type[IOUError]] = {}
    for entry in (*SERVER_ERRORS, *CLIENT_ERRORS):
        cls = globals().get(entry.class_name)
        if not (isinstance(cls, type) and issubclass(cls, IOUError) and cls.code == entry.code):
            raise ImportError(f"gateway.sdk.errors has no class {entry.class_name} for "
                              f"code {entry.code!r}")
        found[entry.code] = cls
    return found


ERROR_CLASSES: dict[str, type[IOUError]] = _classes()


def error_for(status: int, body: Mapping[str, Any],
              retry_after_s: int | None = None) -> IOUError:
    """The exception for an error answer: its code's class, else ``IOUError`` itself."""
    code = body.get("error")
    code = code if isinstance(code, str) else "error"
    message = body.get("message")
    message = message if isinstance(message, str) else f"The gateway answered {status}."
    cls = ERROR_CLASSES.get(code, IOUError)
    return cls(message, status=status, body=body, code=code, retry_after_s=retry_after_s)
