"""Reads of tasks (budget envelopes). Every write goes through a script (task_open.lua,
charge.lua, hold.lua, capture/release/expire through the hold's task, task_close.lua)."""

from __future__ import annotations

import asyncio

from gateway.store import keys
from gateway.store.agents import pairs
from gateway.store.connections import Connection
from gateway.store.resp import reply_text as _text


async def task_fields(conn: Connection, partitions: int, agent: str, task_id: str
                      ) -> dict[str, str]:
    """The task hash of one of the agent's tasks (empty: no such task of this agent)."""
    k = keys.agent_keys(agent, partitions)
    return pairs(await conn.call_or_raise(b"HGETALL", k.task(task_id)))


async def task_ids(conn: Connection, partitions: int, agent: str, limit: int) -> list[str]:
    """The agent's most recent task ids, newest first (the index forgets old ones)."""
    k = keys.agent_keys(agent, partitions)
    found = await conn.call_or_raise(b"ZRANGE", k.tasks(), b"+inf", b"-inf", b"BYSCORE", b"REV",
                                     b"LIMIT", b"0", str(limit).encode())
    return [_text(v) for v in found]


async def tasks_fields(conn: Connection, partitions: int, agent: str, task_ids_: list[str]
                       ) -> list[tuple[str, dict[str, str]]]:
    """Each task's hash, in one round trip (auto-pipelined); tasks whose hash expired are
    left out."""
    found = await asyncio.gather(*(task_fields(conn, partitions, agent, t) for t in task_ids_))
    return [(t, f) for t, f in zip(task_ids_, found, strict=True) if f]
