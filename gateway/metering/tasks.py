"""Tasks (budget envelopes): an agent opens a task with a budget, and its charges, batch
items, holds and invokes that name the task count against it (charge.lua and hold.lua check
spent + held + cost <= budget and max_calls in the same script as the balance). A task is a
cap, not money set aside: the balance still pays. Closing releases the task's open holds and
answers its summary."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from gateway.metering import ids, money
from gateway.metering.errors import InvalidRequest, NotFound, maps_store_errors
from gateway.metering.inputs import task_ref
from gateway.metering.limits import CALLS_MAX, check_name
from gateway.metering.refusals import refusal
from gateway.store import agents as stored_agents
from gateway.store import tasks as stored
from gateway.store.calls import Refused, ScriptCalls
from gateway.store.codes import Code
from gateway.store.connections import Connection

TASK_TTL_S_DEFAULT = 3600
TASK_TTL_S_MAX = 604_800  # a week
TASK_NAME_CHARS_MAX = 128
MAX_CALLS_NAMES_MAX = 64  # task_open.lua takes at most this many max_calls pairs
TASKS_LISTED_MAX = 1000
CLOSE_FIRST_IDS = 4  # entry ids minted for a close; the script asks for more when it needs


# How long a keyed request's twin can be: an Idempotency-Key's life (24 h).
KEYED_TWIN_MS = 86_400_000


TASK_CURSOR_RE = re.compile(r"(0|[1-9][0-9]{0,15})\.(task_[0-9a-f]{32})", re.ASCII)


def parse_task_cursor(cursor: str) -> tuple[int, str]:
    """A tasks page's cursor, ``<created ms>.<task id>``, as (ms, task id); 422 otherwise."""
    found = TASK_CURSOR_RE.fullmatch(cursor)
    if found is None:
        raise InvalidRequest("cursor", "must be the next_cursor of a previous page")
    return int(found.group(1)), found.group(2)


@dataclass(frozen=True)
class TaskState:
    """One task as stored, with its state at the scripts' clock."""

    task_id: str
    agent: str
    name: str | None
    budget_micros: int
    spent_micros: int
    held_micros: int
    calls: int
    created_ms: int
    expires_at_ms: int
    state: str  # open, closed or expired
    closed_ms: int | None = None
    max_calls: dict[str, int] = field(default_factory=dict)
    spent_by_tool: dict[str, int] = field(default_factory=dict)
    spent_by_category: dict[str, int] = field(default_factory=dict)
    calls_by_tool: dict[str, int] = field(default_factory=dict)
    calls_by_category: dict[str, int] = field(default_factory=dict)


def _prefixed(fields: Mapping[str, str], prefix: str) -> dict[str, int]:
    return {f[len(prefix):]: int(v) for f, v in sorted(fields.items()) if f.startswith(prefix)}


def task_state(task_id: str, agent: str, fields: Mapping[str, str], now_ms: int) -> TaskState:
    """A TaskState from the task hash (see lua/_lib.lua's tasks section)."""
    expires = int(fields["exp"])
    state = fields.get("state", "open")
    if state == "open" and now_ms >= expires:
        state = "expired"
    closed = fields.get("closed")
    return TaskState(
        task_id, agent, fields.get("name") or None, int(fields["budget"]),
        int(fields.get("spent", "0")), int(fields.get("held", "0")),
        int(fields.get("calls", "0")), int(fields.get("created", "0")), expires, state,
        int(closed) if closed else None, _prefixed(fields, "m:"), _prefixed(fields, "st:"),
        _prefixed(fields, "sc:"), _prefixed(fields, "nt:"), _prefixed(fields, "nc:"))


