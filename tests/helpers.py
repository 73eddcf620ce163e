"""Small helpers shared by the engine tests."""

from __future__ import annotations

from typing import Any

from gateway.metering.engine import Engine
from gateway.store import keys
from gateway.store.keys import TEST_CLOCK_KEY

T = 1_000_000  # micros per token


async def setup_catalog(engine: Engine) -> None:
    await engine.set_tool("web_search", 50_000, "tool")
    await engine.set_tool("web_browse", 120_000, "tool")
    await engine.set_tool("llm_summarize", 80_000, "llm", pricing="variable")
    await engine.set_tool("email_send", 20_000, "tool")
    await engine.set_tool("calc", 0, "tool")
    await engine.set_tool("buy", 70_000, "commerce")


async def events(engine: Engine, agent: str) -> list[dict[str, str]]:
    """The ledger events of one agent's partition stream, oldest first."""
    stream = engine.agent_keys(agent).events
    raw: list[Any] = await engine.conn.call_or_raise(b"XRANGE", stream, b"-", b"+")
    out = []
    for _id, fields in raw:
        it = iter(fields)
        entry = {k.decode(): v.decode() for k, v in zip(it, it, strict=True)}
        if entry.get("agent") == agent:
            out.append(entry)
    return out


async def snapshot(engine: Engine) -> dict[str, Any]:
    """Every key with its type and content, to prove a refusal changed nothing."""
    conn = engine.conn
    names = sorted(await conn.call_or_raise(b"KEYS", b"*"))
    state: dict[str, Any] = {}
    for name in names:
        state[name.decode()] = await _content(engine, name)
    return state


async def _content(engine: Engine, name: bytes) -> Any:
    conn = engine.conn
    kind = await conn.call_or_raise(b"TYPE", name)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind == "hash":
        return sorted(await conn.call_or_raise(b"HGETALL", name))
    if kind == "stream":
        return await conn.call_or_raise(b"XRANGE", name, b"-", b"+")
    if kind == "zset":
        return await conn.call_or_raise(b"ZRANGE", name, 0, -1, b"WITHSCORES")
    if kind == "set":
        return sorted(await conn.call_or_raise(b"SMEMBERS", name))
    if kind == "list":
        return await conn.call_or_raise(b"LRANGE", name, 0, -1)
    return await conn.call_or_raise(b"GET", name)


def agent_hash(engine: Engine, agent: str) -> str:
    return keys.agent_keys(agent, engine.partitions).agent_hash


async def shift_to(engine: Engine, target_ms: int) -> None:
    """Move the scripts' clock so that it now reads ``target_ms``."""
    await engine.conn.call_or_raise(b"SET", TEST_CLOCK_KEY, 0)
    real = await engine.clock_ms()
    await engine.conn.call_or_raise(b"SET", TEST_CLOCK_KEY, target_ms - real)
