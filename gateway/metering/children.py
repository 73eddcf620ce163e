"""Delegation: an agent funds sub-agents (children) from its own balance, and takes back what
they have left. Each move is one script (child_create.lua, reclaim.lua) with a
``transfer_out``/``transfer_in`` pair in the ledger, so a family's money is only ever moved.

A child lives in its parent's partition: both hashes are in one cluster slot, which is what
lets one script move the amount. Partitions come from the name (``crc32(name) % P``), so a
child's name must hash to its parent's partition; a name that does not is refused with one
that does (the name with the smallest numeric suffix that lands there). The child keeps its
parent's name in its hash (``parent``), which reclaim checks.

A child's limits are only tighter than its parent's: it inherits every cap of its parent
(per call, daily, windows, call caps, per category and per tool, require_task) and may lower
any of them, never raise or remove one; it may add caps its parent lacks. The parent's caps
are read when the child is created: a parent's later change does not reach its children.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from gateway.metering import ids, money
from gateway.metering.errors import Forbidden, InvalidRequest, NotFound, maps_store_errors
from gateway.metering.inputs import check_idempotency_key, given_amount, idempotency
from gateway.metering.limits import (
    check_name,
    is_limit_field,
    is_shadow_field,
    is_wall_field,
    limit_pair,
    loop_of,
)
from gateway.metering.models import DomainSettings, LoopLimit
from gateway.metering.refusals import refusal
from gateway.store import agents as stored
from gateway.store import keys
from gateway.store.calls import Refused, ScriptCalls
from gateway.store.codes import Code
from gateway.store.connections import Connection

SUFFIX_TRIES_MAX = 10_000
OWN_FIELDS = ("low", "wh")  # the child's own, never inherited nor compared


@dataclass(frozen=True)
class ChildCreated:
    agent: str
    parent: str
    api_key: str
    key_id: str
    balance_micros: int
    parent_balance_micros: int
    created_at_ms: int


@dataclass(frozen=True)
class Reclaimed:
    agent: str
    parent: str
    entry_id: str
    amount_micros: int
    balance_micros: int  # the child's, after
    replayed: bool


def partition_name(wanted: str, partition: int, partitions: int) -> str | None:
    """``wanted`` with the smallest suffix ``-<n>`` that hashes to ``partition`` (None when
    none fits in 64 characters within the tries)."""
    for n in range(1, SUFFIX_TRIES_MAX):
        candidate = f"{wanted[:64 - len(str(n)) - 1]}-{n}"
        if keys.partition_of(candidate, partitions) == partition:
            return candidate
    return None


def child_limit_fields(parent: Mapping[str, str],
                       changes: Mapping[str, int | str | LoopLimit | None]) -> dict[str, str]:
    """The child's limit fields: every cap of the parent, then the child's changes, each
    only tighter (422 naming the limit otherwise); ``x`` when a wall is set."""
    fields = {f: v for f, v in parent.items() if is_limit_field(f) and f not in OWN_FIELDS}
    for name, value in changes.items():
        field, text = limit_pair(name, value)
        inherited = fields.get(field)
        if field in OWN_FIELDS:
            fields[field] = text
        elif field == "rt":
            if inherited == "1" and text != "1":
                raise InvalidRequest(name, "is the parent's: a child cannot lift it")
            fields[field] = text
        elif field == "lp":
            if inherited is not None and not _loop_tighter(text, inherited):
                raise InvalidRequest(name, "must be at least the parent's loop breaker (as "
                                           "few repeats, as long a window, freeze if it "
                                           "freezes): a child's limits are only tighter")
            fields[field] = text
        elif inherited is not None and (text == "" or int(text) > int(inherited)):
            limit = money.format_amount(int(inherited)) if field[-2:] not in (
                "nm", "nh", "nd") else inherited
            raise InvalidRequest(name, f"must be at most the parent's {limit}: a child's "
                                       "limits are only tighter")
        else:
            fields[field] = text
    out = {f: v for f, v in fields.items() if v != ""}
    if any(is_wall_field(f) or (is_wall_field(f[2:]) and is_shadow_field(f)) for f in out):
        out["x"] = "1"
    if any(is_shadow_field(f) for f in out):
        out["sx"] = "1"  # the scripts read shadow limits only while this is set
    return out


def _loop_tighter(child: str, parent: str) -> bool:
    """Whether the loop breaker ``child`` (an ``lp`` field, '' for none) refuses at least
    every call that ``parent`` refuses."""
    mine, theirs = loop_of(child), loop_of(parent)
    if theirs is None:
        return True
    return mine is not None and mine.repeats <= theirs.repeats and (
        mine.window_s >= theirs.window_s) and (
        mine.action == "freeze" or theirs.action == "refuse")


class Children:
    def __init__(self, conn: Connection, calls: ScriptCalls, settings: DomainSettings) -> None:
        self._conn = conn
        self._calls = calls
        self._settings = settings

    @maps_store_errors
    async def create_child(
            self, parent: str, child: str, amount_micros: int,
            changes: Mapping[str, int | str | LoopLimit | None] | None = None,
            key_id: str | None = None) -> ChildCreated:
        """Create ``child`` with ``amount_micros`` moved from ``parent``'s balance and
        limits only tighter than the parent's (``changes``: as set_limits takes them)."""
        check_name("agent", parent)
        check_name("name", child)
        s = self._settings
        if not money.is_whole(amount_micros, 1, s.amount_max_micros):
            raise InvalidRequest("amount", "must be above 0 and at most IOU_AMOUNT_MAX")
        partitions = self._calls.partitions
        partition = keys.partition_of(parent, partitions)
        if keys.partition_of(child, partitions) != partition:
            raise _wrong_partition(child, partition, partitions)
        parent_fields, _ = await stored.agent_and_window(self._conn, partitions, parent)
        if not parent_fields:
            raise NotFound(f"No agent named {parent}.")
        fields = child_limit_fields(parent_fields, changes or {})
        low = int(fields.pop("low", s.low_balance_default_micros) or 0)
        api_key, key_hash = ids.new_api_key(partition, partitions)
        key_id = key_id or ids.key_id()
        text = orjson.dumps(dict(changes)).decode() if changes else ""
        pairs = [item for pair in fields.items() for item in pair]
        reply = await self._calls.child_create(
            parent, child, (ids.uuid7(), ids.uuid7(), ids.uuid7(), ids.uuid7()), amount_micros,
            s.amount_max_micros, low, (key_id, key_hash), text if pairs else "", pairs)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=child if reply.code == Code.AGENT_EXISTS else parent)
        return ChildCreated(child, parent, api_key, key_id, reply.child_balance,
                            reply.balance, reply.created_at_ms)

    @maps_store_errors
    async def parent_of(self, agent: str) -> str | None:
        """The agent's parent (None: a top-level agent); 404 for an unknown agent."""
        check_name("agent", agent)
        found, parent = await stored.parent_of(self._conn, self._calls.partitions, agent)
        if not found:
            raise NotFound(f"No agent named {agent}.")
        return parent

    @maps_store_errors
    async def children_of(self, agent: str, limit: int = 1000) -> list[str]:
        """The names of the agent's sub-agents (at most ``limit``), sorted."""
        check_name("agent", agent)
        return await stored.children(self._conn, self._calls.partitions, agent, limit)

    @maps_store_errors
    async def reclaim(self, child: str, parent: str, amount_micros: int | None = None,
                      idempotency_key: str | None = None) -> Reclaimed:
        """Move ``amount_micros`` (default: all the child has available) back to ``parent``,
        which must be the child's parent."""
        check_name("agent", child)
        check_name("agent", parent)
        check_idempotency_key(idempotency_key)
        given = given_amount("amount", amount_micros, 1, self._settings.amount_max_micros)
        reply = await self._calls.reclaim(
            child, parent, (ids.uuid7(), ids.uuid7()), given, self._settings.amount_max_micros,
            money.BALANCE_MAX_MICROS, idempotency(idempotency_key, "reclaim", parent, given))
        if isinstance(reply, Refused):
            if reply.code == Code.NOT_A_CHILD:
                raise Forbidden(f"{child} is not a sub-agent of {parent}.")
            raise refusal(reply, agent=child)
        return Reclaimed(child, parent, reply.entry_id, reply.amount, reply.balance,
                         reply.replayed)


def _wrong_partition(child: str, partition: int, partitions: int) -> InvalidRequest:
    suggestion = partition_name(child, partition, partitions)
    hint = f"; {suggestion!r} does" if suggestion else ""
    return InvalidRequest("name", f"must hash to the partition of its parent (a child "
                                  f"lives beside its parent){hint}")
