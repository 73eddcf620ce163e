"""Typed results of the engine's operations. Amounts are integer micros."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gateway.store.codes import Flag


class SecretSettings(Protocol):
    """What sealing upstream credentials needs of the configuration (passed in: the domain
    does not read the environment)."""

    @property
    def secret_key(self) -> str | None: ...

    @property
    def uses_embedded_redis(self) -> bool: ...

    @property
    def data_dir(self) -> Path: ...


class DomainSettings(SecretSettings, Protocol):
    """The values the domain is given at its start (gateway.config.Settings has them)."""

    @property
    def partitions(self) -> int: ...

    @property
    def amount_max_micros(self) -> int: ...

    @property
    def signup_grant_micros(self) -> int: ...

    @property
    def low_balance_default_micros(self) -> int: ...

    @property
    def test_clock(self) -> bool: ...


# Each warning bit a script returns and its name in answers, in the answers' order.
WARNING_NAMES = ((Flag.LOW_BALANCE, "low_balance"), (Flag.DAILY_NEAR, "daily_near"),
                 (Flag.HOURLY_NEAR, "hourly_near"), (Flag.WEEKLY_NEAR, "weekly_near"),
                 (Flag.MONTHLY_NEAR, "monthly_near"), (Flag.CALLS_NEAR, "calls_near"))


def warnings_of(flags: int) -> tuple[str, ...]:
    """The contract's warning names for the warning bits a script returned."""
    return tuple(name for bit, name in WARNING_NAMES if flags & bit)


def state_warnings(balance_micros: int, low_balance_micros: int | None,
                   spent_today_micros: int, daily_micros: int | None) -> tuple[str, ...]:
    """The warnings of an agent's state: the rules of ``low_flags`` and ``near_flag`` in
    lua/_lib.lua (below low_balance; spent or held today over 80 % of the daily cap)."""
    flags = 0
    if low_balance_micros is not None and balance_micros < low_balance_micros:
        flags |= Flag.LOW_BALANCE
    if daily_micros is not None and spent_today_micros * 5 > daily_micros * 4:
        flags |= Flag.DAILY_NEAR
    return warnings_of(flags)


@dataclass(frozen=True)
class ChargeResult:
    charge_id: str
    agent: str
    tool: str
    category: str
    cost_micros: int
    balance_micros: int
    warnings: tuple[str, ...]
    # True on exactly the one call whose charge took the balance below low_balance.
    low_crossed: bool
    replayed: bool
    # The limit the agent's shadow limits would have refused the call with (None: none).
    shadow_refusal: str | None = None


@dataclass(frozen=True)
class HoldResult:
    hold_id: str
    agent: str
    tool: str
    amount_micros: int
    expires_at_ms: int
    balance_micros: int
    warnings: tuple[str, ...]
    low_crossed: bool
    replayed: bool
    # A fixed-price hold: its capture charges exactly the held price (no cost to name).
    fixed: bool = False
    shadow_refusal: str | None = None  # as ChargeResult's


@dataclass(frozen=True)
class CaptureResult:
    charge_id: str
    hold_id: str
    cost_micros: int
    released_micros: int
    balance_micros: int
    warnings: tuple[str, ...]
    replayed: bool


@dataclass(frozen=True)
class ReleaseResult:
    hold_id: str
    released_micros: int
    balance_micros: int
    replayed: bool


@dataclass(frozen=True)
class FundResult:
    agent: str
    entry_id: str
    balance_micros: int
    replayed: bool


@dataclass(frozen=True)
class AgentCreated:
    agent: str
    api_key: str
    key_id: str
    balance_micros: int
    created_at_ms: int


@dataclass(frozen=True)
class CallCaps:
    """Counts of calls (free ones too) per UTC minute, clock hour and day."""

    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None


@dataclass(frozen=True)
class CategoryLimits:
    per_call_micros: int | None = None
    daily_micros: int | None = None
    # The rolling last 60 minutes, the ISO week and the calendar month (UTC).
    hourly_micros: int | None = None
    weekly_micros: int | None = None
    monthly_micros: int | None = None
    calls: CallCaps = field(default_factory=CallCaps)


@dataclass(frozen=True)
class ToolLimits:
    per_call_micros: int | None = None
    calls: CallCaps = field(default_factory=CallCaps)


@dataclass(frozen=True)
class LoopLimit:
    """The loop breaker: the same tool with the same arguments more than ``repeats`` times
    within ``window_s`` is refused; ``action`` "freeze" also freezes the agent."""

    repeats: int
    window_s: int
    action: str  # "refuse" or "freeze"


@dataclass(frozen=True)
class Limits:
    per_call_micros: int | None = None
    daily_micros: int | None = None
    categories: dict[str, CategoryLimits] = field(default_factory=dict)
    low_balance_micros: int | None = None
    webhook_url: str | None = None
    hourly_micros: int | None = None
    weekly_micros: int | None = None
    monthly_micros: int | None = None
    calls: CallCaps = field(default_factory=CallCaps)
    tools: dict[str, ToolLimits] = field(default_factory=dict)
    # Paid calls (charges, holds) must name an open task.
    require_task: bool = False
    loop: LoopLimit | None = None
    # Shadow limits: evaluated on every call, never refusing (None: the agent has none).
    shadow: Limits | None = None


@dataclass(frozen=True)
class AgentState:
    agent: str
    balance_micros: int
    held_micros: int
    spent_today_micros: int
    spent_today_by_category: dict[str, int]
    frozen: bool
    limits: Limits
    created_at_ms: int
    parent: str | None = None  # a sub-agent's parent


@dataclass(frozen=True)
class Tool:
    name: str
    price_micros: int
    category: str
    pricing: str  # "fixed" or "variable"
    upstream: str | None
    # Secret upstream credentials; never shown by the API.
    upstream_headers: str | None
    # The catalog version of the entry's last change (orders the partitions' copies).
    version: int = 0
