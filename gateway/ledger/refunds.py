"""The charge a refund names, read from the ledger (the durable record of every charge).

Choice (docs/design.md, "Refunds"): the charge path keeps nothing per charge in Redis (a
charge stays one script with no extra write, and Redis holds no per-charge record for
weeks); a refund reads the charge's cost, time, tool and category from the ledger, and
refund.lua keeps the running total refunded. A charge answered a moment ago may not be in
the ledger yet: the lookup then waits for the writer (the API waits at most
IOU_LEDGER_LAG_MAX_S), while the ledger has a backlog at all.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from gateway.ledger import schema
from gateway.ledger.store import LedgerStore
from gateway.metering.refunds import ChargeRef

# Charge ids are UUIDv7 in canonical lower-case form (gateway.metering.ids.uuid7).
CHARGE_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LOOKUP_WAIT_S = 2.0
POLL_S = 0.05

Backlog = Callable[[], Awaitable[int]]


async def charge_ref(store: LedgerStore, charge_id: str) -> ChargeRef | None:
    """The charge (kind charge or capture) with id ``charge_id``, None when the ledger has
    none."""
    if not CHARGE_ID_RE.fullmatch(charge_id):
        return None
    rows = await store.query(schema.CHARGE_FOR_REFUND, [charge_id])
    if not rows:
        return None
    agent, tool, category, cost, at_ms, refunded, task = rows[0]
    return ChargeRef(charge_id, str(agent), str(tool), str(category), int(cost), int(at_ms),
                     int(refunded), str(task) if task else None)


async def wait_for_charge(store: LedgerStore, charge_id: str, backlog: Backlog | None,
                          wait_s: float = LOOKUP_WAIT_S) -> ChargeRef | None:
    """``charge_ref``, polling for at most ``wait_s`` while events wait for the writer (a
    charge just answered is in Redis's stream before it is in the ledger). The backlog is
    read before the ledger: a row missing after an empty backlog is missing for good."""
    if not CHARGE_ID_RE.fullmatch(charge_id):
        return None
    deadline = time.monotonic() + wait_s
    while True:
        pending = 0 if backlog is None else await backlog()
        found = await charge_ref(store, charge_id)
        if found is not None or pending == 0 or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(POLL_S)
