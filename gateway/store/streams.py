"""The streams: the partitions' ledger events (read by the ledger writer) and webhook
outboxes (read by the webhook deliverer), through consumer groups.

Every command names one stream, so the same code runs on Redis Cluster, where the streams
of different partitions live on different nodes; the calls of one pass are issued together
and go out in one write per node. Entries are ``(id, [field, value, ...])`` as Redis gives
them (bytes, or str on a connection that decodes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from gateway.store import keys
from gateway.store.cluster import ClusterConnection
from gateway.store.connections import Connection
from gateway.store.errors import GroupMissing
from gateway.store.resp import ReplyError
from gateway.store.resp import reply_text as _text

Entry = tuple[Any, Any]  # (stream id, flat field list; None for an entry deleted meanwhile)


def event_streams(partitions: int) -> list[str]:
    """Every stream the ledger reads: one per partition, and the catalog's."""
    return [keys.events(p) for p in range(partitions)] + [keys.TOOL_EVENTS]


def webhook_streams(partitions: int) -> list[str]:
    return [keys.webhooks(p) for p in range(partitions)]


def stream_label(stream: str) -> str:
    """The ledger's name of a stream: "p07" or "tools"."""
    return stream.split("{", 1)[1].split("}", 1)[0]


def _missing_group(exc: ReplyError) -> Exception:
    return GroupMissing(str(exc)) if "NOGROUP" in str(exc) else exc


async def create_groups(conn: Connection, streams: Sequence[str], group: bytes) -> None:
    """Create ``group`` on each stream (and the stream), reading from its start; a group
    that exists is left as it is."""
    for stream in streams:
        reply = await conn.call(b"XGROUP", b"CREATE", stream, group, b"0", b"MKSTREAM")
        if isinstance(reply, ReplyError) and "BUSYGROUP" not in str(reply):
            raise reply


async def read(conn: Connection, group: bytes, consumer: str | bytes,
               positions: Sequence[tuple[str, bytes]], count: int
               ) -> list[tuple[Any, list[Entry]]]:
    """One XREADGROUP per (stream, position) (``>``: new entries; ``0``: this consumer's
    pending ones), all sent together; returns (stream, entries) of those with entries."""
    try:
        replies = await asyncio.gather(*(conn.call_or_raise(
            b"XREADGROUP", b"GROUP", group, consumer, b"COUNT", count, b"STREAMS", stream,
            position) for stream, position in positions))
    except ReplyError as exc:
        raise _missing_group(exc) from exc
    return [(s, entries) for reply in replies for s, entries in reply or []]


async def read_together(conn: Connection, group: bytes, consumer: str | bytes,
                        positions: Sequence[tuple[str, bytes]], count: int, block_ms: int = 0
                        ) -> list[tuple[Any, list[Entry]]]:
    """One XREADGROUP naming every stream, waiting up to ``block_ms`` inside Redis when
    none has entries (0: answer at once). One server only: a cluster refuses a read across
    slots (see ``one_server``), and a blocked read holds up whatever is queued behind it
    on an auto-pipelined connection, so give it a connection of its own."""
    block = [b"BLOCK", block_ms] if block_ms else []
    names = [stream for stream, _ in positions]
    ids = [position for _, position in positions]
    try:
        reply = await conn.call_or_raise(b"XREADGROUP", b"GROUP", group, consumer, b"COUNT",
                                         count, *block, b"STREAMS", *names, *ids)
    except ReplyError as exc:
        raise _missing_group(exc) from exc
    return [(s, entries) for s, entries in reply or []]


def one_server(conn: Connection) -> bool:
    """Whether every stream lives on one server (not a Redis Cluster)."""
    return not isinstance(conn, ClusterConnection)


async def ack(conn: Connection, group: bytes, acks: dict[str, list[Any]]) -> None:
    """XACK the ids of each stream, all streams in one write."""
    await asyncio.gather(*(conn.call_or_raise(b"XACK", stream, group, *ids)
                           for stream, ids in acks.items()))


async def ack_and_delete(conn: Connection, stream: str | bytes, group: bytes,
                         entry_id: Any) -> None:
    """Done with one entry for good: acknowledged and removed (webhook outboxes)."""
    await conn.call_or_raise(b"XACK", stream, group, entry_id)
    await conn.call_or_raise(b"XDEL", stream, entry_id)


async def claim_idle(  # noqa: PLR0913 - the command's own arguments, one each
        conn: Connection, stream: str, group: bytes, consumer: str | bytes,
        idle_ms: int, cursor: Any, count: int) -> tuple[Any, list[Entry]]:
    """XAUTOCLAIM: take over entries pending longer than ``idle_ms``; (next cursor,
    entries). The scan is over when the cursor is ``0-0``."""
    reply = await conn.call_or_raise(b"XAUTOCLAIM", stream, group, consumer, idle_ms, cursor,
                                     b"COUNT", count)
    return reply[0], reply[1]


