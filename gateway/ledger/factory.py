"""Choose the ledger store from IOU_LEDGER_URL (default: SQLite under IOU_DATA_DIR)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import Settings
from gateway.ledger.store import LedgerStore


def ledger_location(settings: Settings) -> str:
    return settings.ledger_url or f"sqlite:///{(settings.data_dir / 'ledger.db').resolve()}"


def open_store(settings: Settings) -> LedgerStore:
    url = ledger_location(settings)
    if url.startswith("sqlite:///"):
        from gateway.ledger.sqlite import SqliteStore

        return SqliteStore(Path(url[len("sqlite:///"):]))
    from gateway.ledger.postgres import PostgresStore

    return PostgresStore(url)
