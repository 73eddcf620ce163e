"""Reads (and the one unscripted write) of agents and their keys. Every write that moves
money or changes an agent goes through a script (store/calls.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gateway.store import keys
from gateway.store.connections import Connection
from gateway.store.resp import reply_text as _text


def pairs(flat: list[Any]) -> dict[str, str]:
    """A flat HGETALL reply as a dict of text."""
    it = iter(flat)
    return {_text(k): _text(v) for k, v in zip(it, it, strict=True)}


async def agent_and_window(conn: Connection, partitions: int, agent: str
                           ) -> tuple[dict[str, str], dict[str, str]]:
    """The agent hash and its day window, in one round trip (empty dicts: no agent)."""
    k = keys.agent_keys(agent, partitions)
    fields, window = await asyncio.gather(conn.call_or_raise(b"HGETALL", k.agent_hash),
                                          conn.call_or_raise(b"HGETALL", k.window))
    return pairs(fields), pairs(window)


async def walls(conn: Connection, partitions: int, agent: str) -> dict[str, str]:
    """The agent's walls hash as the scripts wrote it (counters by name; empty when none)."""
    return pairs(await conn.call_or_raise(b"HGETALL", keys.agent_keys(agent, partitions).walls))


async def parent_of(conn: Connection, partitions: int, agent: str) -> tuple[bool, str | None]:
    """(whether the agent exists, its parent's name or None for a top-level agent)."""
    k = keys.agent_keys(agent, partitions)
    bal, parent = await conn.call_or_raise(b"HMGET", k.agent_hash, b"bal", b"parent")
    return bal is not None, None if parent is None else _text(parent)


async def hold_tool_and_task(conn: Connection, partitions: int, agent: str, hold_id: str
                             ) -> tuple[str, str | None] | None:
    """(tool, task or None) of an open hold of ``agent``; None when there is no such hold."""
    k = keys.agent_keys(agent, partitions)
    owner, tool, task = await conn.call_or_raise(b"HMGET", k.hold(hold_id), b"agent", b"tool",
                                                 b"task")
    if owner is None or _text(owner) != agent or tool is None:
        return None
    return _text(tool), None if task is None else _text(task)


async def children(conn: Connection, partitions: int, agent: str, limit: int) -> list[str]:
    """Up to ``limit`` names of the agent's sub-agents, sorted."""
    k = keys.agent_keys(agent, partitions)
    found = await conn.call_or_raise(b"SMEMBERS", k.children())
    return sorted(_text(n) for n in found)[:limit]


async def exists(conn: Connection, partitions: int, agent: str) -> bool:
    k = keys.agent_keys(agent, partitions)
    return bool(await conn.call_or_raise(b"EXISTS", k.agent_hash))


async def has_key(conn: Connection, partitions: int, agent: str, key_id: str) -> bool:
    k = keys.agent_keys(agent, partitions)
    return bool(await conn.call_or_raise(b"HEXISTS", k.keys, key_id))


async def key_hash(conn: Connection, partitions: int, agent: str, key_id: str) -> str | None:
    """The stored hash of one of the agent's keys, None when it has no such key."""
    k = keys.agent_keys(agent, partitions)
    found = await conn.call_or_raise(b"HGET", k.keys, key_id)
    return None if found is None else _text(found)


async def agent_of_key(conn: Connection, partitions: int, api_key: str) -> str | None:
    """The agent an agent key acts for, None for unknown and revoked keys alike."""
    lookup = keys.api_key_lookup(keys.api_key_hash(api_key), partitions)
    agent = await conn.call_or_raise(b"HGET", lookup, b"agent")
    return None if agent is None else _text(agent)


async def names(conn: Connection, partitions: int, limit: int, after: str | None = None
                ) -> list[str]:
    """Up to ``limit`` agent names in name order, after ``after``: each partition's sorted
    index is read in one round trip and the pages merged."""
    start = b"(" + after.encode() if after else b"-"
    pages = await asyncio.gather(*(
        conn.call_or_raise(b"ZRANGE", keys.agents_index(p), start, b"+", b"BYLEX", b"LIMIT",
                           0, limit) for p in range(partitions)))
    return sorted(_text(n) for page in pages for n in page)[:limit]


async def balances(conn: Connection, partitions: int, agents: list[str]) -> dict[str, int]:
    """The balance of each agent that exists, micros."""
    values = await asyncio.gather(*(conn.call_or_raise(
        b"HGET", keys.agent_keys(n, partitions).agent_hash, b"bal") for n in agents))
    return {n: int(v) for n, v in zip(agents, values, strict=True) if v is not None}


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    key_hash: str
    created_ms: int | None  # None: a record without it (rebuilt by iou recover, or older)
    last_used_ms: int | None


async def stored_keys(conn: Connection, partitions: int, agent: str
                      ) -> list[StoredKey] | None:
    """The agent's keys with their creation and last use; None when there is no agent."""
    k = keys.agent_keys(agent, partitions)
    stored, used, found = await asyncio.gather(
        conn.call_or_raise(b"HGETALL", k.keys), conn.call_or_raise(b"HGETALL", k.keys_used()),
        conn.call_or_raise(b"EXISTS", k.agent_hash))
    if not found:
        return None
    used_ms = {name: int(ms) for name, ms in pairs(used).items()}
    ids_and_hashes = list(pairs(stored).items())
    created = await asyncio.gather(*(conn.call_or_raise(b"HGET", k.api_key_lookup(h),
                                                        b"created")
                                     for _, h in ids_and_hashes))
    return [StoredKey(key_id, h, None if c is None else int(c), used_ms.get(h))
            for (key_id, h), c in zip(ids_and_hashes, created, strict=True)]


async def note_key_use(conn: Connection, partitions: int, agent: str, key_hash_: str,
                       at_ms: int) -> None:
    """When one of the agent's keys was last used (written at most once a minute)."""
    k = keys.agent_keys(agent, partitions)
    await conn.call_or_raise(b"HSET", k.keys_used(), key_hash_, str(at_ms))


async def mark_depleted(conn: Connection, partitions: int, agent: str, every_s: int) -> bool:
    """True for the first call per ``every_s`` for this agent (balance.depleted's pace)."""
    k = keys.agent_keys(agent, partitions)
    return await conn.call_or_raise(b"SET", k.depleted(), b"1", b"NX", b"EX",
                                    every_s) is not None


async def webhook_url(conn: Connection, partitions: int, agent: str) -> str | None:
    k = keys.agent_keys(agent, partitions)
    url = await conn.call_or_raise(b"HGET", k.agent_hash, b"wh")
    return None if url is None else _text(url)
