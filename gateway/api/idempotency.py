"""HTTP-level idempotency for the POST routes whose script has none of its own.

Money routes (charge, holds, capture, release, fund) are idempotent inside their Lua
script. The others keep a record here, per caller scope and key, for 24 h:

- a *binding* of the key to the request's digest, created with its expiry in one command
  (``SET NX PX``), so no crash can leave a record without expiry; the same key with another
  body is 409 ``idempotency_conflict``;
- once the request succeeded, its answer (status, headers that matter, body without any
  secret), replayed to a retry with ``Idempotent-Replayed: true``.

What runs between the two is written so that running it again is safe: a retry that finds
a binding without an answer (the first request crashed, or is still running) runs the
request again, and the request recognises its own earlier side effect by what it derived
from the key (batch items: their own keys; agent creation and keys: the key id; freeze:
the state itself). A refusal is not kept: its binding is removed, so a retry after fixing
the cause runs again. Invoke, whose upstream call cannot be repeated safely, uses a short
running lease on top (see proxy.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import requests
from gateway.metering.engine import Engine
from gateway.metering.errors import GatewayError, IdempotencyConflict, maps_store_errors
from gateway.store import idempotency as records

RECORD_TTL_MS = 86_400_000
REPLAYED_HEADER = "Idempotent-Replayed"
KEPT_HEADERS = ("content-type", "cache-control")


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header, checked (api/requests.py has the pattern)."""
    return requests.idempotency_key(request.headers.get("idempotency-key"))


def request_digest(request: Request, body: bytes) -> str:
    h = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), body):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


@dataclass(frozen=True)
class Record:
    """What a binding holds: the digest, and once answered, the answer."""

    digest: str
    meta: dict[str, Any] | None  # None while there is no answer
    body: bytes


@dataclass(frozen=True)
class Binding:
    """One keyed request's place in the store."""

    engine: Engine
    name: str
    digest: str
    # The record found when the key was already bound (a retry), else None (first request).
    earlier: Record | None

    @property
    def token(self) -> str:
        """A hex digest of (record, request): what a request derives its ids from, the
        same on every retry of the same request and different for any other."""
        return hashlib.sha256(f"{self.name}\n{self.digest}".encode()).hexdigest()

    @maps_store_errors
    async def store(self, response: Response, body: bytes | None = None, ttl_ms: int =
                    RECORD_TTL_MS, **extra: Any) -> None:
        """Keep ``response`` as the answer (``body`` instead of its body when given: a body
        without secrets), with its expiry, in one command."""
        kept = {k: v for k, v in response.headers.items()
                if k.startswith("x-iou-") or k in KEPT_HEADERS}
        meta = {"s": response.status_code, "x": kept, **extra}
        value = b"\n".join((self.digest.encode(), orjson.dumps(meta),
                            response.body if body is None else body))
        await records.keep(self.engine.conn, self.name, value, ttl_ms)

    @maps_store_errors
    async def unbind(self) -> None:
        """Forget a refused request (only while its binding holds no answer)."""
        await records.unbind(self.engine.conn, self.name, self.digest)


BIND_TRIES = 64


@maps_store_errors
async def bind(engine: Engine, scope: str, key: str, digest: str,
               ttl_ms: int = RECORD_TTL_MS) -> Binding:
    """Bind ``key`` to ``digest`` for ``ttl_ms``, or find the earlier binding of the same
    request; another request's binding is 409 ``idempotency_conflict``."""
    name = records.record_name(scope, key, engine.partitions)
    # The earlier binding may vanish between the two commands: it expired, or a copy of this
    # request was refused and gave it back. Each miss is another request's whole turn, so
    # copies sent at once take up to one try each: 3 tries sent 409 to copies of one request.
    for _ in range(BIND_TRIES):
        if await records.bind(engine.conn, name, digest, ttl_ms):
            return Binding(engine, name, digest, None)
        raw = await records.read(engine.conn, name)
        if raw is not None:
            earlier = parse(raw)
            if earlier.digest != digest:
                raise IdempotencyConflict("This Idempotency-Key was used with a different "
                                          "request.")
            return Binding(engine, name, digest, earlier)
    raise IdempotencyConflict("This Idempotency-Key is changing hands; retry.")


def parse(raw: bytes) -> Record:
    digest, _, rest = raw.partition(b"\n")
    if not rest:
        return Record(digest.decode(), None, b"")
    meta, _, body = rest.partition(b"\n")
    return Record(digest.decode(), orjson.loads(meta), body)


def replay(record: Record) -> Response:
    """The stored answer of ``record`` (which has one), marked as replayed."""
    assert record.meta is not None
    headers = {**record.meta["x"], REPLAYED_HEADER: "true"}
    return Response(record.body, status_code=int(record.meta["s"]), headers=headers)


Handler = Callable[["Binding | None"], Awaitable[Response]]
Redact = Callable[[Response], bytes]


async def once(engine: Engine, scope: str, key: str | None, digest: str, handler: Handler,
               redact: Redact | None = None) -> Response:
    """Run ``handler`` so that retries with ``key`` have its effect once.

    ``handler`` gets the binding (None without a key) and must be safe to run again
    for a binding whose earlier run left no answer (see the module docstring). Its first
    success is kept (through ``redact`` when given) and replayed; a refusal is not kept."""
    if key is None:
        return await handler(None)
    binding = await bind(engine, scope, key, digest)
    if binding.earlier is not None and binding.earlier.meta is not None:
        return replay(binding.earlier)
    try:
        response = await handler(binding)
    except GatewayError:
        await binding.unbind()
        raise
    if response.status_code >= 400:
        await binding.unbind()
        return response
    await binding.store(response, None if redact is None else redact(response))
    return response
