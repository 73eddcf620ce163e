"""Reads of tasks (budget envelopes). Every write goes through a script (task_open.lua,
charge.lua, hold.lua, capture/release/expire through the hold's task, task_close.lua)."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def task_page(conn: Connection, partitions: int, agent: str, limit: int,
                    after: tuple[int, str] | None) -> list[tuple[int, str]]:
    """(created ms, task id) of up to ``limit`` of the agent's indexed tasks, newest first
    (ties: the greater id first, as ZRANGE REV orders them), strictly after the position
    ``after`` (a previous page's last); tasks opened since do not shift the pages after it."""
    k = keys.agent_keys(agent, partitions).tasks()
    count = str(limit).encode()
    if after is None:
        return _scored(await conn.call_or_raise(b"ZRANGE", k, b"+inf", b"-inf", b"BYSCORE",
                                                b"REV", b"LIMIT", b"0", count, b"WITHSCORES"))
    ms, task_id = after
    at = str(ms).encode()
    ties, older = await asyncio.gather(
        conn.call_or_raise(b"ZRANGE", k, at, at, b"BYSCORE", b"REV", b"WITHSCORES"),
        conn.call_or_raise(b"ZRANGE", k, b"(" + at, b"-inf", b"BYSCORE", b"REV", b"LIMIT",
                           b"0", count, b"WITHSCORES"))
    after_ties = [(s, t) for s, t in _scored(ties) if t < task_id]
    return (after_ties + _scored(older))[:limit]


def _scored(flat: list[Any]) -> list[tuple[int, str]]:
    it = iter(flat)
    return [(int(float(_text(score))), _text(member)) for member, score in zip(it, it,
                                                                               strict=True)]


async def tasks_fields(conn: Connection, partitions: int, agent: str, task_ids_: list[str]
                       ) -> list[tuple[str, dict[str, str]]]:
    """Each task's hash, in one round trip (auto-pipelined); tasks whose hash expired are
    left out."""
    found = await asyncio.gather(*(task_fields(conn, partitions, agent, t) for t in task_ids_))
    return [(t, f) for t, f in zip(task_ids_, found, strict=True) if f]
