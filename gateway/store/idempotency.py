"""HTTP-level idempotency records (the routes whose script has none of its own): one
string per caller scope and key, ``<digest>`` while the request runs and
``<digest>\\n<meta>\\n<body>`` once it answered, with its expiry set by the same command."""

from __future__ import annotations

from gateway.store import keys
from gateway.store.connections import Connection

# Removes a binding only while it still holds this request's bare digest (no answer yet).
_UNBIND = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"


def record_name(scope: str, key: str, partitions: int) -> str:
    # "v2.": records are strings now (they were hashes), so an old record is never misread.
    return keys.http_idempotency(scope, "v2." + keys.short_digest(key), partitions)


async def bind(conn: Connection, name: str, digest: str, ttl_ms: int) -> bool:
    """Bind the record to ``digest`` for ``ttl_ms`` unless it exists; one command, so no
    crash leaves a record without expiry. True when bound."""
    return bool(await conn.call_or_raise(b"SET", name, digest, b"NX", b"PX", ttl_ms))


async def read(conn: Connection, name: str) -> bytes | None:
    """What the record holds, None when there is none (it may have just expired)."""
    raw: bytes | None = await conn.call_or_raise(b"GET", name)
    return raw


async def keep(conn: Connection, name: str, value: bytes, ttl_ms: int) -> None:
    """Replace the binding by the answer, with its expiry, in one command."""
    await conn.call_or_raise(b"SET", name, value, b"PX", ttl_ms)


async def unbind(conn: Connection, name: str, digest: str) -> None:
    """Forget a binding that still holds ``digest`` alone (a refused request)."""
    await conn.call_or_raise(b"EVAL", _UNBIND, 1, name, digest)
