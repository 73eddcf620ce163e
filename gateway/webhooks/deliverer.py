"""Webhooks: signed (timestamp included), at-least-once delivery from the Redis outbox.

The scripts queue ``balance.low`` and ``refill.requested`` in the same step as the charge
that crossed the threshold; ``balance.depleted`` is queued here after a refusal for
balance, at most once a minute per agent. A background task per worker reads the outbox
through the consumer group "webhooks" and POSTs each event; a failed delivery stays
pending and is retried with exponential backoff for an hour, then dropped with a log
line and a metric. Nothing here runs on a charge's own path.
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
from gateway.metering.errors import GatewayError
from gateway.metering.money import format_amount, parse_amount
from gateway.observability import WEBHOOK_DROPPED
from gateway.store import keys
from gateway.store.resp import ReplyError

log = logging.getLogger("iou.webhooks")

GROUP = b"webhooks"
READ_COUNT_MAX = 50
POLL_INTERVAL_S = 0.2
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


async def queue_depleted(engine: Engine, agent: str, refusal: GatewayError) -> None:
    """Queue balance.depleted for an agent with a webhook, at most once a minute."""
    balance_micros = parse_amount(str(refusal.details.get("balance", "0")), allow_zero=True)
    k = engine.agent_keys(agent)
    first = await engine.conn.call_or_raise(b"SET", k.depleted(), b"1", b"NX", b"EX",
                                            DEPLETED_EVERY_S)
    if first is None:
        return
    url = await engine.conn.call_or_raise(b"HGET", k.agent_hash, b"wh")
    if url is None:
        return
    now_ms = int(time.time() * 1000)
    await engine.conn.call_or_raise(
        b"XADD", k.webhooks, b"*", b"event_id", ids.uuid7() + ":balance.depleted", b"event",
        b"balance.depleted", b"agent", agent, b"balance", str(balance_micros), b"threshold",
        b"", b"at", str(now_ms), b"url", url)


class WebhookDeliverer:
    def __init__(self, engine: Engine, secret: str, client: httpx.AsyncClient) -> None:
        self._engine = engine
        self._secret = secret
        self._client = client
        self._consumer = f"{socket.gethostname()}-{os.getpid()}".encode()
        self.delivered = 0
        self.dropped = 0
        self.failures = 0

    async def run_forever(self) -> None:
        await self._ensure_groups()
        while True:
            try:
                busy = await self.pass_once()
            except GatewayError as exc:
                log.warning("webhook outbox unreachable: %s", exc.message)
                busy = False
            except Exception:
                log.exception("webhook delivery pass failed")
                busy = False
            if not busy:
                await asyncio.sleep(POLL_INTERVAL_S)

    async def _ensure_groups(self) -> None:
        for p in range(self._engine.partitions):
            reply = await self._engine.conn.call(b"XGROUP", b"CREATE", keys.webhooks(p), GROUP,
                                                 b"0", b"MKSTREAM")
            if isinstance(reply, ReplyError) and "BUSYGROUP" not in str(reply):
                raise reply

    async def pass_once(self) -> bool:
        """Deliver new events and due retries of every partition; True if any were sent."""
        sent = await asyncio.gather(*(self._partition(p)
                                      for p in range(self._engine.partitions)))
        return any(sent)

    async def _partition(self, p: int) -> bool:
        stream = keys.webhooks(p)
        conn = self._engine.conn
        fresh = await conn.call(b"XREADGROUP", b"GROUP", GROUP, self._consumer, b"COUNT",
                                READ_COUNT_MAX, b"STREAMS", stream, b">")
        if isinstance(fresh, ReplyError) and "NOGROUP" in str(fresh):
            await self._ensure_groups()
            return False
        entries = [] if not fresh or isinstance(fresh, ReplyError) else fresh[0][1]
        entries += await self._due_retries(stream)
        await asyncio.gather(*(self._deliver(stream, entry_id, fields)
                               for entry_id, fields in entries))
        return bool(entries)

    async def _due_retries(self, stream: str) -> list[Any]:
        conn = self._engine.conn
        # Never claim an entry another worker may still be posting (idle < the timeout).
        idle_min_ms = int((TIMEOUT_S + 1) * 1000)
        pending = await conn.call_or_raise(b"XPENDING", stream, GROUP, b"IDLE", idle_min_ms,
                                           b"-", b"+", READ_COUNT_MAX)
        due = [p[0] for p in pending if p[2] >= backoff_s(p[3]) * 1000]
        if not due:
            return []
        claimed: list[Any] = await conn.call_or_raise(
            b"XCLAIM", stream, GROUP, self._consumer, idle_min_ms, *due)
        return [c for c in claimed if c is not None and c[1] is not None]

    async def _deliver(self, stream: str, entry_id: bytes, raw: list[bytes]) -> None:
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
        await self._engine.conn.call_or_raise(b"XACK", stream, GROUP, entry_id)
        await self._engine.conn.call_or_raise(b"XDEL", stream, entry_id)

    @staticmethod
    def event_body(fields: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"event_id": fields["event_id"], "event": fields["event"],
                                "agent": fields["agent"],
                                "balance": format_amount(int(fields["balance"])),
                                "at_ms": int(fields["at"])}
        if fields.get("threshold"):
            body["threshold"] = format_amount(int(fields["threshold"]))
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
        lengths = await asyncio.gather(*(self._engine.conn.call_or_raise(b"XLEN",
                                                                         keys.webhooks(p))
                                         for p in range(self._engine.partitions)))
        return sum(int(n) for n in lengths)
