"""Recover: rebuild an empty Redis from the ledger (balances, holds, today's windows, the
walls' counters (gateway/ledger/recover_walls.py), limits, frozen flags, keys, tools, children
and 24 h of idempotency records).

Every record is written by lua/restore.lua (or, for keys, a store operation), so the
formats, expiries and warning rules the scripts use exist only in the scripts."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.ledger import recover_walls, schema
from gateway.ledger.store import LedgerStore, OpenHold, Recovery
from gateway.metering.engine import Engine
from gateway.metering.errors import InvalidRequest, maps_store_errors
from gateway.metering.limits import is_limit_field, is_shadow_field, keeps_walls
from gateway.metering.walls import periods
from gateway.store import recovery
from gateway.store.calls import Refused

DAY_MS = 86_400_000
IDEMPOTENT_FOR_MS = 86_400_000  # how far back the ledger's keyed calls are replayed
SENT_TOGETHER_MAX = 500

Write = Callable[[], Awaitable[Any]]


class NotEmpty(Exception):
    """Redis already holds agents; recovering over them could double balances."""


@dataclass(frozen=True)
class Recovered:
    agents: int
    keys: int
    tools: int
    holds: int
    idempotency_records: int


@maps_store_errors
async def recover(engine: Engine, store: LedgerStore, force: bool = False) -> Recovered:
    if not force and await engine.agent_names(1):
        raise NotEmpty("Redis already holds agents; recover only into an empty Redis "
                       "(or pass --force to overwrite them from the ledger).")
    now_ms = await engine.clock_ms()
    today_ms = now_ms - now_ms % DAY_MS
    data = await store.recovery(today_ms, now_ms - IDEMPOTENT_FOR_MS)
    parents = await _parents(store)
    walls = await _walls(store, data, now_ms)
    # Agents before their idempotency records: a record's warning bit reads the agent.
    await _send(_agents(engine, data, today_ms, parents, walls) + _keys(engine, data)
                + _tools(engine, data) + _children(engine, parents))
    await _send(_idempotency(engine, data))
    await engine.refresh_catalog()
    await engine.sync_tool_copies(force=True)  # the partitions' copies the scripts price from
    return Recovered(len(data.agents), len(data.keys), len(data.tools), len(data.open_holds),
                     len(data.idempotent))


async def _send(writes: list[Write]) -> None:
    """Run the writes, a few hundred at a time (each batch goes out pipelined)."""
    for start in range(0, len(writes), SENT_TOGETHER_MAX):
        replies = await asyncio.gather(*(w() for w in writes[start:start + SENT_TOGETHER_MAX]))
        for reply in replies:
            if isinstance(reply, Refused):
                raise InvalidRequest("ledger", f"holds a record restore.lua refuses: "
                                               f"{reply.code.name} {dict(reply.fields)}")


async def _parents(store: LedgerStore) -> dict[str, str]:
    """Each sub-agent's parent, from its creation event (reclaim checks it)."""
    out: dict[str, str] = {}
    for agent, raw in await store.query(schema.AGENT_PARENTS, []):
        parent = orjson.loads(raw).get("parent") if raw else None
        if isinstance(parent, str) and parent:
            out[str(agent)] = parent
    return out


async def _walls(store: LedgerStore, data: Recovery, now_ms: int
                 ) -> dict[str, recover_walls.Walls]:
    """The walls of each agent whose limits set some, as they stand at ``now_ms``."""
    since = await recover_walls.walls_since(store)
    now = periods(now_ms)
    holds: dict[str, list[OpenHold]] = defaultdict(list)
    for h in data.open_holds:
        holds[h.agent].append(h)
    out: dict[str, recover_walls.Walls] = {}
    for name, _, _, limits in data.agents:
        if name in since and any(keeps_walls(f) for f in limits):
            out[name] = await recover_walls.rebuild(store, name, since[name], now, holds[name])
    return out