async def claim_due(  # noqa: PLR0913 - the command's own arguments, one each
        conn: Connection, stream: str, group: bytes, consumer: bytes,
        idle_min_ms: int, count: int, due_after_ms: Callable[[int], float]
        ) -> list[Entry]:
    """Claim the pending entries idle at least ``idle_min_ms`` whose idle time reached
    ``due_after_ms(deliveries)`` (a backoff by delivery count); entries deleted meanwhile
    are left out."""
    pending = await conn.call_or_raise(b"XPENDING", stream, group, b"IDLE", idle_min_ms, b"-",
                                       b"+", count)
    due = [p[0] for p in pending if p[2] >= due_after_ms(p[3])]
    if not due:
        return []
    claimed: list[Any] = await conn.call_or_raise(b"XCLAIM", stream, group, consumer,
                                                  idle_min_ms, *due)
    return [(c[0], c[1]) for c in claimed if c is not None and c[1] is not None]


async def trim_below(conn: Connection, stream: str, floor: str) -> None:
    """XTRIM MINID: drop the entries below ``floor`` (never MAXLEN: it would drop entries
    no reader has acknowledged)."""
    await conn.call_or_raise(b"XTRIM", stream, b"MINID", floor)


def _group_info(groups: Any, group: bytes) -> dict[str, Any] | None:
    if not isinstance(groups, list):
        return None  # the stream does not exist yet
    for fields in groups:
        info = {_text(k): v for k, v in zip(fields[::2], fields[1::2], strict=True)}
        if _text(info.get("name", "")) == group.decode():
            return info
    return None


async def unacknowledged_floor(conn: Connection, stream: str, group: bytes) -> str | None:
    """The lowest id the group has not acknowledged (everything below it may be trimmed),
    None when the group is unknown."""
    # Sent in one write, so Redis answers XINFO before XPENDING: an entry delivered after
    # the last-delivered id was read lies above it and is never trimmed.
    groups, summary = await asyncio.gather(conn.call_or_raise(b"XINFO", b"GROUPS", stream),
                                           conn.call_or_raise(b"XPENDING", stream, group))
    if summary[0]:
        return _text(summary[1])
    info = _group_info(groups, group)
    if info is None:
        return None
    ms, seq = _text(info["last-delivered-id"]).split("-")
    return f"{ms}-{int(seq) + 1}"  # everything delivered is acknowledged


async def lowest_pending(conn: Connection, streams: Sequence[str], group: bytes
                         ) -> dict[str, str | None]:
    """Each stream's lowest id read out to the group and not acknowledged (None: none),
    all streams in one write."""
    try:
        summaries = await asyncio.gather(*(conn.call_or_raise(b"XPENDING", stream, group)
                                           for stream in streams))
    except ReplyError as exc:
        raise _missing_group(exc) from exc
    return {stream: _text(summary[1]) if summary[0] else None
            for stream, summary in zip(streams, summaries, strict=True)}


async def length(conn: Connection, streams: Sequence[str]) -> int:
    """Entries in the streams together (a webhook outbox's backlog)."""
    lengths = await asyncio.gather(*(conn.call_or_raise(b"XLEN", s) for s in streams))
    return sum(int(n) for n in lengths)


def _ms(stream_id: Any) -> int:
    return int(_text(stream_id).split("-")[0])


async def backlog(conn: Connection, streams: Sequence[str], group: bytes
                  ) -> tuple[float, int]:
    """(seconds the oldest entry the group has not acknowledged has waited, how many entries
    it has not acknowledged), over ``streams``."""
    now = await conn.call_or_raise(b"TIME")
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    results = await asyncio.gather(*(_stream_backlog(conn, s, group) for s in streams))
    oldest = min((ms for ms, _ in results if ms is not None), default=now_ms)
    return max(now_ms - oldest, 0) / 1000, sum(n for _, n in results)


async def _stream_backlog(conn: Connection, stream: str, group: bytes
                          ) -> tuple[int | None, int]:
    groups, size = await asyncio.gather(conn.call(b"XINFO", b"GROUPS", stream),
                                        conn.call_or_raise(b"XLEN", stream))
    info = _group_info(groups, group)
    if info is None:  # no reader ever ran: everything in the stream is waiting
        first = await conn.call_or_raise(b"XRANGE", stream, b"-", b"+", b"COUNT", 1)
        return (_ms(first[0][0]) if first else None), int(size)
    summary = await conn.call_or_raise(b"XPENDING", stream, group)
    if summary[0]:
        oldest: int | None = _ms(summary[1])
    else:
        after = await conn.call_or_raise(b"XRANGE", stream,
                                         "(" + _text(info["last-delivered-id"]), b"+",
                                         b"COUNT", 1)
        oldest = _ms(after[0][0]) if after else None
    undelivered = info.get("lag")
    waiting = int(summary[0]) + (int(undelivered) if undelivered is not None else 0)
    return oldest, waiting



async def queue_webhook(conn: Connection, partitions: int, agent: str,
                        fields: Sequence[str | bytes]) -> None:
    """Append one event to the agent's partition's webhook outbox."""
    await conn.call_or_raise(b"XADD", keys.agent_keys(agent, partitions).webhooks, b"*",
                             *fields)
