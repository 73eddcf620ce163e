"""How far the ledger is behind Redis: age of the oldest unacknowledged event, and count."""

from __future__ import annotations

from gateway.ledger.writer import GROUP
from gateway.metering.errors import maps_store_errors
from gateway.store import streams
from gateway.store.connections import Connection


@maps_store_errors
async def ledger_backlog(conn: Connection, partitions: int) -> tuple[float, int]:
    """(seconds the oldest event not yet in the ledger has waited, events not yet in it)."""
    return await streams.backlog(conn, streams.event_streams(partitions), GROUP)
