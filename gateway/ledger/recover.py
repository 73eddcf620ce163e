"""Recover: rebuild an empty Redis from the ledger (balances, holds, today's windows,
limits, frozen flags, keys, tools and 24 h of idempotency records)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from gateway.ledger.store import LedgerStore, OpenHold, Recovery
from gateway.metering.engine import Engine
from gateway.store import keys

DAY_MS = 86_400_000
IDEM_TTL_MS = 86_400_000
WINDOW_TTL_MS = 172_800_000
LIMIT_FIELDS = ("pc", "dl", "low", "wh")


class NotEmpty(Exception):
    """Redis already holds agents; recovering over them could double balances."""


@dataclass(frozen=True)
class Recovered:
    agents: int
    keys: int
    tools: int
    holds: int
    idempotency_records: int


async def recover(engine: Engine, store: LedgerStore, force: bool = False) -> Recovered:
    conn = engine.conn
    if not force and await engine.agent_names(1):
        raise NotEmpty("Redis already holds agents; recover only into an empty Redis "
                       "(or pass --force to overwrite them from the ledger).")
    now = await conn.call_or_raise(b"TIME")
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    today_ms = now_ms - now_ms % DAY_MS
    data = await store.recovery(today_ms, now_ms - IDEM_TTL_MS)
    commands: list[tuple[Any, ...]] = []
    commands += _agents(engine, data, today_ms)
    commands += _keys(engine, data)
    commands += _tools(data)
    commands += _idempotency(engine, data, now_ms)
    await _send(engine, commands)
    await engine.refresh_catalog()
    await engine.sync_tool_copies(force=True)  # the partitions' copies the scripts price from
    return Recovered(len(data.agents), len(data.keys), len(data.tools), len(data.open_holds),
                     len(data.idempotent))


async def _send(engine: Engine, commands: list[tuple[Any, ...]]) -> None:
    for start in range(0, len(commands), 500):
        calls: list[Awaitable[Any]] = [engine.conn.call_or_raise(*c)
                                       for c in commands[start:start + 500]]
        await asyncio.gather(*calls)


def _agents(engine: Engine, data: Recovery, today_ms: int) -> list[tuple[Any, ...]]:
    held: dict[str, int] = defaultdict(int)
    holds_by_agent: dict[str, list[OpenHold]] = defaultdict(list)
    for h in data.open_holds:
        held[h.agent] += h.amount
        holds_by_agent[h.agent].append(h)
    spent: dict[str, dict[str, int]] = defaultdict(dict)
    for agent, category, micros in data.spent_today:
        spent[agent][category] = micros
    out: list[tuple[Any, ...]] = []
    for name, created_ms, frozen, limits in data.agents:
        k = engine.agent_keys(name)
        bal = data.balances.get(name, 0)
        low = int(limits.get("low", "0") or 0)
        fields: list[Any] = ["bal", bal, "held", held[name], "frozen", "1" if frozen else "0",
                             "created", created_ms or 0, "lowf", "1" if low and bal < low else "0"]
        for field, value in limits.items():
            if field in LIMIT_FIELDS or field.startswith("c:"):
                fields += [field, value]
        out.append(("HSET", k.agent_hash, *fields))
        out.append(("ZADD", k.agents_index, 0, name))
        out += _holds(k, holds_by_agent[name])
        out += _window(k, spent[name], holds_by_agent[name], today_ms)
    return out


def _holds(k: keys.AgentKeys, holds: list[OpenHold]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for h in holds:
        out.append(("HSET", k.hold(h.hold_id), "agent", h.agent, "tool", h.tool, "category",
                    h.category, "amount", h.amount, "day", h.at_ms // DAY_MS, "exp",
                    h.expires_at_ms, "state", "open"))
        out.append(("ZADD", k.holds, h.expires_at_ms, h.hold_id))
    return out


def _window(k: keys.AgentKeys, spent: dict[str, int], holds: list[OpenHold], today_ms: int
            ) -> list[tuple[Any, ...]]:
    fields: dict[str, int] = defaultdict(int)
    for category, micros in spent.items():
        fields["s"] += micros
        fields["s:" + category] += micros
    for h in holds:
        if h.at_ms >= today_ms:
            fields["h"] += h.amount
            fields["h:" + h.category] += h.amount
    flat = [item for pair in fields.items() for item in pair]
    return [("HSET", k.window, "day", today_ms // DAY_MS, *flat),
            ("PEXPIRE", k.window, WINDOW_TTL_MS)]


def _keys(engine: Engine, data: Recovery) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for key_id, agent, key_hash in data.keys:
        k = engine.agent_keys(agent)
        out.append(("HSET", k.keys, key_id, key_hash))
        out.append(("HSET", keys.api_key_lookup(key_hash, engine.partitions), "agent", agent,
                    "key_id", key_id))
    return out


def _tools(data: Recovery) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for name, price, category, pricing, upstream, headers in data.tools:
        out.append(("HSET", keys.tool(name), "price", price, "category", category, "pricing",
                    pricing, "upstream", upstream or "", "headers", headers or "",
                    "updated", 0))
        out.append(("SADD", keys.TOOL_NAMES, name))
    if data.tools:
        out.append(("INCR", keys.TOOLS_VERSION))
    return out


def _idempotency(engine: Engine, data: Recovery, now_ms: int) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for (agent, key, body_hash, entry_id, kind, amount, balance_after, hold_id, expires_at,
         held) in data.idempotent:
        if not key:
            continue
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        name = engine.agent_keys(agent).idempotency(digest)
        first_id, extra = _replay_fields(kind, entry_id, amount, hold_id, expires_at, held)
        # The record format of idem_store in lua/_lib.lua.
        out.append(("SET", name, f"{body_hash} {balance_after} 0 {first_id} {extra}", "PX",
                    IDEM_TTL_MS))
    return out


def _replay_fields(kind: str, entry_id: str, amount: int, hold_id: str | None,
                   expires_at: int | None, held: int | None) -> tuple[str, int]:
    """What each script keeps for a replay: (id, extra) as stored by idem_store."""
    if kind == "hold":
        return hold_id or "", expires_at or 0
    if kind == "capture":
        return entry_id, (held or 0) - amount
    return entry_id, amount
