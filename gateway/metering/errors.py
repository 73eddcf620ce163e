"""Error types, one per contract error code. The HTTP layer maps them 1:1 to responses."""

from __future__ import annotations

from typing import Any

from gateway.sdk.codes import SERVER_CODES


class GatewayError(Exception):
    """A refusal with the contract's ``code``, HTTP ``status`` and one human sentence."""

    code = "internal"
    status = 500

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
    code, status = "invalid_request", 422

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}.", field=field, reason=reason)


class NotFound(GatewayError):
    code, status = "not_found", 404


class AgentExists(GatewayError):
    code, status = "agent_exists", 409


class IdempotencyConflict(GatewayError):
    code, status = "idempotency_conflict", 409


class HoldClosed(GatewayError):
    """An extension of the contract: the hold exists but is captured, released or expired."""

    code, status = "hold_closed", 409


class BalanceInsufficient(GatewayError):
    code, status = "balance_insufficient", 402


class PerCallLimitExceeded(GatewayError):
    code, status = "limit_exceeded", 403


class WindowLimitExceeded(GatewayError):
    code, status = "limit_exceeded", 429


class AgentFrozen(GatewayError):
    code, status = "agent_frozen", 423


class Unavailable(GatewayError):
    code, status = "unavailable", 503


class UnsafeRedis(Exception):
    """The configured Redis could lose balances; the message says how to fix it."""
