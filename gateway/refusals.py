"""Script return codes -> the contract's errors, with their details."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway import money
from gateway.codes import Code
from gateway.errors import (
    AgentExists,
    AgentFrozen,
    BalanceInsufficient,
    GatewayError,
    HoldClosed,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    PerCallLimitExceeded,
    WindowLimitExceeded,
)


def _int(value: Any) -> int:
    return int(value) if not isinstance(value, bytes) else int(value.decode())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def refusal(code: Code, reply: list[Any], **context: str) -> GatewayError:
    """The contract's error for a script's refusal code."""
    agent = context.get("agent", "")
    if code == Code.NOT_FOUND:
        what = f"tool {context['tool']}" if "tool" in context and not agent else f"agent {agent}"
        return NotFound(f"No {what} exists.")
    if code == Code.HOLD_NOT_FOUND:
        return NotFound(f"No hold {context.get('hold_id', '')} for agent {agent}.")
    if code == Code.HOLD_CLOSED:
        state = _text(reply[1])
        return HoldClosed(f"The hold is already {state}.", state=state)
    if code == Code.CAPTURE_EXCEEDS_HOLD:
        return InvalidRequest("cost", f"must be at most the held amount "
                                      f"{money.format_amount(_int(reply[1]))}")
    if code == Code.FROZEN:
        return AgentFrozen(f"Agent {agent} is frozen; paid calls are refused.")
    if code == Code.IDEMPOTENCY_CONFLICT:
        return IdempotencyConflict("This Idempotency-Key was used with a different request.")
    if code == Code.BALANCE_INSUFFICIENT:
        return BalanceInsufficient(
            f"The call costs {money.format_amount(_int(reply[2]))} but only "
            f"{money.format_amount(_int(reply[1]))} is available.",
            balance=money.format_amount(_int(reply[1])), cost=money.format_amount(_int(reply[2])))
    if code in (Code.LIMIT_PER_CALL, Code.LIMIT_CATEGORY_PER_CALL):
        return _per_call_refusal(code, reply, context)
    if code in (Code.LIMIT_DAILY, Code.LIMIT_CATEGORY_DAILY):
        return _window_refusal(code, reply, context)
    if code == Code.AGENT_EXISTS:
        return AgentExists(f"An agent named {agent} already exists.")
    if code == Code.BALANCE_OVERFLOW:
        return InvalidRequest("amount", "would take the balance above the largest exact amount")
    if code == Code.KEYS_FULL:
        return InvalidRequest("keys", f"an agent may have at most {_int(reply[1])} keys")
    if code == Code.KEY_NOT_FOUND:
        return NotFound("No such key.")
    return InvalidRequest("argument", f"was refused by the script (argument {reply[1:]})")


def _per_call_refusal(code: Code, reply: list[Any], context: Mapping[str, str]) -> GatewayError:
    limit = "per_call" if code == Code.LIMIT_PER_CALL else "category_per_call"
    cap, cost = money.format_amount(_int(reply[1])), money.format_amount(_int(reply[2]))
    return PerCallLimitExceeded(f"The call costs {cost}, above the {limit} cap of {cap}.",
                                limit=limit, category=context.get("category"), max=cap,
                                cost=cost)


def _window_refusal(code: Code, reply: list[Any], context: Mapping[str, str]) -> GatewayError:
    limit = "daily" if code == Code.LIMIT_DAILY else "category_daily"
    cap, spent = money.format_amount(_int(reply[1])), money.format_amount(_int(reply[2]))
    # A capture learns the hold's category from its script (the 5th element).
    category = context.get("category") or (_text(reply[4]) if len(reply) > 4 else None)
    return WindowLimitExceeded(
        f"Today's {limit} cap of {cap} is reached ({spent} spent or held).", limit=limit,
        category=category, max=cap, spent=spent, retry_after_s=_int(reply[3]))
