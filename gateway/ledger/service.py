"""Running the ledger pieces as local commands: writer, reconcile, recover."""

from __future__ import annotations

import asyncio
import logging
import signal

from gateway import keys
from gateway.config import Settings
from gateway.ledger.factory import open_store
from gateway.ledger.reconcile import Drift, reconcile
from gateway.ledger.recover import Recovered, recover
from gateway.ledger.writer import LedgerWriter
from gateway.runtime import Runtime, open_runtime

log = logging.getLogger("iou.writer")


def _writer_for(runtime: Runtime, settings: Settings, consumer: str | None = None
                ) -> LedgerWriter:
    # The writer blocks on XREADGROUP: it gets a connection of its own.
    store = open_store(settings)
    writer = LedgerWriter(runtime.engine.conn.url, store, runtime.engine.partitions,
                          consumer, settings.fault_inject)
    return writer


async def run_writer(settings: Settings, consumer: str | None = None) -> None:
    """``iou writer``: run until SIGTERM/SIGINT, then finish the batch in hand and stop."""
    runtime = await open_runtime(settings, background=False)
    writer = _writer_for(runtime, settings, consumer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, writer.stop)
    try:
        await writer.prepare()
        await writer.store.set_meta("partitions", str(runtime.engine.partitions))
        log.info("ledger writer started")
        await writer.run()
    finally:
        await writer.store.close()
        writer.close()
        await runtime.close()
    log.info("ledger writer stopped: %s", writer.stats)


async def run_reconcile(settings: Settings) -> tuple[int, list[Drift]]:
    runtime = await open_runtime(settings, background=False)
    writer = _writer_for(runtime, settings)
    try:
        drift = await reconcile(runtime.engine, writer.store, writer)
        checked = len(await writer.store.agent_totals())
        # For the gateway's /metrics (iou_reconcile_drift_agents).
        await runtime.engine.conn.call_or_raise(b"HSET", keys.META, b"reconcile_drift",
                                                len(drift))
        return checked, drift
    finally:
        await writer.store.close()
        writer.close()
        await runtime.close()


async def run_recover(settings: Settings, force: bool) -> Recovered:
    runtime = await open_runtime(settings, background=False)
    store = open_store(settings)
    try:
        await store.migrate()
        return await recover(runtime.engine, store, force)
    finally:
        await store.close()
        await runtime.close()
