"""SCRIPT FLUSH and FUNCTION FLUSH during a run: calls keep succeeding (NOSCRIPT and a
missing function reload), nothing twice."""

from __future__ import annotations

import asyncio

from gateway.metering.engine import Engine
from tests.helpers import T, events, setup_catalog


async def test_script_flush_during_run(engine: Engine) -> None:
    await setup_catalog(engine)
    await engine.create_agent("flushy", grant_micros=100 * T)
    stop = asyncio.Event()

    async def flusher() -> int:
        flushes = 0
        while not stop.is_set():
            await engine.conn.call_or_raise(b"SCRIPT", b"FLUSH")
            await engine.conn.call_or_raise(b"FUNCTION", b"FLUSH")  # the charge's library
            flushes += 1
            await asyncio.sleep(0.005)
        return flushes

    task = asyncio.create_task(flusher())
    results = []
    for _ in range(20):
        batch = await asyncio.gather(*(engine.charge("flushy", "web_search")
                                       for _ in range(25)))
        results.extend(batch)
    stop.set()
    flushes = await task
    assert flushes > 5 and engine.scripts.reloads > 0
    assert len(results) == 500
    assert (await engine.agent_state("flushy")).balance_micros == 100 * T - 500 * 50_000
    charges = [e for e in await events(engine, "flushy") if e["kind"] == "charge"]
    assert len(charges) == 500
