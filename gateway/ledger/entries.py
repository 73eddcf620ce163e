"""Ledger entries: one per stream event, parsed strictly (a bad entry is a poisoned one)."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from gateway.store.resp import reply_text as _s

MONEY_KINDS = frozenset({"grant", "fund", "charge", "hold", "capture", "release", "expire",
                         "refund", "debit", "transfer_out", "transfer_in"})
CONFIG_KINDS = frozenset({"agent", "limits", "freeze", "unfreeze", "key_add", "key_revoke",
                          "tool", "tool_delete"})
# Fields kept as columns; anything else of a config event goes to the JSON `data` column.
COLUMNS = ("id", "at", "kind", "agent", "tool", "category", "amount", "balance_after", "held",
           "idem", "ih", "hold_id", "expires_at", "meta", "ref", "reason", "task",
           "shadow")


class PoisonedEntry(ValueError):
    """A stream entry that can never become a ledger row; it goes to dead_letters."""


class LedgerEntry(NamedTuple):
    """One ledger row; the field order is the column order of ``ledger_entries``."""

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
    # Refunds: the refunded charge's id; transfers: the other agent of the move.
    ref: str | None = None
    reason: str | None = None  # refunds and debits: the admin's words
    task: str | None = None  # the task the call counted against (tasks, budget envelopes)
    # The limit the agent's shadow limits would have refused the call with (charges, holds).
    shadow_refusal: str | None = None


def _int(raw: str | None, name: str) -> int | None:
    if not raw:
        return None
    # Digits only (str.isdigit alone admits non-ASCII digits; int() admits " 5", "+5", "1_0").
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    raise PoisonedEntry(f"{name}={raw!r} is not a non-negative integer")


def _fields(raw: list[Any]) -> dict[str, str]:
    try:
        it = iter(raw)
        if raw and isinstance(raw[0], str):
            return dict(zip(it, it, strict=True))
        return {_s(k): _s(v) for k, v in zip(it, it, strict=True)}
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoisonedEntry(f"unreadable fields: {exc}") from None


def parse_entry(stream: str, stream_id: str, raw: list[Any]) -> LedgerEntry:
    """A LedgerEntry from one XREADGROUP entry; PoisonedEntry if it cannot be one."""
    fields = _fields(raw)
    g = fields.get
    ms, _, seq = stream_id.partition("-")
    entry_id = g("id")
    if not (ms.isdigit() and seq.isdigit()) or not entry_id:
        raise PoisonedEntry("missing id or bad stream position")
    kind = g("kind") or ""
    at_ms = _int(g("at"), "at")
    amount = _int(g("amount"), "amount")
    if at_ms is None:
        raise PoisonedEntry("missing at")
    agent = g("agent") or None
    if kind in MONEY_KINDS:
        if amount is None or agent is None:
            raise PoisonedEntry(f"{kind} without amount or agent")
        data = None
    elif kind in CONFIG_KINDS:
        rest = {k: v for k, v in fields.items() if k not in COLUMNS}
        data = orjson.dumps(rest).decode() if rest else None
    else:
        raise PoisonedEntry(f"unknown kind {kind!r}")
    # The writer parses every row: absent integers skip _int's call, and the tuple is made
    # directly (what LedgerEntry(...) does, without its Python-level __new__).
    balance_after, held, expires_at = g("balance_after"), g("held"), g("expires_at")
    return _new_entry(LedgerEntry, (
        entry_id, stream, int(ms), int(seq), at_ms, kind, agent,
        g("tool") or None, g("category") or None, amount,
        _int(balance_after, "balance_after") if balance_after else None,
        _int(held, "held") if held else None, g("idem") or None, g("ih") or None,
        g("hold_id") or None, _int(expires_at, "expires_at") if expires_at else None,
        g("meta") or None, data, g("ref") or None,
        g("reason") or None, g("task") or None, g("shadow") or None))


_new_entry = tuple.__new__
