"""HTTP-level idempotency for the POST routes whose script has none of its own.

Money routes (charge, holds, capture, release, fund) are idempotent inside their Lua
script; the others (agent creation, batches, freeze, keys, invoke) keep the first
response here: status and body bytes, 24 h, per caller. A refusal is not kept, so a
retry after fixing the cause runs again; a retry while the first is still running is 409.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway import keys
from gateway.engine import IDEMPOTENCY_KEY_RE, Engine
from gateway.errors import GatewayError, IdempotencyConflict, InvalidRequest

PENDING_TTL_MS = 120_000
DONE_TTL_MS = 86_400_000
REPLAYED_HEADER = "Idempotent-Replayed"


def idempotency_key(request: Request) -> str | None:
    return check_idempotency_key(request.headers.get("idempotency-key"))


def check_idempotency_key(key: str | None) -> str | None:
    if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise InvalidRequest("Idempotency-Key", "must be 1 to 128 printable ASCII characters")
    return key


def request_digest(request: Request, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


async def once(engine: Engine, scope: str, key: str | None, digest: str,
               handler: Callable[[], Awaitable[Response]]) -> Response:
    """Run ``handler`` at most once per (scope, key); replay its first success."""
    if key is None:
        return await handler()
    name = keys.http_idempotency(scope, hashlib.sha256(key.encode()).hexdigest()[:32],
                                 engine.partitions)
    conn = engine.conn
    created = await conn.call_or_raise(b"HSETNX", name, b"h", digest)
    if not created:
        return await _replay(engine, name, digest)
    await conn.call_or_raise(b"PEXPIRE", name, PENDING_TTL_MS)
    try:
        response = await handler()
    except GatewayError:
        await conn.call_or_raise(b"DEL", name)
        raise
    if response.status_code >= 400:
        await conn.call_or_raise(b"DEL", name)
        return response
    kept = {k: v for k, v in response.headers.items() if k.startswith("x-iou-")}
    await conn.call_or_raise(b"HSET", name, b"s", response.status_code, b"b", response.body,
                             b"t", response.media_type or "", b"x", orjson.dumps(kept))
    await conn.call_or_raise(b"PEXPIRE", name, DONE_TTL_MS)
    return response


async def _replay(engine: Engine, name: str, digest: str) -> Response:
    stored, status, body, media, kept = await engine.conn.call_or_raise(
        b"HMGET", name, b"h", b"s", b"b", b"t", b"x")
    if stored is None:
        raise IdempotencyConflict("The first request with this Idempotency-Key just failed; "
                                  "retry.")
    if stored.decode() != digest:
        raise IdempotencyConflict("This Idempotency-Key was used with a different request.")
    if status is None:
        raise IdempotencyConflict("A request with this Idempotency-Key is still running.")
    headers = {**orjson.loads(kept or b"{}"), REPLAYED_HEADER: "true"}
    return Response(body, status_code=int(status), media_type=media.decode() or None,
                    headers=headers)
