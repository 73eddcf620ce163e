"""The charge a refund names, read from the ledger (the durable record of every charge).

Choice (docs/design.md, "Refunds"): the charge path keeps nothing per charge in Redis (a
charge stays one script with no extra write, and Redis holds no per-charge record for
weeks); a refund reads the charge's cost, time, tool and category from the ledger, and
refund.lua keeps the running total refunded. A charge answered a moment ago may not be in
the ledger yet: the lookup then waits for the writer (the API waits at most
IOU_LEDGER_LAG_MAX_S), while events as old as the charge still wait for it.
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

# The gateway mints ids with its clock, the events carry Redis's: they may differ this much.
CLOCK_SKEW_MS = 2000

Backlog = Callable[[], Awaitable[int | None]]


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


def minted_ms(charge_id: str) -> int:
    """When a charge id was minted: a UUIDv7 starts with its Unix ms (48 bits)."""
    return int(charge_id[:8] + charge_id[9:13], 16)


async def wait_for_charge(store: LedgerStore, charge_id: str, backlog: Backlog | None,
                          wait_s: float = LOOKUP_WAIT_S) -> ChargeRef | None:
    """``charge_ref``, polling for at most ``wait_s`` while the charge may still be on its way
    to the ledger: the oldest event not yet in it (``backlog``: its Redis ms, None when none
    waits) is not newer than the charge's id. Once every event older than the charge is in
    the ledger, a missing row is missing for good: an unknown id answers at once. The backlog
    is read before the ledger, so a row written in between is found."""
    if not CHARGE_ID_RE.fullmatch(charge_id):
        return None
    deadline = time.monotonic() + wait_s
    while True:
        oldest_ms = None if backlog is None else await backlog()
        found = await charge_ref(store, charge_id)
        if (found is not None or oldest_ms is None or time.monotonic() >= deadline
                or oldest_ms > minted_ms(charge_id) + CLOCK_SKEW_MS):
            return found
        await asyncio.sleep(POLL_S)
