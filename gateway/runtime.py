"""Wiring: settings -> Redis (embedded or configured) -> safety checks -> a started Engine."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Settings
from gateway.metering.engine import Engine
from gateway.store import safety
from gateway.store.connections import open_connection
from gateway.store.embedded import EmbeddedRedis, start_embedded


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
    embedded = start_embedded(settings.data_dir)
    return embedded.url, embedded


async def open_runtime(settings: Settings, background: bool = True) -> Runtime:
    """Connect, refuse an unsafe Redis, load scripts and start the engine."""
    url, embedded = redis_url_of(settings)
    conn = open_connection(url)
    try:
        warnings = await safety.check_redis(conn, settings.allow_unsafe_redis)
        engine = Engine(conn, settings)
        await engine.start(background=background)
    except BaseException:
        conn.close()
        if embedded is not None:
            embedded.stop()
        raise
    return Runtime(engine, embedded, warnings)
