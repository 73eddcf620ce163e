"""Running the ledger pieces as local commands: writer, reconcile, recover."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from gateway.config import Settings
from gateway.ledger import identity
from gateway.ledger.chain import ChainReport
from gateway.ledger.factory import open_store
from gateway.ledger.identity import StoreGuard, StoreState
from gateway.ledger.reconcile import Drift, reconcile
from gateway.ledger.recover import Recovered, recover
from gateway.ledger.store import StoreUnavailable
from gateway.ledger.writer import LedgerWriter
from gateway.runtime import Runtime, open_runtime
from gateway.store import meta

log = logging.getLogger("iou.writer")

ORPHAN_CHECK_S = 1.0
LEDGER_RETRY_S = 1.0  # between attempts to reach a ledger that was down at start


def _writer_for(runtime: Runtime, settings: Settings, consumer: str | None = None
                ) -> LedgerWriter:
    # The writer blocks on XREADGROUP: it gets a connection of its own.
    store = open_store(settings)
    writer = LedgerWriter(runtime.engine.conn.url, store, runtime.engine.partitions,
                          consumer)
    return writer


async def run_writer(settings: Settings, consumer: str | None = None,
                     parent_pid: int | None = None) -> None:
    """``iou writer``: run until SIGTERM/SIGINT, then finish the batch in hand and stop.

    With ``parent_pid`` (the writer of ``iou serve``), it also stops when that process is
    gone, so a gateway killed with SIGKILL leaves no writer behind."""
    runtime = await _open_unless_orphaned(settings, parent_pid)
    writer = _writer_for(runtime, settings, consumer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, writer.stop)
    orphan_watch = None if parent_pid is None else asyncio.create_task(
        _stop_when_orphaned(writer, parent_pid))
    try:
        if not await _prepared_when_reachable(writer):
            return
        await writer.store.set_meta("partitions", str(runtime.engine.partitions))
        # Events of a store that is not the ledger's (another deployment's Redis) must not
        # land in this ledger: the writer waits while the identities disagree.
        writer.gate = StoreGuard(runtime.engine, writer.store).passable
        log.info("ledger writer started")
        await writer.run()
    finally:
        if orphan_watch is not None:
            orphan_watch.cancel()
        await writer.store.close()
        writer.close()
        await runtime.close()
    log.info("ledger writer stopped: %s", writer.stats)


async def _prepared_when_reachable(writer: LedgerWriter) -> bool:
    """Migrate the ledger and create the stream groups; a ledger down at start (PostgreSQL
    starting after the gateway) is tried again every second, as the gateway's workers do,
    instead of the writer dying with a traceback. False when stopped before it was up."""
    logged = False
    while True:
        try:
            await writer.prepare()
            return True
        except StoreUnavailable as exc:
            if not logged:
                log.warning("the ledger cannot be reached (%s); trying again every %.0f s",
                            exc, LEDGER_RETRY_S)
                logged = True
        await asyncio.sleep(LEDGER_RETRY_S)
        if writer.stopping:
            return False


async def _open_unless_orphaned(settings: Settings, parent_pid: int | None) -> Runtime:
    """The runtime, once Redis answers (a writer may start before its Redis); a writer of
    ``iou serve`` gives up waiting when that process is gone."""
    opening = asyncio.ensure_future(open_runtime(settings, background=False, wait=True))
    while parent_pid is not None and not opening.done():
        await asyncio.wait({opening}, timeout=ORPHAN_CHECK_S)
        if not opening.done() and os.getppid() != parent_pid:
            opening.cancel()
            log.warning("the gateway process %d is gone: stopping the ledger writer",
                        parent_pid)
            raise SystemExit(0)
    return await opening


async def _stop_when_orphaned(writer: LedgerWriter, parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(ORPHAN_CHECK_S)
    log.warning("the gateway process %d is gone: stopping the ledger writer", parent_pid)
    writer.stop()


async def run_reconcile(settings: Settings) -> tuple[int, list[Drift]]:
    runtime = await open_runtime(settings, background=False)
    writer = _writer_for(runtime, settings)
    try:
        drift = await reconcile(runtime.engine, writer.store, writer)
        checked = len(await writer.store.agent_totals())
        # For the gateway's /metrics (iou_reconcile_drift_agents).
        await meta.record_drift(runtime.engine.conn, len(drift))
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
        done = await recover(runtime.engine, store, force)
        await identity.restore(runtime.engine, store)
        return done
    finally:
        await store.close()
        await runtime.close()


async def settle_store(settings: Settings) -> StoreState:
    """``iou serve`` at start: give a brand-new pair its identity, and on the embedded
    default rebuild a wiped store from the ledger at once (nobody else would). Returns the
    verdict after that; the workers keep checking it."""
    runtime = await open_runtime(settings, background=False)
    store = open_store(settings)
    try:
        await store.migrate()
        verdict = await identity.settle(runtime.engine, store)
        if verdict.state is StoreState.WIPED and settings.uses_embedded_redis:
            log.warning("the embedded store was wiped (its data files are gone): rebuilding "
                        "it from the ledger")
            done = await recover(runtime.engine, store)
            await identity.restore(runtime.engine, store)
            log.warning("recovered %d agents, %d keys, %d tools, %d open holds from the "
                        "ledger", done.agents, done.keys, done.tools, done.holds)
            return StoreState.OK
        if verdict.state is not StoreState.OK:
            log.error("store not ready: %s", identity.REASONS[verdict.state])
        return verdict.state
    except StoreUnavailable as exc:
        log.warning("the ledger cannot be reached at start (%s); the workers keep checking",
                    exc)
        return StoreState.UNVERIFIED
    finally:
        await store.close()
        await runtime.close()


async def run_verify(settings: Settings) -> list[ChainReport]:
    """Recompute every hash chain of the ledger (read-only but for a pending migration)."""
    store = open_store(settings)
    try:
        await store.migrate()
        return await store.verify_chains()
    finally:
        await store.close()
