"""Agents and their keys: creation with a sign-up grant, funding, freezing, limits, keys,
authentication, and the state the balance routes show."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.metering import ids, money, walls
from gateway.metering.errors import InvalidRequest, NotFound, maps_store_errors
from gateway.metering.inputs import check_idempotency_key, idempotency, metadata_text
from gateway.metering.limits import (
    check_name,
    is_shadow_field,
    limit_pair,
    limits_of,
    shadow_sums,
)
from gateway.metering.models import (
    AgentCreated,
    AgentState,
    DomainSettings,
    FundResult,
    Limits,
    LoopLimit,
)
from gateway.metering.refusals import refusal
from gateway.store import agents as stored
from gateway.store import meta
from gateway.store.calls import Refused, ScriptCalls
from gateway.store.connections import Connection

KEYS_PER_AGENT_MAX = 16
LIMIT_CHANGES_MAX = 128  # set_limits.lua takes at most this many field pairs
API_KEY_CHARS_MAX = 128
DAY_MS = 86_400_000


class Agents:
    def __init__(self, conn: Connection, calls: ScriptCalls, settings: DomainSettings) -> None:
        self._conn = conn
        self._calls = calls
        self._settings = settings

    @property
    def _partitions(self) -> int:
        return self._calls.partitions

    @maps_store_errors
    async def clock_ms(self) -> int:
        """The scripts' clock: Redis TIME in ms (plus the test offset under IOU_TEST_CLOCK)."""
        return await meta.clock_ms(self._conn, self._settings.test_clock)

    @maps_store_errors
    async def create_agent(self, agent: str, grant_micros: int | None = None,
                           key_id: str | None = None) -> AgentCreated:
        """Create an agent with its sign-up grant (default IOU_SIGNUP_GRANT) and first key
        (``key_id`` given by an idempotent caller, so that a retry can recognise it)."""
        check_name("name", agent)
        s = self._settings
        grant = s.signup_grant_micros if grant_micros is None else grant_micros
        if not money.is_whole(grant, 0, s.amount_max_micros):
            raise InvalidRequest("grant", "must be an amount between 0 and IOU_AMOUNT_MAX")
        partition = self._calls.agent_keys(agent).partition
        api_key, key_hash = ids.new_api_key(partition, self._partitions)
        key_id = key_id or ids.key_id()
        reply = await self._calls.create_agent(
            agent, (ids.uuid7(), ids.uuid7()), grant, s.amount_max_micros,
            s.low_balance_default_micros, key_id, key_hash)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent)
        return AgentCreated(agent, api_key, key_id, reply.balance, reply.created_at_ms)

    @maps_store_errors
    async def fund(self, agent: str, amount_micros: int, idempotency_key: str | None = None,
                   kind: str = "fund", metadata: Mapping[str, Any] | None = None) -> FundResult:
        """Add ``amount_micros`` (> 0) to the agent's balance."""
        check_name("agent", agent)
        check_idempotency_key(idempotency_key)
        amount_max = self._settings.amount_max_micros
        if not money.is_whole(amount_micros, 1, amount_max):
            raise InvalidRequest("amount", "must be above 0 and at most IOU_AMOUNT_MAX")
        meta_text = metadata_text(metadata)
        reply = await self._calls.fund(
            agent, ids.uuid7(), amount_micros, amount_max, money.BALANCE_MAX_MICROS, kind,
            idempotency(idempotency_key, "fund", amount_micros, kind, meta_text), meta_text)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent)
        return FundResult(agent, reply.entry_id, reply.balance, reply.replayed)

    @maps_store_errors
    async def freeze(self, agent: str, frozen: bool) -> bool:
        check_name("agent", agent)
        reply = await self._calls.freeze(agent, ids.uuid7(), frozen)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent)
        return reply.frozen

    @maps_store_errors
    async def set_limits(self, agent: str,
                         changes: Mapping[str, int | str | LoopLimit | None]) -> Limits:
        """Merge limit changes; keys are per_call, daily, hourly, weekly, monthly,
        calls.per_minute|per_hour|per_day, low_balance, webhook_url, loop, the same caps under
        categories.<name>., and per_call and calls.* under tools.<name>.; None removes a
        limit."""
        check_name("agent", agent)
        if len(changes) > LIMIT_CHANGES_MAX:
            raise InvalidRequest("limits", f"at most {LIMIT_CHANGES_MAX} limits in one change")
        changes = dict(changes)
        pairs = await self._shadow_removal(agent) if changes.pop("shadow", 0) is None else []
        pairs += [item for name, value in changes.items() for item in limit_pair(name, value)]
        reply = await self._calls.set_limits(agent, ids.uuid7(),
                                             self._settings.amount_max_micros,
                                             orjson.dumps(dict(changes)).decode(), pairs)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent)
        return (await self.agent_state(agent)).limits

    @maps_store_errors
    async def add_key(self, agent: str, key_id: str | None = None) -> tuple[str, str]:
        """A further key for the agent: returns (key_id, api_key); the key is shown once.
        An idempotent caller passes ``key_id``, so that a retry can recognise its key."""
        check_name("agent", agent)
        partition = self._calls.agent_keys(agent).partition
        api_key, key_hash = ids.new_api_key(partition, self._partitions)
        key_id = key_id or ids.key_id()
        reply = await self._calls.key_add(agent, ids.uuid7(), key_id, key_hash,
                                          KEYS_PER_AGENT_MAX)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent)
        return key_id, api_key

    @maps_store_errors
    async def has_key(self, agent: str, key_id: str) -> bool:
        """Whether the agent has (an unrevoked) key ``key_id``."""
        check_name("agent", agent)
        return await stored.has_key(self._conn, self._partitions, agent, key_id)

    @maps_store_errors
    async def revoke_key(self, agent: str, key_id: str) -> None:
        check_name("agent", agent)
        key_hash = await stored.key_hash(self._conn, self._partitions, agent, key_id)
        if key_hash is None:
            if not await stored.exists(self._conn, self._partitions, agent):
                raise NotFound(f"No agent named {agent}.")
            raise NotFound(f"Agent {agent} has no key {key_id}.")
        reply = await self._calls.key_revoke(agent, ids.uuid7(), key_id, key_hash)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent)

    @maps_store_errors
    async def authenticate(self, api_key: str) -> str | None:
        """The agent an agent key acts for, or None for unknown and revoked keys alike."""
        if not api_key.startswith(ids.API_KEY_PREFIX) or len(api_key) > API_KEY_CHARS_MAX:
            return None
        return await stored.agent_of_key(self._conn, self._partitions, api_key)

    @maps_store_errors
    async def agent_state(self, agent: str) -> AgentState:
        """Balance, held, today's spending and limits of one agent (one round trip)."""
        check_name("agent", agent)
        (a, w), now_ms = await asyncio.gather(
            stored.agent_and_window(self._conn, self._partitions, agent), self.clock_ms())
        if not a:
            raise NotFound(f"No agent named {agent}.")
        fresh = w.get("day") == str(now_ms // DAY_MS)
        by_category = {f[2:]: int(v) for f, v in w.items() if f.startswith("s:")} if fresh else {}
        return AgentState(agent, int(a["bal"]), int(a.get("held", "0")),
                          int(w.get("s", "0")) if fresh else 0, by_category,
                          a.get("frozen") == "1", limits_of(a), int(a.get("created", "0")),
                          a.get("parent"))

    async def _shadow_removal(self, agent: str) -> list[str]:
        """The pairs that remove every shadow limit the agent has (``"shadow": null``)."""
        a, _ = await stored.agent_and_window(self._conn, self._partitions, agent)
        return [item for f in sorted(a) if is_shadow_field(f) for item in (f, "")]

    @maps_store_errors
    async def shadow_sums(self, agent: str) -> dict[str, tuple[int, int]]:
        """What the agent's shadow limits would have refused: limit -> (calls, micros)."""
        check_name("agent", agent)
        a, _ = await stored.agent_and_window(self._conn, self._partitions, agent)
        if not a:
            raise NotFound(f"No agent named {agent}.")
        return shadow_sums(a)

    @maps_store_errors
    async def walls_used(self, agent: str) -> dict[str, int]:
        """What the agent's walls beyond the balance hold now, by wall and scope (see
        gateway/metering/walls.py ``usage``): read only, one round trip and the clock."""
        check_name("agent", agent)
        counters, now_ms = await asyncio.gather(
            stored.walls(self._conn, self._partitions, agent), self.clock_ms())
        return walls.usage(counters, now_ms)

    @maps_store_errors
    async def agent_names(self, limit: int, after: str | None = None) -> list[str]:
        """Up to ``limit`` agent names in name order, after ``after`` (a paging cursor)."""
        return await stored.names(self._conn, self._partitions, limit, after)

    @maps_store_errors
    async def balances(self, agents: list[str]) -> dict[str, int]:
        """The Redis balance of each of ``agents`` that exists, micros."""
        return await stored.balances(self._conn, self._partitions, agents)
