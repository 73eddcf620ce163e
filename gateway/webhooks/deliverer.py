"""Webhooks: signed (timestamp included), at-least-once delivery from the Redis outbox.

The scripts queue ``balance.low`` and ``refill.requested`` in the same step as the charge
that crossed the threshold; ``balance.depleted`` is queued here after a refusal for
balance, at most once a minute per agent. A background task per worker reads the outbox
through the consumer group "webhooks" and POSTs each event; a failed delivery stays
pending and is retried with exponential backoff for an hour, then dropped with a log
line and a metric. Nothing here runs on a charge's own path.

Idle, the task waits inside Redis (XREADGROUP with BLOCK over every partition's outbox) on
a connection of its own: a blocked command would hold up every charge queued behind it on
the worker's auto-pipelined connection. Redis Cluster refuses a read across slots: there
it reads each outbox and waits BLOCK_MS between empty passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import time
from typing import Any

import httpx
import orjson

from gateway.metering import ids
from gateway.metering.engine import Engine
from gateway.metering.errors import GatewayError, maps_store_errors
from gateway.metering.money import format_amount, parse_amount
from gateway.observability import WEBHOOK_DROPPED
from gateway.store import agents as stored
from gateway.store import streams
from gateway.store.connections import Connection, open_connection
from gateway.store.errors import GroupMissing, StoreUnavailable

log = logging.getLogger("iou.webhooks")

GROUP = b"webhooks"
READ_COUNT_MAX = 50
# How long an idle read waits for new events; also how often due retries are looked for
# (the first retry comes after BACKOFF_FIRST_S) and the bound on a clean stop's wait.
BLOCK_MS = 1000
RETRY_WAIT_S = 1.0  # after a failed pass (Redis down)
TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
GIVE_UP_AFTER_S = 3600.0
DEPLETED_EVERY_S = 60


def signature(secret: str, body: bytes, at_s: int) -> str:
    """The X-IOU-Signature header value: ``t=<at_s>,v1=<hex HMAC-SHA256 of "<at_s>.<body>">``.

    Stripe's scheme: the timestamp is inside the signed bytes, so a receiver that refuses a
    ``t`` older than a few minutes cannot be fed a captured delivery later."""
    signed = str(at_s).encode() + b"." + body
    return f"t={at_s},v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def backoff_s(deliveries: int) -> float:
    return float(min(BACKOFF_FIRST_S * 2.0 ** max(deliveries - 1, 0), BACKOFF_MAX_S))


@maps_store_errors
async def queue_depleted(engine: Engine, agent: str, refusal: GatewayError) -> None:
    """Queue balance.depleted for an agent with a webhook, at most once a minute."""
    balance_micros = parse_amount(str(refusal.details.get("balance", "0")), allow_zero=True)
    conn, partitions = engine.conn, engine.partitions
    if not await stored.mark_depleted(conn, partitions, agent, DEPLETED_EVERY_S):
        return
    url = await stored.webhook_url(conn, partitions, agent)
    if url is None:
        return
    now_ms = int(time.time() * 1000)
    await streams.queue_webhook(
        conn, partitions, agent,
        [b"event_id", ids.uuid7() + ":balance.depleted", b"event", b"balance.depleted",
         b"agent", agent, b"balance", str(balance_micros), b"threshold", b"", b"at",
         str(now_ms), b"url", url])


class WebhookDeliverer:
    def __init__(self, engine: Engine, secret: str, client: httpx.AsyncClient) -> None:
        self._engine = engine
        self._secret = secret
        self._client = client
        self._consumer = f"{socket.gethostname()}-{os.getpid()}".encode()
        # The deliverer's own connection, opened by run_forever (the engine's until then).
        self._conn: Connection = engine.conn
        self.delivered = 0
        self.dropped = 0
        self.failures = 0

    async def run_forever(self) -> None:
        """Deliver until cancelled, on a connection of its own (closed on the way out)."""
        conn = self._conn = open_connection(self._engine.conn.url)
        try:
            await self._ensure_groups()
            while True:
                await self._pass_or_wait()
        finally:
            conn.close()

    async def _pass_or_wait(self) -> None:
        try:
            await self.pass_once(BLOCK_MS)
        except (GatewayError, StoreUnavailable) as exc:
            log.warning("webhook outbox unreachable: %s", exc)
            await asyncio.sleep(RETRY_WAIT_S)
        except Exception:
            log.exception("webhook delivery pass failed")
            await asyncio.sleep(RETRY_WAIT_S)

    @property
    def _streams(self) -> list[str]:
        return streams.webhook_streams(self._engine.partitions)

    async def _ensure_groups(self) -> None:
        await streams.create_groups(self._conn, self._streams, GROUP)

    async def pass_once(self, block_ms: int = 0) -> bool:
        """Deliver new events (waiting up to ``block_ms`` for one) and due retries of every
        partition; True if any were sent."""
        fresh = await self._read_fresh(block_ms)
        if fresh is None:  # the groups are gone (Redis lost its data): make them again
            await self._ensure_groups()
            return False
        retries = await asyncio.gather(*(self._due_retries(s) for s in self._streams))
        work = [(stream, entry) for stream, entries in fresh for entry in entries]
        work += [(stream, entry) for stream, due in zip(self._streams, retries, strict=True)
                 for entry in due]
        await asyncio.gather(*(self._deliver(stream, entry_id, fields)
                               for stream, (entry_id, fields) in work))
        return bool(work)

    async def _read_fresh(self, block_ms: int) -> list[tuple[Any, list[Any]]] | None:
        """New entries by stream; None when a consumer group is missing. One server: one
        read over every stream that waits inside Redis; a cluster: one read per stream and
        a wait here when nothing came."""
        positions = [(stream, b">") for stream in self._streams]
        try:
            if streams.one_server(self._conn):
                return await streams.read_together(self._conn, GROUP, self._consumer,
                                                   positions, READ_COUNT_MAX, block_ms)
            fresh = await streams.read(self._conn, GROUP, self._consumer, positions,
                                       READ_COUNT_MAX)
        except GroupMissing:
            return None
        if block_ms and not any(entries for _, entries in fresh):
            await asyncio.sleep(block_ms / 1000)
        return fresh

    async def _due_retries(self, stream: str) -> list[Any]:
        # Never claim an entry another worker may still be posting (idle < the timeout).
        idle_min_ms = int((TIMEOUT_S + 1) * 1000)
        return await streams.claim_due(self._conn, stream, GROUP, self._consumer,
                                       idle_min_ms, READ_COUNT_MAX,
                                       lambda deliveries: backoff_s(deliveries) * 1000)

    async def _deliver(self, stream: str | bytes, entry_id: bytes, raw: list[bytes]) -> None:
        fields = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
        url = fields.pop("url")
        at_ms = int(fields["at"])
        body = orjson.dumps(self.event_body(fields))
        if await self._post(url, body):
            self.delivered += 1
        elif time.time() * 1000 - at_ms < GIVE_UP_AFTER_S * 1000:
            self.failures += 1
            return  # stays pending; retried after its backoff
        else:
            self.dropped += 1
            WEBHOOK_DROPPED.inc()
            log.error("webhook %s to %s dropped after an hour of failures",
                      fields["event_id"], url)
        await streams.ack_and_delete(self._conn, stream, GROUP, entry_id)

    @staticmethod
    def event_body(fields: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"event_id": fields["event_id"], "event": fields["event"],
                                "agent": fields["agent"],
                                "balance": format_amount(int(fields["balance"])),
                                "at_ms": int(fields["at"])}
        if fields.get("threshold"):
            body["threshold"] = format_amount(int(fields["threshold"]))
        if fields.get("tool"):  # agent.loop_detected: which call repeated, and the setting
            body.update(tool=fields["tool"], repeats=int(fields["repeats"]),
                        window_s=int(fields["window_s"]))
        return body

    async def _post(self, url: str, body: bytes) -> bool:
        # Signed at each attempt: a retry an hour later carries a fresh timestamp.
        headers = {"content-type": "application/json",
                   "x-iou-signature": signature(self._secret, body, int(time.time()))}
        try:
            response = await self._client.post(url, content=body, headers=headers,
                                               timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            log.info("webhook to %s failed: %s", url, type(exc).__name__)
            return False
        return 200 <= response.status_code < 300

    async def backlog(self) -> int:
        return await streams.length(self._engine.conn,
                                    streams.webhook_streams(self._engine.partitions))
