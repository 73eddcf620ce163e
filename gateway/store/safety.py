"""Start-up checks: refuse a Redis that can evict balances; warn when persistence is off."""

from __future__ import annotations

import logging

from gateway.store.connections import Connection
from gateway.store.errors import StoreUnsafe

log = logging.getLogger("iou.safety")

SAFE_POLICIES = {"noeviction"}
# volatile-* policies evict only keys with a TTL; balances have none, but windows and
# idempotency records do, and losing an idempotency record can charge a retry twice.


def info_fields(raw: bytes | str) -> dict[str, str]:
    """The ``name:value`` lines of an INFO reply (or CLUSTER INFO) as a dict."""
    fields = {}
    text = raw.decode() if isinstance(raw, bytes) else raw
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


async def check_redis(conn: Connection, allow_unsafe: bool) -> list[str]:
    """Raise StoreUnsafe on an evicting policy (unless allowed); return warnings."""
    warnings: list[str] = []
    memory = await conn.call_each(b"INFO", b"memory")
    persistence = await conn.call_each(b"INFO", b"persistence")
    for mem, per in zip(memory, persistence, strict=True):  # every master of a cluster
        fields = info_fields(mem)
        fields.update(info_fields(per))
        warnings += _check_node(conn, fields, allow_unsafe)
    return warnings


def _check_node(conn: Connection, fields: dict[str, str], allow_unsafe: bool) -> list[str]:
    warnings = []
    policy = fields.get("maxmemory_policy")
    if policy is not None and policy not in SAFE_POLICIES:
        message = (f"Redis at {conn.address.display} has maxmemory-policy {policy}, which can "
                   "delete balances and idempotency records under memory pressure; fix it "
                   "with `redis-cli CONFIG SET maxmemory-policy noeviction` (and the same line "
                   "in redis.conf)")
        if not allow_unsafe:
            raise StoreUnsafe(message + ", or set IOU_ALLOW_UNSAFE_REDIS=1 to run anyway.")
        log.warning("IOU_ALLOW_UNSAFE_REDIS=1: running anyway: %s", message)
        warnings.append(message)
    if fields.get("aof_enabled", "1") != "1":
        message = (f"Redis at {conn.address.display} runs without appendonly: acknowledged "
                   "charges since the last snapshot are lost if it dies; enable it with "
                   "`redis-cli CONFIG SET appendonly yes`")
        log.warning(message)
        warnings.append(message)
    return warnings
