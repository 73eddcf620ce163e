"""Typed results of the gateway's answers: small frozen objects, money as ``Decimal``.

Each keeps the answer it was read from in ``raw`` (fields a newer gateway adds are there
before the SDK knows them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

Money = Decimal | str | int
"""An amount the SDK accepts: Decimal, a decimal string or whole tokens; never a float."""


def to_amount(value: Money) -> str:
    """The wire form of an amount: a plain decimal string (never an exponent, never float)."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, str, int)):
        raise TypeError(f"an amount is a Decimal, a decimal string or an int, not "
                        f"{type(value).__name__} (floats are not exact)")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _money(value: Any) -> Decimal:
    return Decimal(value) if value is not None else Decimal(0)


def _opt_money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _warnings(answer: dict[str, Any]) -> tuple[str, ...]:
    return tuple(answer.get("warnings") or ())


@dataclass(frozen=True, slots=True)
class Charge:
    """A call paid: ``cost`` taken, ``balance`` what is left to spend."""

    charge_id: str
    tool: str
    category: str
    cost: Decimal
    balance: Decimal
    warnings: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Charge:
        return cls(a["charge_id"], a.get("tool", ""), a.get("category", ""), _money(a["cost"]),
                   _money(a["balance"]), _warnings(a), a)


@dataclass(frozen=True, slots=True)
class Capture:
    """A hold captured: ``cost`` charged, ``released`` given back to the balance."""

    charge_id: str
    cost: Decimal
    released: Decimal
    balance: Decimal
    warnings: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Capture:
        return cls(a["charge_id"], _money(a["cost"]), _money(a.get("released")),
                   _money(a["balance"]), _warnings(a), a)


@dataclass(frozen=True, slots=True)
class Release:
    released: Decimal
    balance: Decimal
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Release:
        return cls(_money(a["released"]), _money(a["balance"]), a)


@dataclass(frozen=True, slots=True)
class HoldInfo:
    """What the gateway answered for a new hold (``amount`` set aside until ``expires_at``)."""

    hold_id: str
    tool: str
    amount: Decimal
    expires_at: datetime | None
    balance: Decimal
    warnings: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> HoldInfo:
        return cls(a["hold_id"], a.get("tool", ""), _money(a["amount"]),
                   _time(a.get("expires_at")), _money(a["balance"]), _warnings(a), a)


@dataclass(frozen=True, slots=True)
class Status:
    """``GET /v1/balance``: what the agent may still spend and its caps."""

    agent: str
    balance: Decimal
    held: Decimal
    spent_today: Decimal
    limits: dict[str, Any]
    warnings: tuple[str, ...]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Status:
        return cls(a["agent"], _money(a["balance"]), _money(a.get("held")),
                   _money(a.get("spent_today")), dict(a.get("limits") or {}), _warnings(a), a)


@dataclass(frozen=True, slots=True)
class AgentSummary:
    """One row of ``GET /v1/agents`` (admin)."""

    agent: str
    balance: Decimal
    held: Decimal
    spent_today: Decimal
    frozen: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> AgentSummary:
        return cls(a["agent"], _money(a["balance"]), _money(a.get("held")),
                   _money(a.get("spent_today")), bool(a.get("frozen")), a)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger row (newest first in ``ledger()``); ``amount`` is unsigned, see ``kind``."""

    entry_id: str
    at: datetime | None
    kind: str
    tool: str | None
    category: str | None
    amount: Decimal | None
    balance_after: Decimal | None
    idempotency_key: str | None
    hold_id: str | None
    metadata: Any
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> LedgerEntry:
        return cls(a["entry_id"], _time(a.get("at")), a["kind"], a.get("tool"),
                   a.get("category"), _opt_money(a.get("amount")),
                   _opt_money(a.get("balance_after")), a.get("idempotency_key"),
                   a.get("hold_id"), a.get("metadata"), a)


@dataclass(frozen=True, slots=True)
class Refund:
    """A refund (admin): ``amount`` of charge ``charge_id`` given back; ``balance`` after."""

    refund_id: str
    charge_id: str
    agent: str
    amount: Decimal
    balance: Decimal
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Refund:
        return cls(a["refund_id"], a["charge_id"], a.get("agent", ""), _money(a["amount"]),
                   _money(a["balance"]), a)


@dataclass(frozen=True, slots=True)
class Debit:
    """A debit (admin): ``amount`` taken back from ``agent``; ``balance`` after."""

    entry_id: str
    agent: str
    amount: Decimal
    balance: Decimal
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Debit:
        return cls(a["entry_id"], a["agent"], _money(a["amount"]), _money(a["balance"]), a)


@dataclass(frozen=True, slots=True)
class Child:
    """A sub-agent funded by ``parent``: its key (shown once; None on a replayed creation)
    and ``balance``, the amount moved to it."""

    agent: str
    parent: str
    api_key: str | None
    key_id: str
    balance: Decimal
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Child:
        return cls(a["agent"], a["parent"], a.get("api_key"), a["key_id"],
                   _money(a["balance"]), a)


@dataclass(frozen=True, slots=True)
class Reclaim:
    """``amount`` moved from sub-agent ``agent`` back to ``parent``; ``balance``: the
    child's after."""

    agent: str
    parent: str
    amount: Decimal
    balance: Decimal
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Reclaim:
        return cls(a["agent"], a["parent"], _money(a["amount"]), _money(a["balance"]), a)


@dataclass(frozen=True, slots=True)
class Invoked:
    """The upstream's answer to ``invoke``; ``charge_id`` and ``balance`` are set when the
    call was charged (an upstream 2xx), ``None`` when the hold was released."""

    status: int
    content: bytes
    content_type: str | None
    charge_id: str | None
    balance: Decimal | None

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.content)


def _counts(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (value or {}).items()}


@dataclass(frozen=True, slots=True)
class Task:
    """A task (budget envelope): calls naming ``task_id`` count against ``budget``; with its
    summary (spent and calls by tool and category). ``holds_released`` after a close."""

    task_id: str
    name: str | None
    budget: Decimal
    spent: Decimal
    held: Decimal
    calls: int
    state: str  # open, closed or expired
    expires_at: datetime | None
    max_calls: dict[str, int]
    spent_by_tool: dict[str, Decimal]
    spent_by_category: dict[str, Decimal]
    calls_by_tool: dict[str, int]
    calls_by_category: dict[str, int]
    holds_released: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def remaining(self) -> Decimal:
        return max(self.budget - self.spent - self.held, Decimal(0))

    @classmethod
    def from_answer(cls, a: dict[str, Any]) -> Task:
        return cls(a["task_id"], a.get("name"), _money(a["budget"]), _money(a.get("spent")),
                   _money(a.get("held")), int(a.get("calls") or 0), a.get("state", "open"),
                   _time(a.get("expires_at")), _counts(a.get("max_calls")),
                   {k: Decimal(v) for k, v in (a.get("spent_by_tool") or {}).items()},
                   {k: Decimal(v) for k, v in (a.get("spent_by_category") or {}).items()},
                   _counts(a.get("calls_by_tool")), _counts(a.get("calls_by_category")),
                   a.get("holds_released"), a)
