"""PostgreSQL store (asyncpg): BIGINT micros, JSONB metadata, batches by COPY.

A batch is COPYed into a session temp table and moved with one INSERT ... SELECT ...
ON CONFLICT (entry_id) DO NOTHING, all in one transaction with its configuration upserts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import asyncpg
import orjson

from gateway.ledger import chain, schema
from gateway.ledger.entries import LedgerEntry
from gateway.ledger.store import (
    ENTRY_COLUMNS,
    OpenHold,
    Recovery,
    StoreUnavailable,
    config_statements,
    entries_query,
    row_to_entry,
)

POOL_SIZE_MAX = 4
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 60.0
T = TypeVar("T")
UNAVAILABLE = (OSError, ConnectionError, TimeoutError, asyncpg.PostgresConnectionError,
               asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
               asyncpg.AdminShutdownError)


def dollar(sql: str) -> str:
    """Rewrite ``?`` placeholders as ``$1, $2, ...``."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class PostgresStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def _with(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=POOL_SIZE_MAX, timeout=CONNECT_TIMEOUT_S,
                    command_timeout=COMMAND_TIMEOUT_S)
            async with self._pool.acquire() as conn:
                return await fn(conn)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    async def migrate(self) -> None:
        await self._with(_migrate)

    async def write(self, entries: list[LedgerEntry],
                    chain_from: Mapping[str, chain.Position] | None = None) -> int:
        return await self._with(lambda conn: _write(conn, entries, chain_from))

    async def dead_letter(self, stream: str, stream_id: str, fields: str, error: str) -> None:
        await self._with(lambda conn: conn.execute(
            dollar(schema.INSERT_DEAD_LETTER), stream, stream_id, fields, error,
            int(time.time() * 1000)))

    async def entries(self, agent: str, limit: int, before: str | None = None,
                      kind: str | None = None, tool: str | None = None) -> list[LedgerEntry]:
        return await self._with(lambda conn: _entries(conn, agent, limit, before, kind, tool))

    async def agent_totals(self) -> dict[str, int]:
        rows = await self._with(lambda conn: conn.fetch(schema.AGENT_TOTALS))
        return {r[0]: int(r[1]) for r in rows}

    async def query(self, sql: str, params: list[object]) -> list[tuple[Any, ...]]:
        rows = await self._with(lambda conn: conn.fetch(dollar(sql), *params))
        return [tuple(r) for r in rows]

    async def open_holds(self) -> list[OpenHold]:
        rows = await self._with(lambda conn: conn.fetch(schema.OPEN_HOLDS))
        return [OpenHold(*r) for r in rows]

    async def recovery(self, since_ms: int, idempotent_since_ms: int) -> Recovery:
        return await self._with(lambda conn: _recovery(conn, since_ms, idempotent_since_ms))

    async def set_meta(self, name: str, value: str) -> None:
        await self._with(lambda conn: conn.execute(
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            name, value))

    async def meta(self, name: str) -> str | None:
        value = await self._with(lambda conn: conn.fetchval(
            "SELECT value FROM meta WHERE name = $1", name))
        return None if value is None else str(value)

    async def identity(self) -> str | None:
        value = await self._with(lambda conn: conn.fetchval(schema.SELECT_IDENTITY))
        return None if value is None else str(value)

    async def claim_identity(self, store_id: str) -> str:
        async def claim(conn: asyncpg.Connection) -> str:
            await conn.execute(dollar(schema.CLAIM_IDENTITY), store_id, int(time.time() * 1000))
            return str(await conn.fetchval(schema.SELECT_IDENTITY))

        return await self._with(claim)

    async def count(self, table: str = "ledger_entries") -> int:
        assert table in ("ledger_entries", "dead_letters", "agents", "tools", "agent_keys")
        value = await self._with(lambda conn: conn.fetchval(f"SELECT COUNT(*) FROM {table}"))
        return int(value)

    async def entry(self, entry_id: str) -> LedgerEntry | None:
        row = await self._with(lambda conn: conn.fetchrow(
            f"SELECT {ENTRY_SELECT} FROM ledger_entries WHERE entry_id = $1", entry_id))
        return None if row is None else row_to_entry(tuple(row))

    async def seal(self, floors: dict[str, tuple[int, int]]) -> tuple[int, bool]:
        return await self._with(lambda conn: _seal(conn, floors))

    async def verify_chains(self) -> list[chain.ChainReport]:
        return await self._with(_verify_chains)

    async def chain_heads(self) -> list[chain.Head]:
        rows = await self._with(lambda conn: conn.fetch(
            chain.SELECT_HEADS + " ORDER BY stream"))
        return [chain.head_of(r[0], tuple(r)) for r in rows]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def _migrate(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        # One migrator at a time, also with several writers starting together.
        await conn.execute("SELECT pg_advisory_xact_lock(7306157)")
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                           "PRIMARY KEY, applied_at_ms BIGINT NOT NULL)")
        done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, statements in enumerate(schema.MIGRATIONS, start=1):
            if version in done:
                continue
            for sql in statements:
                await conn.execute(sql.format(json="JSONB"))
            await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version,
                               int(time.time() * 1000))


