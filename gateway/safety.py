"""Start-up checks: refuse a Redis that can evict balances; warn when persistence is off."""

from __future__ import annotations

import logging

from gateway.errors import UnsafeRedis
from gateway.redis_io import RedisConnection

log = logging.getLogger("iou.safety")

SAFE_POLICIES = {"noeviction"}
# volatile-* policies evict only keys with a TTL; balances have none, but windows and
# idempotency records do, and losing an idempotency record can charge a retry twice.


def _info_fields(raw: bytes) -> dict[str, str]:
    fields = {}
    for line in raw.decode().splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


async def check_redis(conn: RedisConnection, allow_unsafe: bool) -> list[str]:
    """Raise UnsafeRedis on an evicting policy (unless allowed); return warnings."""
    fields = _info_fields(await conn.call_or_raise(b"INFO", b"memory"))
    fields.update(_info_fields(await conn.call_or_raise(b"INFO", b"persistence")))
    warnings = []
    policy = fields.get("maxmemory_policy")
    if policy is not None and policy not in SAFE_POLICIES:
        message = (f"Redis at {conn.address.display} has maxmemory-policy {policy}, which can "
                   "delete balances and idempotency records under memory pressure; fix it "
                   "with `redis-cli CONFIG SET maxmemory-policy noeviction` (and the same line "
                   "in redis.conf)")
        if not allow_unsafe:
            raise UnsafeRedis(message + ", or set IOU_ALLOW_UNSAFE_REDIS=1 to run anyway.")
        log.warning("IOU_ALLOW_UNSAFE_REDIS=1: running anyway: %s", message)
        warnings.append(message)
    if fields.get("aof_enabled", "1") != "1":
        message = (f"Redis at {conn.address.display} runs without appendonly: acknowledged "
                   "charges since the last snapshot are lost if it dies; enable it with "
                   "`redis-cli CONFIG SET appendonly yes`")
        log.warning(message)
        warnings.append(message)
    return warnings
