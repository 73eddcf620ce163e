"""Writes of iou recover that are no script's: an agent's key and its lookup record
(everything else is restored by lua/restore.lua through store/calls.py)."""

from __future__ import annotations

from gateway.store import keys
from gateway.store.connections import Connection


async def restore_key(conn: Connection, partitions: int, agent: str, key_id: str,
                      key_hash: str) -> None:
    """The agent's key ``key_id`` and the lookup record authentication reads (the fields
    create_agent.lua and key_add.lua write, without the creation time the ledger lacks)."""
    k = keys.agent_keys(agent, partitions)
    await conn.call_or_raise(b"HSET", k.keys, key_id, key_hash)
    await conn.call_or_raise(b"HSET", keys.api_key_lookup(key_hash, partitions), b"agent",
                             agent, b"key_id", key_id)


async def restore_child(conn: Connection, partitions: int, parent: str, child: str) -> None:
    """The parent's listing of one sub-agent (child_create.lua writes it)."""
    await conn.call_or_raise(b"SADD", keys.agent_keys(parent, partitions).children(), child)