COPY_COLUMNS = [c.strip() for c in ENTRY_COLUMNS.split(",")]


async def _write(conn: asyncpg.Connection, entries: list[LedgerEntry],
                 chain_from: Mapping[str, chain.Position] | None = None) -> int:
    async with conn.transaction():
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS ledger_in "
                           "(LIKE ledger_entries) ON COMMIT DELETE ROWS")
        inserted = await _insert_linked(conn, entries, chain_from) if chain_from else None
        if inserted is None:  # nothing to chain, or a row was there already
            inserted = await _insert(conn, entries)
        for e in entries:
            for sql, params in config_statements(e):
                await conn.execute(dollar(sql), *params)
    return inserted


async def _insert(conn: asyncpg.Connection, entries: list[LedgerEntry],
                  links: list[tuple[str | None, str | None]] | None = None) -> int:
    """COPY the rows (with their links, if given) and move the new ones into the ledger."""
    records: list[tuple[Any, ...]] = list(entries) if links is None else [
        (*e, *link) for e, link in zip(entries, links, strict=True)]
    columns = COPY_COLUMNS if links is None else LINKED_COLUMNS
    await conn.copy_records_to_table("ledger_in", records=records, columns=columns)
    select = ", ".join(columns)
    status = await conn.execute(f"INSERT INTO ledger_entries ({select}) SELECT {select} "
                                "FROM ledger_in ON CONFLICT (entry_id) DO NOTHING")
    return int(status.split()[-1])


class _RowWasThere(Exception):
    """A row to chain was in the ledger already: undo the linked insert."""


async def _insert_linked(conn: asyncpg.Connection, entries: list[LedgerEntry],
                         chain_from: Mapping[str, chain.Position]) -> int | None:
    """Insert the rows chained from the rows in hand (see chain.link_batch), under the
    sealing lock; None, with nothing written, when a row to chain was there already."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", SEAL_LOCK)
    heads = {r[0]: chain.head_of(r[0], tuple(r)) for r in await conn.fetch(chain.SELECT_HEADS)}
    below = await _below(conn, chain_from, heads)
    # The hash covers JSON columns as PostgreSQL gives them back (JSONB's text form).
    linked = chain.link_batch(await _as_stored(conn, entries), chain_from, heads, below)
    try:
        async with conn.transaction():  # a savepoint
            for sealed in linked.below:
                prevs, digests, ids = (list(c) for c in zip(*sealed.links, strict=True))
                await conn.execute(UPDATE_LINKS, ids, prevs, digests)
            inserted = await _insert(conn, entries, linked.links)
            if inserted != len(entries):
                raise _RowWasThere
            await conn.executemany(dollar(chain.UPSERT_HEAD),
                                   [chain.head_params(h) for h in linked.heads])
    except _RowWasThere:  # the savepoint's rollback took the copied rows back out too
        return None
    return inserted


async def _below(conn: asyncpg.Connection, chain_from: Mapping[str, chain.Position],
                 heads: Mapping[str, chain.Head]) -> dict[str, list[tuple[Any, ...]]]:
    """Each stream's rows after its head and below the batch's first position, in one
    query (the rows seal_query reads, for every stream at once)."""
    names = list(chain_from)
    starts = [heads.get(n, chain.Head(n)).position for n in names]
    rows = await conn.fetch(BELOW_SQL, names, [p[0] for p in starts], [p[1] for p in starts],
                            [chain_from[n][0] for n in names], [chain_from[n][1] for n in names],
                            chain.SEAL_ROWS_MAX)
    below: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        below.setdefault(r[0], []).append(tuple(r)[1:])
    return below


async def _as_stored(conn: asyncpg.Connection, entries: list[LedgerEntry]
                     ) -> list[LedgerEntry]:
    """The entries with their JSON columns in JSONB's text form (one round trip)."""
    if all(e.metadata is None and e.data is None for e in entries):
        return entries
    texts = await conn.fetchval(AS_JSONB_TEXT, [v for e in entries for v in (e.metadata, e.data)])
    return [e._replace(metadata=texts[2 * i], data=texts[2 * i + 1])
            for i, e in enumerate(entries)]


async def _entries(conn: asyncpg.Connection, agent: str, limit: int, before: str | None,
                   kind: str | None, tool: str | None) -> list[LedgerEntry]:
    position = None
    if before is not None:
        row = await conn.fetchrow("SELECT stream_ms, stream_seq FROM ledger_entries "
                                  "WHERE entry_id = $1", before)
        if row is None:
            return []
        position = (int(row[0]), int(row[1]))
    sql, params = entries_query(agent, limit, position, kind, tool)
    rows = await conn.fetch(dollar(sql).replace("metadata, data", "metadata::text, data::text"),
                            *params)
    return [row_to_entry(tuple(r)) for r in rows]


