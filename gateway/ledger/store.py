"""The store interface both engines implement, and the rows each event becomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway.ledger import schema
from gateway.ledger.entries import MONEY_KINDS, LedgerEntry

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.ledger.chain import ChainReport, Head, Position

Statement = tuple[str, tuple[Any, ...]]


class StoreUnavailable(Exception):
    """The ledger database cannot be reached; the batch stays pending and is retried."""


@dataclass(frozen=True)
class OpenHold:
    agent: str
    hold_id: str
    tool: str
    category: str
    amount: int
    at_ms: int
    expires_at_ms: int


@dataclass(frozen=True)
class Recovery:
    """Everything Redis needs back, read from the ledger in one go."""

    partitions: int | None
    agents: list[tuple[str, int | None, bool, dict[str, str]]]  # name, created, frozen, limits
    keys: list[tuple[str, str, str]]  # key_id, agent, key_hash (live keys only)
    tools: list[tuple[str, int, str, str, str | None, str | None]]
    balances: dict[str, int]
    open_holds: list[OpenHold]
    spent_today: list[tuple[str, str, int]]  # agent, category, micros
    idempotent: list[tuple[Any, ...]]
    # agent, limit, calls, micros: the would-be refusals of shadow limits (schema.SHADOW_SUMS)
    shadow_sums: list[tuple[str, str, int, int]] = field(default_factory=list)


class LedgerStore(Protocol):
    async def migrate(self) -> None: ...

    async def write(self, entries: list[LedgerEntry],
                    chain_from: Mapping[str, Position] | None = None) -> int:
        """Insert the entries and apply their configuration in one transaction;
        returns how many were new. Raises StoreUnavailable when the database is down.

        ``chain_from`` names streams (label -> the position of the batch's first entry of
        that stream) below which every stream entry is settled: their rows are chained in
        the same transaction (see ``chain.link_batch``)."""
        ...

    async def dead_letter(self, stream: str, stream_id: str, fields: str, error: str) -> None: ...

    async def entries(self, agent: str, limit: int, before: str | None = None,
                      kind: str | None = None, tool: str | None = None) -> list[LedgerEntry]: ...

    async def agent_totals(self) -> dict[str, int]: ...

    async def query(self, sql: str, params: list[object]) -> list[tuple[Any, ...]]:
        """Rows of a read-only query written with ``?`` placeholders (reports)."""
        ...

    async def open_holds(self) -> list[OpenHold]: ...

    async def recovery(self, since_ms: int, idempotent_since_ms: int) -> Recovery: ...

    async def set_meta(self, name: str, value: str) -> None: ...

    async def meta(self, name: str) -> str | None:
        """A value of the meta table (e.g. "partitions"), None when it is not set."""
        ...

    async def identity(self) -> str | None:
        """The id of the Redis store this ledger describes, or None before one is set."""
        ...

    async def claim_identity(self, store_id: str) -> str:
        """Set the identity unless one is set already; returns the one kept."""
        ...

    async def count(self, table: str = "ledger_entries") -> int: ...

    async def entry(self, entry_id: str) -> LedgerEntry | None:
        """One row by its entry id (a charge's charge_id), None when it is not (yet) there."""
        ...

    async def seal(self, floors: dict[str, tuple[int, int]]) -> tuple[int, bool]:
        """Chain each stream's rows below its floor (stream label -> position) in one
        transaction (gateway/ledger/chain.py); returns (rows sealed, whether a stream has
        more to seal than one pass takes)."""
        ...

    async def verify_chains(self) -> list[ChainReport]:
        """Recompute every stream's chain inside one read snapshot."""
        ...

    async def chain_heads(self) -> list[Head]:
        """Each stream's recorded head (last sealed row and its hash), by stream name."""
        ...

    async def close(self) -> None: ...


def entry_row(e: LedgerEntry) -> tuple[Any, ...]:
    return e  # a LedgerEntry is already the row, in column order


def config_statements(e: LedgerEntry) -> list[Statement]:
    """The configuration upserts of one event (none for money events)."""
    if e.kind in MONEY_KINDS:
        return []  # most rows: skip the parse and the position below
    data: dict[str, str] = orjson.loads(e.data) if e.data else {}
    pos = schema.position(e.stream_ms, e.stream_seq)
    if e.kind == "agent":
        low = data.get("low", "0")
        limits = orjson.dumps({"low": low} if low not in ("", "0") else {}).decode()
        return [(schema.UPSERT_AGENT_CREATED, (e.agent, e.at_ms, pos, limits, pos)),
                (schema.UPSERT_KEY, (data["key_id"], e.agent, data["key_hash"], False, pos))]
    if e.kind == "limits":
        state = {k[2:]: v for k, v in data.items() if k.startswith("l.")}
        return [(schema.UPSERT_LIMITS, (e.agent, orjson.dumps(state).decode(), pos))]
    if e.kind in ("freeze", "unfreeze"):
        return [(schema.UPSERT_FROZEN, (e.agent, e.kind == "freeze", pos))]
    if e.kind in ("key_add", "key_revoke"):
        return [(schema.UPSERT_KEY, (data["key_id"], e.agent, data["key_hash"],
                                     e.kind == "key_revoke", pos))]
    if e.kind == "tool":
        return [(schema.UPSERT_TOOL, (e.tool, int(data["price"]), e.category,
                                      data["pricing"], data.get("upstream") or None,
                                      data.get("headers") or None, False, pos))]
    if e.kind == "tool_delete":
        return [(schema.UPSERT_TOOL, (e.tool, 0, "", "fixed", None, None, True, pos))]
    return []


def row_to_entry(row: Any) -> LedgerEntry:
    return LedgerEntry._make(row)


ENTRY_COLUMNS = ("entry_id, stream, stream_ms, stream_seq, at_ms, kind, agent, tool, category, "
                 "amount, balance_after, held, idempotency_key, idempotency_hash, hold_id, "
                 "expires_at_ms, metadata, data, ref, reason, task, shadow_refusal")


def entries_query(agent: str, limit: int, before_position: tuple[int, int] | None,
                  kind: str | None, tool: str | None) -> tuple[str, list[Any]]:
    """SQL (with ? placeholders) and parameters of one agent's ledger page, newest first."""
    where: list[str] = ["agent = ?"]
    params: list[Any] = [agent]
    if before_position is not None:
        where.append("(stream_ms < ? OR (stream_ms = ? AND stream_seq < ?))")
        params += [before_position[0], before_position[0], before_position[1]]
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    else:
        where.append("kind IN ('grant', 'fund', 'charge', 'hold', 'capture', 'release', "
                     "'expire', 'refund', 'debit', 'transfer_out', 'transfer_in')")
    if tool is not None:
        where.append("tool = ?")
        params.append(tool)
    sql = (f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE {' AND '.join(where)} "
           "ORDER BY stream_ms DESC, stream_seq DESC LIMIT ?")
    return sql, [*params, limit]
