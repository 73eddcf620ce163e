"""Facts of the Redis server(s) themselves, for checks (iou doctor): reachability, INFO
sections and clocks of every master, the cluster's slot coverage, the recorded partition
count."""

from __future__ import annotations

from gateway.store import keys
from gateway.store.connections import Connection
from gateway.store.safety import info_fields


async def ping(conn: Connection) -> None:
    """Raises unless Redis answers."""
    await conn.call_or_raise(b"PING")


async def info_text_each(conn: Connection, section: bytes) -> list[bytes | str]:
    """One INFO ``section`` per server (every master of a cluster), as Redis wrote it."""
    return list(await conn.call_each(b"INFO", section))


async def info_each(conn: Connection, section: bytes) -> list[dict[str, str]]:
    """One INFO ``section`` per server (every master of a cluster), as fields."""
    return [info_fields(raw) for raw in await info_text_each(conn, section)]


async def clock_each_s(conn: Connection) -> list[float]:
    """Each server's clock (TIME), Unix seconds."""
    return [int(reply[0]) + int(reply[1]) / 1e6 for reply in await conn.call_each(b"TIME")]


async def cluster_info(conn: Connection) -> dict[str, str]:
    return info_fields(await conn.call_or_raise(b"CLUSTER", b"INFO"))


async def partitions(conn: Connection) -> int | None:
    """The partition count the store was initialised with (None: never initialised)."""
    raw = await conn.call_or_raise(b"HGET", keys.META, b"partitions")
    return None if raw is None else int(raw)
