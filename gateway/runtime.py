"""Wiring: settings -> Redis (embedded or configured) -> safety checks -> a started Engine."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from urllib.parse import urlsplit

from gateway.config import Settings
from gateway.metering.engine import Engine
from gateway.observability import count_shadow_refusal
from gateway.store import safety
from gateway.store.connections import Connection, open_connection
from gateway.store.embedded import EmbeddedRedis, start_embedded
from gateway.store.errors import StoreUnavailable

log = logging.getLogger("iou.runtime")

WAIT_RETRY_S = 1.0  # between attempts to reach a Redis that is not up yet
WAIT_LOG_EVERY_S = 30.0  # one "still waiting" line per this many seconds


class StartAbandoned(Exception):
    """Asked to stop (SIGTERM, SIGINT) while the start-up still waited for Redis."""


@dataclass
class Runtime:
    engine: Engine
    embedded: EmbeddedRedis | None
    warnings: list[str]

    async def close(self) -> None:
        await self.engine.stop()
        self.engine.conn.close()
        if self.embedded is not None:
            self.embedded.stop()


def redis_url_of(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """The URL to use: IOU_REDIS_URL, or the embedded server of IOU_DATA_DIR."""
    if settings.redis_url is not None:
        return settings.redis_url, None
    embedded = start_embedded(settings.data_dir, attach=settings.embedded_attach)
    return embedded.url, embedded


def redis_address(settings: Settings) -> str:
    """Where Redis is, for an operator's message: ``host:port`` (each seed of a cluster URL),
    a socket path, or the embedded server's folder; never the password of the URL."""
    if settings.redis_url is None:
        return f"{settings.data_dir} (embedded)"
    parts = urlsplit(settings.redis_url)
    if parts.scheme == "unix":
        return parts.path
    return parts.netloc.rpartition("@")[2] or parts.scheme


async def open_runtime(settings: Settings, background: bool = True,
                       wait: bool = False) -> Runtime:
    """Connect, refuse an unsafe Redis, load scripts and start the engine. With ``wait`` (a
    gateway worker or a ledger writer, which may start before their Redis), an unreachable
    Redis is tried again every second until it answers, instead of failing."""
    url, embedded = redis_url_of(settings)
    conn = open_connection(url)
    try:
        warnings = await _checked(conn, settings, wait)
        engine = Engine(conn, settings)
        engine.shadow_seen.report = count_shadow_refusal
        await engine.start(background=background)
    except BaseException:
        conn.close()
        if embedded is not None:
            embedded.stop()
        raise
    return Runtime(engine, embedded, warnings)


async def _checked(conn: Connection, settings: Settings, wait: bool) -> list[str]:
    if not wait:
        return await safety.check_redis(conn, settings.allow_unsafe_redis)
    logged_at: float | None = None
    with _stop_requested() as asked_to_stop:
        while True:
            try:
                return await safety.check_redis(conn, settings.allow_unsafe_redis)
            except StoreUnavailable:
                if asked_to_stop():  # before Redis ever answered
                    raise StartAbandoned(f"stopped while waiting for Redis at "
                                         f"{redis_address(settings)}") from None
            if logged_at is None or time.monotonic() - logged_at >= WAIT_LOG_EVERY_S:
                logged_at = time.monotonic()
                log.warning("waiting for Redis at %s (unreachable); trying again every "
                            "%.0f s", redis_address(settings), WAIT_RETRY_S)
            await asyncio.sleep(WAIT_RETRY_S)


@contextmanager
def _stop_requested() -> Iterator[Callable[[], bool]]:
    """Whether SIGTERM or SIGINT asked this process to stop while a start-up waits for Redis:
    uvicorn's own handlers (still called) only mark the server to stop once it runs, so
    without this a worker waiting in its start-up would outlive every SIGTERM. A signal that
    uvicorn's handler took before the wait began (while the app was imported) counts too: the
    handler found is a server's ``handle_exit``, and that server's ``should_exit`` is set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {int(s): signal.getsignal(s) for s in signals}
    servers = [getattr(h, "__self__", None) for h in previous.values()]

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        earlier = previous[signum]
        if callable(earlier):
            earlier(signum, frame)

    def asked() -> bool:
        return stop.is_set() or any(getattr(s, "should_exit", False) is True for s in servers)

    for s in signals:
        signal.signal(s, handler)
    try:
        yield asked
    finally:
        for number, earlier in previous.items():
            signal.signal(number, earlier)