def _agents(engine: Engine, data: Recovery, today_ms: int, parents: dict[str, str],
            walls: dict[str, recover_walls.Walls]) -> list[Write]:
    held: dict[str, int] = defaultdict(int)
    holds_by_agent: dict[str, list[OpenHold]] = defaultdict(list)
    for h in data.open_holds:
        held[h.agent] += h.amount
        holds_by_agent[h.agent].append(h)
    spent: dict[str, dict[str, int]] = defaultdict(dict)
    for agent, category, micros in data.spent_today:
        spent[agent][category] = micros
    shadow: dict[str, dict[str, str]] = defaultdict(dict)
    for agent, limit, count, micros in data.shadow_sums:
        shadow[agent][f"sn:{limit}"] = str(count)
        if micros:
            shadow[agent][f"sa:{limit}"] = str(micros)
    calls = engine.calls
    out: list[Write] = []
    for name, created_ms, frozen, limits in data.agents:
        fields = {f: str(v) for f, v in limits.items()
                  if is_limit_field(f) or is_shadow_field(f)}
        if any(keeps_walls(f) for f in fields):
            fields["x"] = "1"  # the scripts read the walls only while this is set
        if any(is_shadow_field(f) for f in fields):
            fields["sx"] = "1"  # and the shadow limits only while this is set
        fields.update(shadow[name])  # the sums GET /v1/agents/{agent}/shadow reads
        if name in parents:
            fields["parent"] = parents[name]
        out.append(_bind(calls.restore_agent, name, data.balances.get(name, 0), held[name],
                         bool(frozen), created_ms or 0, fields))
        counted = walls[name].holds if name in walls else {}
        out += [_bind(calls.restore_hold, h.agent, h.hold_id, h.tool, h.category, h.amount,
                      h.at_ms, h.expires_at_ms, counted.get(h.hold_id))
                for h in holds_by_agent[name]]
        out.append(_bind(calls.restore_window, name, today_ms,
                         _window(spent[name], holds_by_agent[name], today_ms)))
        if name in walls and walls[name].counters:
            out.append(_bind(calls.restore_walls, name, walls[name].counters))
    return out


def _bind(operation: Callable[..., Awaitable[Any]], *args: Any) -> Write:
    return lambda: operation(*args)


def _window(spent: dict[str, int], holds: list[OpenHold], today_ms: int) -> dict[str, int]:
    fields: dict[str, int] = defaultdict(int)
    for category, micros in spent.items():
        fields["s"] += micros
        fields["s:" + category] += micros
    for h in holds:
        if h.at_ms >= today_ms:
            fields["h"] += h.amount
            fields["h:" + h.category] += h.amount
    return fields


def _children(engine: Engine, parents: dict[str, str]) -> list[Write]:
    return [_bind(recovery.restore_child, engine.conn, engine.partitions, parent, child)
            for child, parent in parents.items()]


def _keys(engine: Engine, data: Recovery) -> list[Write]:
    return [_bind(recovery.restore_key, engine.conn, engine.partitions, agent, key_id,
                  key_hash) for key_id, agent, key_hash in data.keys]


def _tools(engine: Engine, data: Recovery) -> list[Write]:
    return [_bind(engine.calls.restore_tool, name, price, category, pricing, upstream,
                  headers)
            for name, price, category, pricing, upstream, headers in data.tools]


def _idempotency(engine: Engine, data: Recovery) -> list[Write]:
    out: list[Write] = []
    for (agent, key, body_hash, entry_id, kind, amount, balance_after, hold_id, expires_at,
         held) in data.idempotent:
        if not key:
            continue
        answer_id, extra = _replay_fields(kind, entry_id, amount, hold_id, expires_at, held)
        out.append(_bind(engine.calls.restore_idempotency, agent, key, body_hash,
                         balance_after, answer_id, extra))
    return out


def _replay_fields(kind: str, entry_id: str, amount: int, hold_id: str | None,
                   expires_at: int | None, held: int | None) -> tuple[str, int]:
    """What each script keeps for a replay: (id, extra) as its idem_store call does."""
    if kind == "hold":
        return hold_id or "", expires_at or 0
    if kind == "capture":
        return entry_id, (held or 0) - amount
    return entry_id, amount
