"""Reads of the tool catalog and of the partitions' copies of it (writes are scripts)."""

from __future__ import annotations

import asyncio

from gateway.store import keys
from gateway.store.agents import pairs
from gateway.store.connections import Connection


async def version(conn: Connection) -> int:
    """The catalog's version: bumped by every change (0 before the first)."""
    return int(await conn.call_or_raise(b"GET", keys.TOOLS_VERSION) or 0)


async def entries(conn: Connection) -> dict[str, dict[str, str]]:
    """Every catalog entry's fields by tool name (price, category, pricing, upstream,
    headers, version), in name order."""
    names = sorted(n.decode() if isinstance(n, bytes) else str(n)
                   for n in await conn.call_or_raise(b"SMEMBERS", keys.TOOL_NAMES))
    rows = await asyncio.gather(*(conn.call_or_raise(b"HGETALL", keys.tool(n)) for n in names))
    return {name: pairs(row) for name, row in zip(names, rows, strict=True) if row}


async def copies(conn: Connection, partitions: int) -> list[dict[str, str]]:
    """Each partition's copy: tool -> "<version> <price> <category> <pricing>", or
    "<version>" alone once deleted (tool_copy.lua's format)."""
    flat = await asyncio.gather(*(conn.call_or_raise(b"HGETALL", keys.tools_copy(p))
                                  for p in range(partitions)))
    return [pairs(f) for f in flat]


def copy_row(version_: int, price_micros: int, category: str, pricing: str) -> str:
    """A live entry as tool_copy.lua stores it (to compare with ``copies``)."""
    return f"{version_} {price_micros} {category} {pricing}"
