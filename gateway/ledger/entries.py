"""Ledger entries: one per stream event, parsed strictly (a bad entry is a poisoned one)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

MONEY_KINDS = frozenset({"grant", "fund", "charge", "hold", "capture", "release", "expire"})
CONFIG_KINDS = frozenset({"agent", "limits", "freeze", "unfreeze", "key_add", "key_revoke",
                          "tool", "tool_delete"})
# Fields kept as columns; anything else of a config event goes to the JSON `data` column.
COLUMNS = ("id", "at", "kind", "agent", "tool", "category", "amount", "balance_after", "held",
           "idem", "ih", "hold_id", "expires_at", "meta")
_INT_RE = re.compile(r"0|-?[1-9][0-9]{0,17}")
_STREAM_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


class PoisonedEntry(ValueError):
    """A stream entry that can never become a ledger row; it goes to dead_letters."""


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    stream: str  # the partition tag ("p07") or "tools"
    stream_ms: int
    stream_seq: int
    at_ms: int
    kind: str
    agent: str | None
    tool: str | None
    category: str | None
    amount: int | None  # micros
    balance_after: int | None  # micros
    held: int | None  # micros: the hold's amount, on capture events
    idempotency_key: str | None
    idempotency_hash: str | None
    hold_id: str | None
    expires_at_ms: int | None
    metadata: str | None  # JSON text, as the caller gave it
    data: str | None  # JSON text: the rest of a configuration event


def _opt_int(fields: dict[str, str], name: str) -> int | None:
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    if not _INT_RE.fullmatch(raw):
        raise PoisonedEntry(f"{name}={raw!r} is not an integer")
    return int(raw)


def _opt_text(fields: dict[str, str], name: str) -> str | None:
    value = fields.get(name)
    return value if value else None


def parse_entry(stream: str, stream_id: str, raw: list[Any]) -> LedgerEntry:
    """A LedgerEntry from one XREADGROUP entry; PoisonedEntry if it cannot be one."""
    try:
        it = iter(raw)
        fields = {_s(k): _s(v) for k, v in zip(it, it, strict=True)}
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoisonedEntry(f"unreadable fields: {exc}") from None
    position = _STREAM_ID_RE.fullmatch(stream_id)
    kind = fields.get("kind", "")
    if position is None or not fields.get("id") or kind not in MONEY_KINDS | CONFIG_KINDS:
        raise PoisonedEntry(f"missing id or unknown kind {kind!r}")
    at_ms = _opt_int(fields, "at")
    if at_ms is None:
        raise PoisonedEntry("missing at")
    if kind in MONEY_KINDS and (_opt_int(fields, "amount") is None or not fields.get("agent")):
        raise PoisonedEntry(f"{kind} without amount or agent")
    rest = {k: v for k, v in fields.items() if k not in COLUMNS}
    return LedgerEntry(
        entry_id=fields["id"], stream=stream, stream_ms=int(position.group(1)),
        stream_seq=int(position.group(2)), at_ms=at_ms, kind=kind,
        agent=_opt_text(fields, "agent"), tool=_opt_text(fields, "tool"),
        category=_opt_text(fields, "category"), amount=_opt_int(fields, "amount"),
        balance_after=_opt_int(fields, "balance_after"), held=_opt_int(fields, "held"),
        idempotency_key=_opt_text(fields, "idem"), idempotency_hash=_opt_text(fields, "ih"),
        hold_id=_opt_text(fields, "hold_id"), expires_at_ms=_opt_int(fields, "expires_at"),
        metadata=_opt_text(fields, "meta"),
        data=orjson.dumps(rest).decode() if rest else None)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def balance_delta(entry: LedgerEntry) -> int:
    """How the entry moved the agent's available balance, in micros."""
    amount = entry.amount or 0
    if entry.kind in ("grant", "fund", "release", "expire"):
        return amount
    if entry.kind in ("charge", "hold"):
        return -amount
    if entry.kind == "capture":
        return (entry.held or 0) - amount  # the hold's rest comes back
    return 0
