"""How far the ledger is behind Redis: age of the oldest unacknowledged event, and count."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.ledger.writer import GROUP, stream_names
from gateway.store.connections import Connection


async def ledger_backlog(conn: Connection, partitions: int) -> tuple[float, int]:
    """(seconds the oldest event not yet in the ledger has waited, events not yet in it)."""
    now = await conn.call_or_raise(b"TIME")
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    results = await asyncio.gather(*(_stream_backlog(conn, s) for s in stream_names(partitions)))
    oldest = min((ms for ms, _ in results if ms is not None), default=now_ms)
    return max(now_ms - oldest, 0) / 1000, sum(n for _, n in results)


async def _stream_backlog(conn: Connection, stream: str) -> tuple[int | None, int]:
    groups, length = await asyncio.gather(conn.call(b"XINFO", b"GROUPS", stream),
                                          conn.call_or_raise(b"XLEN", stream))
    info = _group(groups)
    if info is None:  # no writer ever ran: everything in the stream is waiting
        first = await conn.call_or_raise(b"XRANGE", stream, b"-", b"+", b"COUNT", 1)
        return (_ms(first[0][0]) if first else None), int(length)
    summary = await conn.call_or_raise(b"XPENDING", stream, GROUP)
    if summary[0]:
        oldest: int | None = _ms(summary[1])
    else:
        after = await conn.call_or_raise(b"XRANGE", stream, b"(" + info[b"last-delivered-id"],
                                         b"+", b"COUNT", 1)
        oldest = _ms(after[0][0]) if after else None
    undelivered = info.get(b"lag")
    waiting = int(summary[0]) + (int(undelivered) if undelivered is not None else 0)
    return oldest, waiting


def _group(groups: Any) -> dict[bytes, Any] | None:
    if not isinstance(groups, list):
        return None  # stream does not exist yet
    for group in groups:
        info = dict(zip(group[::2], group[1::2], strict=True))
        if info.get(b"name") == GROUP:
            return info
    return None


def _ms(stream_id: bytes) -> int:
    return int(stream_id.split(b"-")[0])
