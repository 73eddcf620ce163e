"""The store's own facts in ``iou:meta`` and the clock: partition count, identity, counters
for /metrics, the readiness probe."""

from __future__ import annotations

import asyncio

from gateway.store import keys
from gateway.store.connections import Connection
from gateway.store.resp import reply_text as _text

PARTITIONS_FIELD = b"partitions"
IDENTITY_FIELD = b"store_id"
DRIFT_FIELD = b"reconcile_drift"
RESTARTS_FIELD = b"writer_restarts"
WRITTEN_FIELD = b"ledger_written"  # in keys.STATS: bookkeeping, apart from iou:meta


async def settle_partitions(conn: Connection, wanted: int) -> int:
    """The store's partition count: ``wanted`` on a new store, else the recorded one."""
    await conn.call_or_raise(b"HSETNX", keys.META, PARTITIONS_FIELD, wanted)
    return int(await conn.call_or_raise(b"HGET", keys.META, PARTITIONS_FIELD))


async def clock_ms(conn: Connection, test_clock: bool = False) -> int:
    """The scripts' clock: Redis TIME in ms (plus the test offset when ``test_clock``)."""
    now = await conn.call_or_raise(b"TIME")
    ms = int(now[0]) * 1000 + int(now[1]) // 1000
    if test_clock:
        ms += int(await conn.call_or_raise(b"GET", keys.TEST_CLOCK_KEY) or 0)
    return ms


async def identity(conn: Connection) -> str | None:
    """The store's identity (what the ledger compares to its own), None when absent."""
    raw = await conn.call_or_raise(b"HGET", keys.META, IDENTITY_FIELD)
    return None if raw is None else _text(raw)


async def offer_identity(conn: Connection, store_id: str) -> None:
    """Set the identity unless one is already there (the first of racing workers wins)."""
    await conn.call_or_raise(b"HSETNX", keys.META, IDENTITY_FIELD, store_id)


async def set_identity(conn: Connection, store_id: str) -> None:
    await conn.call_or_raise(b"HSET", keys.META, IDENTITY_FIELD, store_id)


async def record_drift(conn: Connection, agents: int) -> None:
    """How many agents the last reconcile found drifted (iou_reconcile_drift_agents)."""
    await conn.call_or_raise(b"HSET", keys.META, DRIFT_FIELD, agents)


async def add_writer_restarts(conn: Connection, count: int) -> None:
    await conn.call_or_raise(b"HINCRBY", keys.META, RESTARTS_FIELD, count)


async def add_written(conn: Connection, count: int) -> None:
    """Add to the writers' settled-entries total (iou_ledger_written_total)."""
    await conn.call_or_raise(b"HINCRBY", keys.STATS, WRITTEN_FIELD, count)


async def drift_restarts_written(conn: Connection) -> tuple[int, int, int]:
    """(agents drifted at the last reconcile, ledger writer restarts, entries the writers
    settled) for /metrics, in one round trip."""
    (drift, restarts), written = await asyncio.gather(
        conn.call_or_raise(b"HMGET", keys.META, DRIFT_FIELD, RESTARTS_FIELD),
        conn.call_or_raise(b"HGET", keys.STATS, WRITTEN_FIELD))
    return int(drift or 0), int(restarts or 0), int(written or 0)


async def probe_writable(conn: Connection) -> None:
    """PING, then write one small key: ready means writable (PING answers on a Redis that
    refuses writes). Always the same value and no expiry, so a snapshot never sees it
    change. Raises StoreUnavailable."""
    await conn.call_or_raise(b"PING")
    await conn.call_or_raise(b"SET", keys.READY_PROBE, b"1")
