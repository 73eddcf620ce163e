"""The upstream MCP servers the gateway fronts: one field per server in one hash.

Each server is one JSON value (its URL, its sealed headers, the tools it listed when it was
registered, when), so a registration, a change and a removal are each one atomic command
and a reader never sees half of one. The headers arrive sealed (gateway/metering/
secrets_store.py): this module stores what it is given and never sees a secret."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.store import keys
from gateway.store.agents import pairs
from gateway.store.connections import Connection
from gateway.store.resp import reply_text


async def put(conn: Connection, name: str, record: dict[str, Any]) -> None:
    """Register (or replace) the server ``name``."""
    await conn.call_or_raise(b"HSET", keys.MCP_SERVERS, name, orjson.dumps(record))


async def get(conn: Connection, name: str) -> dict[str, Any] | None:
    """The record of the server ``name``, None when there is none."""
    raw = await conn.call_or_raise(b"HGET", keys.MCP_SERVERS, name)
    return None if raw is None else _record(reply_text(raw))


async def all_servers(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every server's record by name, in name order."""
    rows = pairs(await conn.call_or_raise(b"HGETALL", keys.MCP_SERVERS))
    return {name: _record(rows[name]) for name in sorted(rows)}


async def delete(conn: Connection, name: str) -> bool:
    """Remove the server ``name``; False when there was none."""
    return bool(await conn.call_or_raise(b"HDEL", keys.MCP_SERVERS, name))


def _record(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    assert isinstance(value, dict), "an MCP server record is a JSON object"
    return value
