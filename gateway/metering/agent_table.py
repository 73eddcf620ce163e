"""The agents' summary table: every agent's balance, held and today's spending, sortable.

Why a table kept in memory, rebuilt now and then, rather than a sorted set kept by the
scripts: the sort keys (balance, held, spent today) change on every charge, hold and fund,
so a Redis index would cost every paid call a ZADD (or three) in every money-moving script,
for a view that a few operators look at. The table is instead read in pages of
``SCAN_PAGE_AGENTS`` by ``agent_scan.lua`` (one round trip per page, not per agent), and
rebuilt at most once per ``refresh_age_s``: never more often than ``age_min_s``, and for a
large store no more often than keeps the rebuilds below ``duty_max`` of the time (measured
at 100,000 agents: 0.25 s of gateway CPU and 0.8 s of Redis CPU per rebuild, 1-2 s of wall
time, so one table serves 100-120 s). Between rebuilds a request pages, sorts
and filters that table in memory, so a dashboard polling every 2 s costs a bisect and a
slice, not a read of every agent. A stale table is answered at once while a newer one is
built in the background, so no request waits for a large rebuild except the very first.
Each worker keeps its own table. Amounts are integer micros.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.store.calls import Refused

log = logging.getLogger("iou.agent_table")

SCAN_PAGE_AGENTS = 250  # agents per agent_scan.lua call: about 2 ms of Redis time, the most
# a charge may wait behind it (measured: 8 µs of Redis CPU per agent)
SORTS = ("agent", "balance", "held", "spent_today")
VIEWS_CACHED_MAX = 16  # (sort, filter) views kept per table
QUICK_BUILD_S = 0.05  # a table this quick to build is rebuilt inline when stale
# Below this many agents a table is rebuilt every age_min_s whatever its last build took: a
# few hundred agents cost Redis milliseconds, and on a loaded machine the wall time of a tiny
# build (scheduling noise) made the age tens of seconds, so a new agent stayed unseen.
SMALL_TABLE_ROWS = 10_000
DAY_MS = 86_400_000


class AgentRow(NamedTuple):
    agent: str
    balance_micros: int
    held_micros: int
    frozen: bool
    low_balance_micros: int  # 0: no low-balance threshold
    daily_micros: int  # 0: no daily cap
    spent_today_micros: int


@dataclass(frozen=True)
class Totals:
    agents: int
    balance_micros: int
    held_micros: int
    spent_today_micros: int
    frozen: int


SortKey = tuple[int, str]


@dataclass
class View:
    """The rows of one filter in ascending (value, name) order. A cursor is found by
    bisection with the sort key computed on the ~17 rows it visits, so a view holds no
    list of keys beside its rows."""

    rows: list[AgentRow]
    sort: str

    def _key(self, row: AgentRow) -> SortKey:
        return _key_of(row, self.sort)

    def page(self, descending: bool, limit: int, after: SortKey | None
             ) -> tuple[list[AgentRow], int, SortKey | None]:
        """Up to ``limit`` rows after the cursor ``after`` in the given direction: the rows,
        the position of the first one in this view (0-based) and the next cursor (None on
        the last page)."""
        if not descending:
            start = 0 if after is None else bisect.bisect_right(self.rows, after, key=self._key)
            end = min(start + limit, len(self.rows))
            rows = self.rows[start:end]
            more = end < len(self.rows)
            position = start
        else:
            end = (len(self.rows) if after is None
                   else bisect.bisect_left(self.rows, after, key=self._key))
            start = max(0, end - limit)
            rows = self.rows[start:end][::-1]
            more = start > 0
            position = len(self.rows) - end
        next_key = _key_of(rows[-1], self.sort) if rows and more else None
        return rows, position, next_key


def _sort_value(row: AgentRow, sort: str) -> int:
    if sort == "balance":
        return row.balance_micros
    if sort == "held":
        return row.held_micros
    if sort == "spent_today":
        return row.spent_today_micros
    return 0  # by name alone


def _key_of(row: AgentRow, sort: str) -> SortKey:
    return (_sort_value(row, sort), row.agent)


@dataclass
class AgentTable:
    """One reading of every agent, and the sorted, filtered views asked of it so far."""

    rows: list[AgentRow]
    as_of_ms: int  # the scripts' clock when the reading started
    build_s: float
    totals: Totals
    _views: OrderedDict[tuple[str, str, bool | None], View] = field(
        default_factory=OrderedDict)

    def view(self, sort: str, q: str = "", frozen: bool | None = None) -> View:
        """The rows whose name contains ``q`` (and whose frozen flag is ``frozen``, unless
        None), sorted ascending by ``sort`` then by name; built once per table."""
        assert sort in SORTS
        cache_key = (sort, q, frozen)
        found = self._views.get(cache_key)
        if found is not None:
            self._views.move_to_end(cache_key)
            return found
        rows = self._sorted(sort)
        if q or frozen is not None:
            rows = [r for r in rows if q in r.agent and (frozen is None or r.frozen == frozen)]
        made = View(rows, sort)
        self._views[cache_key] = made
        if len(self._views) > VIEWS_CACHED_MAX:
            self._views.popitem(last=False)
        return made

    def _sorted(self, sort: str) -> list[AgentRow]:
        whole = self._views.get((sort, "", None))
        if whole is not None:
            return whole.rows
        return sorted(self.rows, key=lambda r: (_sort_value(r, sort), r.agent))


def totals_of(rows: list[AgentRow]) -> Totals:
    return Totals(len(rows), sum(r.balance_micros for r in rows),
                  sum(r.held_micros for r in rows), sum(r.spent_today_micros for r in rows),
                  sum(1 for r in rows if r.frozen))


class AgentTables:
    """The newest table of one worker, refreshed when older than its refresh age."""

    def __init__(self, engine: Any, duty_max: float = 0.01, age_min_s: float = 1.0,
                 age_max_s: float = 120.0) -> None:
        self.engine = engine
        self.duty_max = duty_max
        self.age_min_s = age_min_s
        self.age_max_s = age_max_s
        self._table: AgentTable | None = None
        self._built_at = 0.0  # time.monotonic() when the table's reading started
        self._building: asyncio.Task[AgentTable] | None = None
        self._stale = False
        self.builds = 0

    def refresh_age_s(self) -> float:
        """How old a table may get: bounded so that rebuilding stays below ``duty_max``."""
        if self._table is None or len(self._table.rows) < SMALL_TABLE_ROWS:
            return self.age_min_s
        return min(self.age_max_s, max(self.age_min_s, self._table.build_s / self.duty_max))

    def invalidate(self) -> None:
        """Something an operator just did (a new agent) should show on the next read."""
        self._stale = True

    async def current(self) -> AgentTable:
        """A table no older than its refresh age, or, when a rebuild would be slow, the
        previous one while the new one is built in the background."""
        table = self._table
        if table is None:
            return await self._refresh()
        age_s = time.monotonic() - self._built_at
        if not self._stale and age_s < self.refresh_age_s():
            return table
        if table.build_s < QUICK_BUILD_S:
            return await self._refresh()
        self._refresh_soon()
        return table

    def _refresh_soon(self) -> None:
        if self._building is None or self._building.done():
            self._building = asyncio.ensure_future(self._build())
            self._building.add_done_callback(_log_failure)

    async def _refresh(self) -> AgentTable:
        self._refresh_soon()
        assert self._building is not None
        return await asyncio.shield(self._building)

    async def _build(self) -> AgentTable:
        self._stale = False
        started = time.monotonic()
        as_of_ms = await self.engine.clock_ms()
        rows: list[AgentRow] = []
        for partition in range(self.engine.partitions):
            rows.extend(await scan_partition(self.engine, partition, as_of_ms // DAY_MS))
        build_s = time.monotonic() - started
        table = AgentTable(rows, as_of_ms, build_s, totals_of(rows))
        self._table, self._built_at = table, started
        self.builds += 1
        return table


def _log_failure(task: asyncio.Task[AgentTable]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("building the agents' summary table failed: %s", task.exception())


async def scan_partition(engine: Any, partition: int, today: int) -> list[AgentRow]:
    """Every agent of one partition, in pages of SCAN_PAGE_AGENTS."""
    rows: list[AgentRow] = []
    cursor = ""
    while True:
        reply = await engine.calls.agent_scan(partition, cursor, SCAN_PAGE_AGENTS, today)
        if isinstance(reply, Refused):
            raise RuntimeError(f"agent_scan.lua refused argument {dict(reply.fields)}")
        page = [AgentRow(a.name, a.balance, a.held, a.frozen, a.low, a.daily, a.spent_today)
                for a in reply.agents]
        rows.extend(page)
        if len(page) < SCAN_PAGE_AGENTS:
            return rows
        cursor = page[-1].agent
