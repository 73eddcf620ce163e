"""Open the right connection for a URL: one server, or a Redis Cluster."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.store.cluster import ClusterConnection
from gateway.store.resp import RedisAddress, RedisConnection, parse_redis_url


class Connection(Protocol):
    """What the engine, the writer and the API need of a Redis connection."""

    address: RedisAddress

    @property
    def url(self) -> str: ...

    @property
    def batch_factor(self) -> float: ...

    async def call(self, *args: Any) -> Any: ...

    async def call_or_raise(self, *args: Any) -> Any: ...

    async def call_each(self, *args: Any) -> list[Any]: ...

    def close(self) -> None: ...


def open_connection(url: str, decode: bool = False) -> Connection:
    if url.startswith("redis+cluster://"):
        return ClusterConnection(url, decode=decode)
    return RedisConnection(parse_redis_url(url), decode=decode)
