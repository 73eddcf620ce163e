"""Background sampling for /metrics: what a scrape must not ask Redis for itself.

Redis memory comes from ``INFO memory`` every REDIS_SAMPLE_INTERVAL_S, in each worker, so a
scrape (or many Prometheus servers scraping) adds no Redis round trip and an alert on memory
near maxmemory still sees a recent value.
"""

from __future__ import annotations

import asyncio
import logging

from gateway import observability as metrics
from gateway.store import server
from gateway.store.connections import Connection

log = logging.getLogger("iou.sampler")


async def sample_once(conn: Connection) -> None:
    """One sample of every Redis master's memory; a Redis that is down keeps the last one."""
    try:
        infos = await server.info_text_each(conn, b"memory")
    except Exception as exc:  # down or refusing: /readyz and the 503 alert say so
        log.debug("redis memory sample failed: %s", exc)
        return
    metrics.record_redis_memory(infos)


async def sample_forever(conn: Connection,
                         interval_s: float = metrics.REDIS_SAMPLE_INTERVAL_S) -> None:
    while True:
        await sample_once(conn)
        await asyncio.sleep(interval_s)