class Tasks:
    def __init__(self, conn: Connection, calls: ScriptCalls, amount_max_micros: int,
                 clock_ms: Callable[[], Awaitable[int]]) -> None:
        self._conn = conn
        self._calls = calls
        self._amount_max_micros = amount_max_micros
        # The scripts' clock (Redis TIME, plus the test offset under IOU_TEST_CLOCK): a task
        # is expired by the same clock that refuses its calls.
        self._now_ms = clock_ms

    @maps_store_errors
    async def open_task(self, agent: str, budget_micros: int, name: str | None = None,
                        ttl_s: int = TASK_TTL_S_DEFAULT,
                        max_calls: Mapping[str, int] | None = None,
                        task_id: str | None = None) -> TaskState:
        """Open a task of ``agent`` with ``budget_micros``, for ``ttl_s`` seconds, with
        optional ``max_calls`` per tool or category name. ``task_id``: the id a keyed
        request derived from its key; a task already under it is that request's own earlier
        (or concurrent) run, answered as it stands instead of opening a second one."""
        check_name("agent", agent)
        if not money.is_whole(budget_micros, 1, self._amount_max_micros):
            raise InvalidRequest("budget", "must be an amount above 0 and at most "
                                           "IOU_AMOUNT_MAX")
        if not money.is_whole(ttl_s, 1, TASK_TTL_S_MAX):
            raise InvalidRequest("ttl_s", f"must be a whole number from 1 to {TASK_TTL_S_MAX}")
        if name is not None and not (isinstance(name, str) and 1 <= len(name) <=
                                     TASK_NAME_CHARS_MAX and name.isascii()
                                     and name.isprintable()):
            raise InvalidRequest("name", f"must be 1 to {TASK_NAME_CHARS_MAX} printable ASCII "
                                         "characters")
        caps = dict(max_calls or {})
        if len(caps) > MAX_CALLS_NAMES_MAX:
            raise InvalidRequest("max_calls", f"must name at most {MAX_CALLS_NAMES_MAX} tools "
                                              "or categories")
        for what, count in caps.items():
            check_name(f"max_calls.{what}", what)
            if not money.is_whole(count, 1, CALLS_MAX):
                raise InvalidRequest(f"max_calls.{what}", f"must be a whole number of calls "
                                                          f"from 1 to {CALLS_MAX}")
        derived = task_id is not None
        task_id = task_id if task_id is not None else ids.task_id()
        reply = await self._calls.task_open(agent, task_id, budget_micros,
                                            self._amount_max_micros, ttl_s * 1000,
                                            TASK_TTL_S_MAX * 1000, name or "", caps)
        if (derived and isinstance(reply, Refused) and reply.code == Code.BAD_ARGUMENT
                and int(reply.fields.get("argv_index", 0)) == 2):
            # The script refuses an existing id: the request's own twin, unless it is older
            # than an Idempotency-Key lives (the key reused later is a new request).
            earlier = await self.task(agent, task_id)
            if earlier.created_ms >= await self._now_ms() - KEYED_TWIN_MS:
                return earlier
            return await self.open_task(agent, budget_micros, name, ttl_s, max_calls)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent)
        return TaskState(task_id, agent, name, budget_micros, 0, 0, 0, reply.created_ms,
                         reply.expires_at_ms, "open", None, dict(sorted(caps.items())))

    @maps_store_errors
    async def task(self, agent: str, task_id: str) -> TaskState:
        """One of the agent's tasks (404 for an unknown one, or another agent's)."""
        check_name("agent", agent)
        ref = task_ref(task_id)
        assert ref is not None
        fields, now_ms = await asyncio.gather(
            stored.task_fields(self._conn, self._calls.partitions, agent, ref), self._now_ms())
        if not fields:
            raise NotFound(f"No task {task_id} for agent {agent}.")
        return task_state(ref, agent, fields, now_ms)

    @maps_store_errors
    async def close_task(self, agent: str, task_id: str) -> tuple[TaskState, int]:
        """Close the task (its open holds released) and answer its summary and how many
        holds were released; closing a closed task answers its summary again."""
        check_name("agent", agent)
        ref = task_ref(task_id)
        assert ref is not None
        batch = CLOSE_FIRST_IDS
        while True:
            reply = await self._calls.task_close(agent, ref, [ids.uuid7() for _ in range(batch)])
            if not isinstance(reply, Refused):
                break
            if reply.code != Code.TASK_IDS_SHORT:
                raise refusal(reply, agent=agent, task=ref)
            batch = reply.integer("needed")
        return await self.task(agent, ref), reply.released_count

    @maps_store_errors
    async def agent_tasks_page(self, agent: str, limit: int, cursor: str | None
                               ) -> tuple[list[TaskState], str | None]:
        """One page of the agent's tasks, newest first, after ``cursor`` (the previous
        page's ``next_cursor``: ``<created ms>.<task id>``), and the cursor of the next page
        (None on the last). Tasks whose hash expired meanwhile are left out of the page."""
        check_name("agent", agent)
        if not money.is_whole(limit, 1, TASKS_LISTED_MAX):
            raise InvalidRequest("limit", f"must be a whole number from 1 to {TASKS_LISTED_MAX}")
        after = None if cursor is None else parse_task_cursor(cursor)
        partitions = self._calls.partitions
        exists, page, now_ms = await asyncio.gather(
            stored_agents.exists(self._conn, partitions, agent),
            stored.task_page(self._conn, partitions, agent, limit + 1, after), self._now_ms())
        if not exists:
            raise NotFound(f"No agent named {agent}.")
        shown = page[:limit]
        found = await stored.tasks_fields(self._conn, partitions, agent, [t for _, t in shown])
        next_cursor = f"{shown[-1][0]}.{shown[-1][1]}" if len(page) > limit else None
        return [task_state(t, agent, f, now_ms) for t, f in found], next_cursor

    @maps_store_errors
    async def agent_tasks(self, agent: str, limit: int = 100) -> list[TaskState]:
        """The agent's most recent tasks (newest first), open or not, while kept (a day
        past their expiry or close)."""
        check_name("agent", agent)
        if not money.is_whole(limit, 1, TASKS_LISTED_MAX):
            raise InvalidRequest("limit", f"must be a whole number from 1 to {TASKS_LISTED_MAX}")
        partitions = self._calls.partitions
        exists, found_ids, now_ms = await asyncio.gather(
            stored_agents.exists(self._conn, partitions, agent),
            stored.task_ids(self._conn, partitions, agent, limit), self._now_ms())
        if not exists:
            raise NotFound(f"No agent named {agent}.")
        found = await stored.tasks_fields(self._conn, partitions, agent, found_ids)
        return [task_state(t, agent, f, now_ms) for t, f in found]
