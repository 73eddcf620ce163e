"""Reconcile: after draining, every agent's Redis balance equals what its ledger adds up to.

For each agent: grants + funds - charges - captured costs - open holds, from the ledger,
must equal the balance in Redis. Charges racing with the check can make an agent look
off for a moment, so drifted agents are drained and checked again before being reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.ledger.store import LedgerStore
from gateway.ledger.writer import LedgerWriter
from gateway.metering.engine import Engine

RECHECKS_MAX = 3
PAGE = 1000


@dataclass(frozen=True)
class Drift:
    agent: str
    redis_micros: int | None  # None: in the ledger but not in Redis
    ledger_micros: int | None  # None: in Redis but not in the ledger


async def redis_balances(engine: Engine, only: list[str] | None = None) -> dict[str, int]:
    names = only if only is not None else await all_agent_names(engine)
    return await engine.agents.balances(names)


async def all_agent_names(engine: Engine) -> list[str]:
    names: list[str] = []
    while True:
        page = await engine.agent_names(PAGE, names[-1] if names else None)
        names += page
        if len(page) < PAGE:
            return names


async def reconcile(engine: Engine, store: LedgerStore, writer: LedgerWriter) -> list[Drift]:
    """The agents whose Redis balance and ledger disagree after draining (empty: clean)."""
    await writer.drain()
    drift = _compare(await redis_balances(engine), await store.agent_totals())
    for _ in range(RECHECKS_MAX):
        if not drift:
            return []
        suspects = [d.agent for d in drift]
        current = await redis_balances(engine, suspects)
        await writer.drain()
        totals = await store.agent_totals()
        drift = _compare(current, {a: totals[a] for a in suspects if a in totals},
                         only=suspects)
    return drift


def _compare(redis: dict[str, int], ledger: dict[str, int],
             only: list[str] | None = None) -> list[Drift]:
    names = sorted(set(redis) | set(ledger)) if only is None else sorted(only)
    return [Drift(n, redis.get(n), ledger.get(n)) for n in names
            if redis.get(n) != ledger.get(n)]
