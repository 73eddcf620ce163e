"""The metering domain's facade: one object that starts the parts and offers their
operations to the HTTP layer, the CLI, the ledger and the tests. No HTTP here.

The work is split by concern: charges.py, holds.py, agents.py (agents and keys) and
catalog.py. Every operation that moves money is one script (one Redis round trip,
auto-pipelined with the calls of concurrent callers); Python validates inputs for clear
errors, and the scripts validate them again and hold every rule that matters for money.
The domain is given its values (``DomainSettings``); it does not read the environment.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.metering.agents import Agents
from gateway.metering.catalog import Catalog
from gateway.metering.charges import Charges
from gateway.metering.children import Children
from gateway.metering.errors import maps_store_errors
from gateway.metering.holds import HOLD_TTL_S_DEFAULT as HOLD_TTL_S_DEFAULT
from gateway.metering.holds import Holds
from gateway.metering.inputs import derived_key as derived_key
from gateway.metering.models import DomainSettings
from gateway.metering.refunds import Refunds
from gateway.metering.tasks import Tasks
from gateway.store import keys, meta
from gateway.store.calls import ScriptCalls
from gateway.store.connections import Connection

log = logging.getLogger("iou.engine")


class Engine:
    """The typed domain API the HTTP layer and the CLI call.

    Its operations are the parts' own bound methods (no extra call on the hot path)."""

    def __init__(self, conn: Connection, settings: DomainSettings) -> None:
        self.conn = conn
        self.settings = settings
        self.calls = ScriptCalls(conn, settings.partitions,
                                 keys.TEST_CLOCK_KEY if settings.test_clock else None)
        self.scripts = self.calls.scripts
        self.catalog = Catalog(conn, self.calls, settings)
        self.agents = Agents(conn, self.calls, settings)
        self.charges = Charges(self.calls, settings.amount_max_micros, self.catalog.category_of)
        self.holds = Holds(self.calls, settings.amount_max_micros, self.catalog.category_of)
        # Would-be refusals of shadow limits: the runtime points report at its metric.
        self.shadow_seen = self.holds.shadow_seen = self.charges.shadow_seen
        self.tasks = Tasks(conn, self.calls, settings.amount_max_micros, self.agents.clock_ms)
        self.refunds = Refunds(self.calls, settings.amount_max_micros)
        self.children = Children(conn, self.calls, settings)
        self._tasks: list[asyncio.Task[None]] = []
        self.charge = self.charges.charge
        self.hold, self.capture = self.holds.hold, self.holds.capture
        self.release, self.expire_holds = self.holds.release, self.holds.expire_holds
        self.refund, self.debit = self.refunds.refund, self.refunds.debit
        self.create_child, self.reclaim = self.children.create_child, self.children.reclaim
        self.parent_of, self.children_of = self.children.parent_of, self.children.children_of
        a = self.agents
        self.create_agent, self.fund, self.freeze = a.create_agent, a.fund, a.freeze
        self.set_limits, self.add_key, self.has_key = a.set_limits, a.add_key, a.has_key
        self.revoke_key, self.authenticate = a.revoke_key, a.authenticate
        self.shadow_sums = a.shadow_sums
        self.agent_state, self.agent_names, self.clock_ms = a.agent_state, a.agent_names, a.clock_ms
        self.walls_used = a.walls_used
        t = self.tasks
        self.open_task, self.task, self.close_task = t.open_task, t.task, t.close_task
        self.agent_tasks, self.agent_tasks_page = t.agent_tasks, t.agent_tasks_page
        c = self.catalog
        self.set_tool, self.delete_tool, self.tools = c.set_tool, c.delete_tool, c.tools
        self.refresh_catalog, self.sync_tool_copies = c.refresh, c.sync_copies

    @property
    def partitions(self) -> int:
        """The store's partition count (settled at start: the recorded one wins)."""
        return self.calls.partitions

    def agent_keys(self, agent: str) -> keys.AgentKeys:
        return self.calls.agent_keys(agent)

    @maps_store_errors
    async def start(self, background: bool = True) -> None:
        """Load scripts, settle the partition count, load the catalog, start the sweeper."""
        await self.scripts.preload()
        stored = await meta.settle_partitions(self.conn, self.settings.partitions)
        if stored != self.settings.partitions:
            log.warning("store was initialised with %d partitions; using %d, not %d",
                        stored, stored, self.settings.partitions)
        self.calls.partitions = stored
        await self.catalog.refresh()
        if background:
            self._tasks.append(asyncio.create_task(self.holds.sweep_forever()))
            self._tasks.append(asyncio.create_task(self.catalog.refresh_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
