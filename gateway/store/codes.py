"""Return codes of the Lua scripts; mirrors the ``C`` table of ``lua/_lib.lua``.

A test checks that this enum, the library table and every script header agree.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    REPLAY = 1
    NOT_FOUND = 10
    FROZEN = 11
    IDEMPOTENCY_CONFLICT = 12
    LIMIT_PER_CALL = 13
    LIMIT_CATEGORY_PER_CALL = 14
    LIMIT_DAILY = 15
    LIMIT_CATEGORY_DAILY = 16
    BALANCE_INSUFFICIENT = 17
    HOLD_NOT_FOUND = 18
    HOLD_CLOSED = 19
    CAPTURE_EXCEEDS_HOLD = 20
    AGENT_EXISTS = 21
    BALANCE_OVERFLOW = 22
    KEY_NOT_FOUND = 23
    KEYS_FULL = 24
    TOOL_NOT_FOUND = 25
    COST_FIXED = 26
    COST_REQUIRED = 27
    HOLD_BELOW_PRICE = 28
    NOTHING_TO_HOLD = 29
    BAD_ARGUMENT = 30
    LIMIT_WINDOW = 31
    LIMIT_CALLS = 32
    LIMIT_TOOL_PER_CALL = 33
    TASK_NOT_FOUND = 40
    TASK_CLOSED = 41
    LIMIT_TASK_BUDGET = 42
    LIMIT_TASK_CALLS = 43
    LIMIT_TASK_REQUIRED = 44
    TASK_IDS_SHORT = 45
    # 50: the loop breaker.
    LOOP_DETECTED = 50
    # 60 and up: refunds, debits and delegation.
    REFUND_EXCEEDS = 60
    NOT_A_CHILD = 61


class Flag(IntEnum):
    """Bits of the warnings field returned by charge, hold and capture."""

    LOW_BALANCE = 1
    DAILY_NEAR = 2
    # Set on exactly the one call whose write took the balance below the threshold.
    LOW_CROSSED = 4
    # Over 80 % of a rolling-hour, weekly or monthly cap, or of a call cap (lua/_lib.lua
    # walls_near), this call counted.
    HOURLY_NEAR = 8
    WEEKLY_NEAR = 16
    MONTHLY_NEAR = 32
    CALLS_NEAR = 64
