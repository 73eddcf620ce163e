"""SQLite store (the default): WAL, synchronous=FULL, busy_timeout, BEGIN IMMEDIATE.

sqlite3 is blocking, so every call runs on one dedicated thread; the event loop never
waits on the disk.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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
    entry_row,
    row_to_entry,
)

BUSY_TIMEOUT_MS = 10_000
# Streams per statement reading the unsealed rows below a batch (SQLite allows 500 terms
# in a compound SELECT).
BELOW_STREAMS_MAX = 64
IDS_PER_PROBE = 100  # entry ids per statement looking for rows already there
PROBE_IDS = (f"SELECT 1 FROM ledger_entries WHERE entry_id IN ({','.join('?' * IDS_PER_PROBE)})"
             " LIMIT 1")
T = TypeVar("T")


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iou-sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # The timeout first: switching a fresh file to WAL takes a lock that another
            # process starting at the same moment may hold.
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._db = db
        try:
            return fn(self._db)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc

    async def migrate(self) -> None:
        await self._run(_migrate)

    async def write(self, entries: list[LedgerEntry],
                    chain_from: Mapping[str, chain.Position] | None = None) -> int:
        return await self._run(lambda db: _write(db, entries, chain_from))

    async def dead_letter(self, stream: str, stream_id: str, fields: str, error: str) -> None:
        row = (stream, stream_id, fields, error, int(time.time() * 1000))
        await self._run(lambda db: db.execute(schema.INSERT_DEAD_LETTER, row))

    async def entries(self, agent: str, limit: int, before: str | None = None,
                      kind: str | None = None, tool: str | None = None) -> list[LedgerEntry]:
        return await self._run(lambda db: _entries(db, agent, limit, before, kind, tool))

    async def agent_totals(self) -> dict[str, int]:
        rows = await self._run(lambda db: db.execute(schema.AGENT_TOTALS).fetchall())
        return {agent: int(total) for agent, total in rows}

    async def query(self, sql: str, params: list[object]) -> list[tuple[Any, ...]]:
        return await self._run(lambda db: [tuple(r) for r in db.execute(sql, params)])

    async def open_holds(self) -> list[OpenHold]:
        rows = await self._run(lambda db: db.execute(schema.OPEN_HOLDS).fetchall())
        return [OpenHold(*row) for row in rows]

    async def recovery(self, since_ms: int, idempotent_since_ms: int) -> Recovery:
        return await self._run(lambda db: _recovery(db, since_ms, idempotent_since_ms))

    async def set_meta(self, name: str, value: str) -> None:
        await self._run(lambda db: db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, value)))

    async def meta(self, name: str) -> str | None:
        row = await self._run(lambda db: db.execute(
            "SELECT value FROM meta WHERE name = ?", (name,)).fetchone())
        return None if row is None else str(row[0])

    async def identity(self) -> str | None:
        row = await self._run(lambda db: db.execute(schema.SELECT_IDENTITY).fetchone())
        return None if row is None else str(row[0])

    async def claim_identity(self, store_id: str) -> str:
        def claim(db: sqlite3.Connection) -> str:
            db.execute(schema.CLAIM_IDENTITY, (store_id, int(time.time() * 1000)))
            return str(db.execute(schema.SELECT_IDENTITY).fetchone()[0])

        return await self._run(claim)

    async def count(self, table: str = "ledger_entries") -> int:
        assert table in ("ledger_entries", "dead_letters", "agents", "tools", "agent_keys")
        row = await self._run(lambda db: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone())
        return int(row[0])

    async def entry(self, entry_id: str) -> LedgerEntry | None:
        row = await self._run(lambda db: db.execute(
            f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE entry_id = ?",
            (entry_id,)).fetchone())
        return None if row is None else row_to_entry(row)

    async def seal(self, floors: dict[str, tuple[int, int]]) -> tuple[int, bool]:
        return await self._run(lambda db: _seal(db, floors))

    async def verify_chains(self) -> list[chain.ChainReport]:
        return await self._run(_verify_chains)

    async def chain_heads(self) -> list[chain.Head]:
        rows = await self._run(lambda db: db.execute(
            chain.SELECT_HEADS + " ORDER BY stream").fetchall())
        return [chain.head_of(row[0], row) for row in rows]

    async def close(self) -> None:
        def shut(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        if self._db is not None:
            await self._run(shut)
        self._executor.shutdown(wait=True)


def _migrate(db: sqlite3.Connection) -> None:
    # One migrator at a time (the write lock), and what is done is read under it: workers
    # and writers starting together on a fresh file would otherwise both create the tables.
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
                   "KEY, applied_at_ms BIGINT NOT NULL)")
        done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        for version, statements in enumerate(schema.MIGRATIONS, start=1):
            if version in done:
                continue
            for sql in statements:
                db.execute(sql.format(json="TEXT"))
            db.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                       (version, int(time.time() * 1000)))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _write(db: sqlite3.Connection, entries: list[LedgerEntry],
           chain_from: Mapping[str, chain.Position] | None = None) -> int:
    db.execute("BEGIN IMMEDIATE")
    try:
        linked = _insert_linked(db, entries, chain_from) if chain_from else None
        # Nothing to chain, or a row was there already.
        inserted = _insert(db, entries) if linked is None else linked
        for e in entries:
            for sql, params in config_statements(e):
                db.execute(sql, params)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return inserted


def _insert(db: sqlite3.Connection, entries: list[LedgerEntry]) -> int:
    before = db.total_changes
    db.executemany(schema.INSERT_ENTRY, [entry_row(e) for e in entries])
    return db.total_changes - before


def _insert_linked(db: sqlite3.Connection, entries: list[LedgerEntry],
                   chain_from: Mapping[str, chain.Position]) -> int | None:
    """Insert the rows chained from the rows in hand (see chain.link_batch); None, with
    nothing written, when one of them is in the ledger already: its link would then name
    a row this batch did not write. Checked first rather than undone after (a savepoint
    copies every page the batch touches into a sub-journal: measured, it cost more than
    the sealing it serves)."""
    if _any_there(db, [e.entry_id for e in entries]):
        return None
    linked = _link_batch(db, entries, chain_from)
    for sealed in linked.below:
        db.executemany(SEAL_UPDATE, sealed.links)
    before = db.total_changes
    db.executemany(schema.INSERT_LINKED_ENTRY,
                   [(*e, *link) for e, link in zip(entries, linked.links, strict=True)])
    inserted = db.total_changes - before
    db.executemany(chain.UPSERT_HEAD, [chain.head_params(h) for h in linked.heads])
    return inserted


def _any_there(db: sqlite3.Connection, entry_ids: list[str]) -> bool:
    """Whether a row of these ids is in the ledger (read under the write lock: none can
    arrive before the insert). Chunks of one size (the last padded with its own ids), so
    one prepared statement serves every batch."""
    for start in range(0, len(entry_ids), IDS_PER_PROBE):
        chunk = entry_ids[start:start + IDS_PER_PROBE]
        chunk += [chunk[0]] * (IDS_PER_PROBE - len(chunk))
        if db.execute(PROBE_IDS, chunk).fetchone() is not None:
            return True
    return False


def _link_batch(db: sqlite3.Connection, entries: list[LedgerEntry],
                chain_from: Mapping[str, chain.Position]) -> chain.BatchLinks:
    heads = {row[0]: chain.head_of(row[0], row) for row in db.execute(chain.SELECT_HEADS)}
    below: dict[str, list[Any]] = {}
    streams = list(chain_from.items())
    for start in range(0, len(streams), BELOW_STREAMS_MAX):
        params: list[Any] = []
        for stream, first in streams[start:start + BELOW_STREAMS_MAX]:
            params += [stream, stream, *heads.get(stream, chain.Head(stream)).position,
                       *first, chain.SEAL_ROWS_MAX]
        for row in db.execute(_below_sql(len(params) // 7), params):
            below.setdefault(row[0], []).append(row[1:])
    return chain.link_batch(entries, chain_from, heads, below)


@functools.cache
def _below_sql(streams: int) -> str:
    """Each stream's rows after its head and below the batch (SEAL_SQL's rows, behind the
    stream's name), for ``streams`` streams in one statement: a batch touches every
    stream, and one statement each cost more than the few rows they find."""
    one = f"SELECT * FROM (SELECT ? AS chain_stream, {SEAL_SQL[len('SELECT '):]})"
    return " UNION ALL ".join([one] * streams)


def _position_of(db: sqlite3.Connection, entry_id: str) -> tuple[int, int] | None:
    row = db.execute("SELECT stream_ms, stream_seq FROM ledger_entries WHERE entry_id = ?",
                     (entry_id,)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def _entries(db: sqlite3.Connection, agent: str, limit: int, before: str | None,
             kind: str | None, tool: str | None) -> list[LedgerEntry]:
    position = _position_of(db, before) if before is not None else None
    if before is not None and position is None:
        return []
    sql, params = entries_query(agent, limit, position, kind, tool)
    return [row_to_entry(r) for r in db.execute(sql, params).fetchall()]


def _recovery(db: sqlite3.Connection, since_ms: int, idempotent_since_ms: int) -> Recovery:
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    agents = [(a, c, bool(f), orjson.loads(lim)) for a, c, f, lim in db.execute(
        "SELECT agent, created_at_ms, frozen, limits FROM agents WHERE created_pos != ''")]
    keys = db.execute("SELECT key_id, agent, key_hash FROM agent_keys WHERE NOT revoked"
                      ).fetchall()
    tools = db.execute("SELECT tool, price, category, pricing, upstream, headers FROM tools "
                       "WHERE NOT deleted").fetchall()
    balances = {a: int(b) for a, b in db.execute(schema.LAST_BALANCES)}
    holds = [OpenHold(*r) for r in db.execute(schema.OPEN_HOLDS)]
    spent = [(a, c, int(s)) for a, c, s in db.execute(schema.SPENT_SINCE,
                                                           (since_ms,) * 3)]
    idem = db.execute(schema.IDEMPOTENT_SINCE, (idempotent_since_ms,)).fetchall()
    partitions = int(meta["partitions"]) if "partitions" in meta else None
    shadow = [(a, lim, int(n), int(m)) for a, lim, n, m in db.execute(schema.SHADOW_SUMS)]
    return Recovery(partitions, agents, keys, tools, balances, holds, spent, idem, shadow)


SEAL_SQL = chain.seal_query(key="rowid")  # by rowid: no probe of the entry_id index
SEAL_UPDATE = "UPDATE ledger_entries SET prev_hash = ?, hash = ? WHERE rowid = ?"
CHAIN_SQL = chain.chain_query()


def _seal(db: sqlite3.Connection, floors: dict[str, tuple[int, int]]) -> tuple[int, bool]:
    # BEGIN IMMEDIATE: one sealer at a time, and the head is read under the write lock.
    db.execute("BEGIN IMMEDIATE")
    try:
        sealed_total, more = 0, False
        for stream, floor in floors.items():
            head = chain.head_of(stream, db.execute(chain.SELECT_HEAD, (stream,)).fetchone())
            rows = db.execute(SEAL_SQL, (stream, *head.position, *floor,
                                         chain.SEAL_ROWS_MAX)).fetchall()
            sealed = chain.plan_seal(head, rows)
            if sealed is None or not sealed.links:
                continue
            db.executemany(SEAL_UPDATE, sealed.links)
            db.execute(chain.UPSERT_HEAD, chain.head_params(sealed.head))
            sealed_total += len(sealed.links)
            more = more or len(rows) == chain.SEAL_ROWS_MAX
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return sealed_total, more


def _verify_chains(db: sqlite3.Connection) -> list[chain.ChainReport]:
    # One read transaction: in WAL mode a snapshot, whatever the writers commit meanwhile.
    db.execute("BEGIN")
    try:
        heads = {row[0]: chain.head_of(row[0], row) for row in db.execute(chain.SELECT_HEADS)}
        streams = sorted(row[0] for row in db.execute(chain.STREAMS))
        return [chain.verify_stream(heads.get(s, chain.Head(s)), db.execute(CHAIN_SQL, (s,)))
                for s in streams]
    finally:
        db.execute("COMMIT")