async def _recovery(conn: asyncpg.Connection, since_ms: int, idempotent_since_ms: int
                    ) -> Recovery:
    meta = {r[0]: r[1] for r in await conn.fetch("SELECT name, value FROM meta")}
    agents = [(r[0], r[1], bool(r[2]), orjson.loads(r[3])) for r in await conn.fetch(
        "SELECT agent, created_at_ms, frozen, limits FROM agents WHERE created_pos != ''")]
    keys = [tuple(r) for r in await conn.fetch(
        "SELECT key_id, agent, key_hash FROM agent_keys WHERE NOT revoked")]
    tools = [tuple(r) for r in await conn.fetch(
        "SELECT tool, price, category, pricing, upstream, headers FROM tools WHERE NOT deleted")]
    balances = {r[0]: int(r[1]) for r in await conn.fetch(schema.LAST_BALANCES)}
    holds = [OpenHold(*r) for r in await conn.fetch(schema.OPEN_HOLDS)]
    spent = [(r[0], r[1], int(r[2])) for r in await conn.fetch(dollar(schema.SPENT_SINCE),
                                                               since_ms, since_ms, since_ms)]
    idem = [tuple(r) for r in await conn.fetch(dollar(schema.IDEMPOTENT_SINCE),
                                               idempotent_since_ms)]
    partitions = int(meta["partitions"]) if "partitions" in meta else None
    shadow = [(r[0], r[1], int(r[2]), int(r[3])) for r in await conn.fetch(schema.SHADOW_SUMS)]
    return Recovery(partitions, agents, keys, tools, balances, holds, spent, idem, shadow)


# The entry columns with the JSON ones as text, as the rows are read everywhere.
ENTRY_SELECT = ", ".join(c + "::text" if c in chain.JSON_COLUMNS else c
                         for c in chain.CHAIN_COLUMNS)
SEAL_SQL = dollar(chain.seal_query("::text"))
CHAIN_SQL = dollar(chain.chain_query("::text"))
SEAL_LOCK = 7306158  # pg_advisory_xact_lock key: one sealing pass at a time
VERIFY_PREFETCH = 5000
# One statement for a whole pass's links.
LINKED_COLUMNS = [*COPY_COLUMNS, "prev_hash", "hash"]
AS_JSONB_TEXT = """SELECT array(SELECT x::jsonb::text FROM unnest($1::text[]) WITH ORDINALITY
    AS t(x, n) ORDER BY n)"""
BELOW_SQL = f"""SELECT u.stream, e.* FROM unnest($1::text[], $2::bigint[], $3::bigint[],
        $4::bigint[], $5::bigint[]) WITH ORDINALITY AS u(stream, head_ms, head_seq, first_ms,
        first_seq, n)
    CROSS JOIN LATERAL (SELECT entry_id AS key, {ENTRY_SELECT}, hash FROM ledger_entries
        WHERE stream = u.stream AND (stream_ms, stream_seq) > (u.head_ms, u.head_seq)
        AND (stream_ms, stream_seq) < (u.first_ms, u.first_seq)
        ORDER BY stream_ms, stream_seq LIMIT $6) e
    ORDER BY u.n, e.stream_ms, e.stream_seq"""
UPDATE_LINKS = """UPDATE ledger_entries e SET prev_hash = u.prev_hash, hash = u.hash
    FROM unnest($1::text[], $2::text[], $3::text[]) AS u(entry_id, prev_hash, hash)
    WHERE e.entry_id = u.entry_id"""


async def _seal(conn: asyncpg.Connection, floors: dict[str, tuple[int, int]]
                ) -> tuple[int, bool]:
    sealed_total, more = 0, False
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SEAL_LOCK)
        for stream, floor in floors.items():
            head = chain.head_of(stream, await conn.fetchrow(dollar(chain.SELECT_HEAD), stream))
            rows = [tuple(r) for r in await conn.fetch(SEAL_SQL, stream, *head.position,
                                                       *floor, chain.SEAL_ROWS_MAX)]
            sealed = chain.plan_seal(head, rows)
            if sealed is None or not sealed.links:
                continue
            prevs, digests, ids = (list(column) for column in zip(*sealed.links, strict=True))
            await conn.execute(UPDATE_LINKS, ids, prevs, digests)
            await conn.execute(dollar(chain.UPSERT_HEAD), *chain.head_params(sealed.head))
            sealed_total += len(sealed.links)
            more = more or len(rows) == chain.SEAL_ROWS_MAX
    return sealed_total, more


async def _verify_chains(conn: asyncpg.Connection) -> list[chain.ChainReport]:
    reports: list[chain.ChainReport] = []
    # One snapshot for every chain, whatever the writers commit meanwhile.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        heads = {r[0]: chain.head_of(r[0], r) for r in await conn.fetch(chain.SELECT_HEADS)}
        for stream in sorted(r[0] for r in await conn.fetch(chain.STREAMS)):
            report = chain.ChainReport(stream, heads.get(stream, chain.Head(stream)))
            async for row in conn.cursor(CHAIN_SQL, stream, prefetch=VERIFY_PREFETCH):
                report.feed(tuple(row))
                if report.problem is not None:
                    break
            report.finish()
            reports.append(report)
    return reports
