"""The ledger writer and the webhook deliverer wait inside Redis (XREADGROUP ... BLOCK), not
by polling: idle, they send a handful of reads a second; a new entry is read at once; a stop
ends a blocked read within its bound; and the deliverer's wait never rides the worker's
auto-pipelined connection (a blocked command would hold up the charges behind it)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import redis

from gateway.ledger.writer import BLOCK_MS, LedgerWriter
from gateway.metering.engine import Engine
from gateway.store.resp import RedisConnection
from gateway.webhooks import deliverer as webhooks
from gateway.webhooks.deliverer import WebhookDeliverer
from tests.ledger_helpers import store_for, writer_for

IDLE_S = 1.5
ROW_DEADLINE_S = 10.0


def _reads(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats").get("cmdstat_xreadgroup", {"calls": 0})
        return int(stats["calls"])
    finally:
        client.close()


async def _rows(writer: LedgerWriter, agent: str) -> int:
    return len(await writer.store.entries(agent, 10))


async def test_an_idle_writer_blocks_in_redis_and_wakes_for_a_new_entry(
        real_engine: Engine, tmp_path: Path) -> None:
    store = store_for(f"sqlite:///{tmp_path / 'ledger.db'}")
    writer = writer_for(real_engine, store)
    running = asyncio.create_task(writer.run())
    try:
        await asyncio.sleep(0.5)  # started: groups made, own pending entries read
        before = _reads(real_engine.conn.url)
        await asyncio.sleep(IDLE_S)
        # Polling 17 streams every 100 ms sent ~250 reads here; blocking sends one per
        # BLOCK_MS and one per second for the pending entries.
        assert _reads(real_engine.conn.url) - before <= 2 * IDLE_S * (1000 / BLOCK_MS + 1)
        await real_engine.create_agent("woken", grant_micros=1_000_000)
        deadline = time.monotonic() + ROW_DEADLINE_S
        while await _rows(writer, "woken") == 0:
            assert time.monotonic() < deadline, "the grant never reached the ledger"
            await asyncio.sleep(0.05)
        stopped_at = time.monotonic()
        writer.stop()
        await asyncio.wait_for(running, BLOCK_MS / 1000 + 5)
        assert time.monotonic() - stopped_at < BLOCK_MS / 1000 + 5
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        writer.close()
        await store.close()


async def test_the_deliverer_waits_on_its_own_connection(real_engine: Engine) -> None:
    shared = real_engine.conn
    assert isinstance(shared, RedisConnection)
    async with httpx.AsyncClient() as http:
        deliverer = WebhookDeliverer(real_engine, "s" * 32, http)
        running = asyncio.create_task(deliverer.run_forever())
        try:
            await asyncio.sleep(0.5)
            shared_before = shared.commands
            reads_before = _reads(real_engine.conn.url)
            await asyncio.sleep(IDLE_S)
            # Polling sent 2 commands per partition every 0.2 s on the shared connection.
            assert shared.commands == shared_before
            assert _reads(real_engine.conn.url) - reads_before <= 2 * IDLE_S * (
                1000 / webhooks.BLOCK_MS + 1)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
