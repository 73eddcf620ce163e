"""Choose the ledger store from IOU_LEDGER_URL (default: SQLite under IOU_DATA_DIR)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import Settings
from gateway.ledger.store import LedgerStore


def ledger_location(settings: Settings) -> str:
    return settings.ledger_url or f"sqlite:///{(settings.data_dir / 'ledger.db').resolve()}"


def ledger_shown(settings: Settings) -> str:
    """The ledger's location for logs and terminals: its URL without the password."""
    url = ledger_location(settings)
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.partition("@")
    if not sep or not at or ":" not in userinfo or "/" in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostpart}"


def open_store(settings: Settings) -> LedgerStore:
    url = ledger_location(settings)
    if url.startswith("sqlite:///"):
        from gateway.ledger.sqlite import SqliteStore

        return SqliteStore(Path(url[len("sqlite:///"):]))
    from gateway.ledger.postgres import PostgresStore

    return PostgresStore(url)
