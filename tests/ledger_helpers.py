"""Wiring a writer and a store to a test engine."""

from __future__ import annotations

from gateway.config import load_settings
from gateway.ledger.factory import open_store
from gateway.ledger.store import LedgerStore
from gateway.ledger.writer import LedgerWriter
from gateway.metering.engine import Engine


def store_for(ledger_url: str) -> LedgerStore:
    return open_store(load_settings({"IOU_LEDGER_URL": ledger_url}))


def writer_for(engine: Engine, store: LedgerStore, consumer: str = "test-writer"
               ) -> LedgerWriter:
    return LedgerWriter(engine.conn.url, store, engine.partitions,
                        consumer)
