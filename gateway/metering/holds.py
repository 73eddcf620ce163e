"""Holds: reserve, settle (capture) or cancel (release) an amount; expired holds are
released by a sweeper. Each operation is one script (hold, capture, release,
expire_holds)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from gateway.metering import ids, money
from gateway.metering.errors import GatewayError, InvalidRequest, maps_store_errors
from gateway.metering.inputs import (
    check_fingerprint,
    check_idempotency_key,
    derived_key,
    fp,
    given_amount,
    hold_ref,
    idempotency,
    loop_digest,
    metadata_text,
    task_ref,
)
from gateway.metering.limits import HOLD_TTL_S_MAX, check_name
from gateway.metering.models import CaptureResult, HoldResult, ReleaseResult, warnings_of
from gateway.metering.refusals import refusal
from gateway.metering.shadow import ShadowSeen
from gateway.store.calls import Refused, ScriptCalls
from gateway.store.codes import Flag
from gateway.store.errors import StoreUnavailable

log = logging.getLogger("iou.engine")

HOLD_TTL_S_DEFAULT = 300
EXPIRE_BATCH_MAX = 100
EXPIRE_FIRST_BATCH = 4  # entry ids minted per partition per sweep when nothing is due
SWEEP_INTERVAL_S = 0.25


class Holds:
    def __init__(self, calls: ScriptCalls, amount_max_micros: int,
                 category_of: Callable[[str], dict[str, str]]) -> None:
        self._calls = calls
        self._amount_max_micros = amount_max_micros
        self._category_of = category_of
        self.shadow_seen = ShadowSeen()  # the Engine shares one with Charges

    @maps_store_errors
    async def hold(  # noqa: PLR0913 - the API's optional inputs, each named
            self, agent: str, tool: str, max_cost_micros: int | None = None,
            ttl_s: int = HOLD_TTL_S_DEFAULT, idempotency_key: str | None = None,
            metadata: Mapping[str, Any] | None = None, task: str | None = None,
            fingerprint: str | None = None, body: bytes | None = None) -> HoldResult:
        """Hold for ``ttl_s``: a fixed-price tool holds exactly its price (a
        ``max_cost_micros`` below it is refused, one above it holds the price); a variable
        tool holds ``max_cost_micros``, by default its catalog price. ``task`` names one of
        the agent's tasks: the hold counts in it until captured or released. The loop
        breaker compares the call's ``fingerprint``, else its metadata, else (invoke) its
        ``body``."""
        check_name("agent", agent)
        check_name("tool", tool)
        check_idempotency_key(idempotency_key)
        given = given_amount("max_cost", max_cost_micros, 1, self._amount_max_micros)
        if not money.is_whole(ttl_s, 1, HOLD_TTL_S_MAX):
            raise InvalidRequest("ttl_s", f"must be a whole number from 1 to {HOLD_TTL_S_MAX}")
        meta = metadata_text(metadata)
        task_id = task_ref(task)
        inputs = ("hold", tool, max_cost_micros, ttl_s, meta) if task_id is None else (
            "hold", tool, max_cost_micros, ttl_s, meta, task_id)
        digest = loop_digest(tool, check_fingerprint(fingerprint), metadata, body)
        reply = await self._calls.hold(
            agent, ids.uuid7(), ids.hold_id(), tool, given, self._amount_max_micros,
            ttl_s * 1000, HOLD_TTL_S_MAX * 1000,
            idempotency(idempotency_key, *inputs, *fp(fingerprint)), meta, task_id, digest)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent, tool=tool, op="hold", task=task_id or "",
                          **self._category_of(tool))
        if reply.shadow:
            self.shadow_seen.report(reply.shadow)
        return HoldResult(reply.hold_id, agent, tool, reply.amount, reply.expires_at_ms,
                          reply.balance, warnings_of(reply.flags),
                          bool(reply.flags & Flag.LOW_CROSSED), reply.replayed,
                          fixed=reply.fixed, shadow_refusal=reply.shadow or None)

    @maps_store_errors
    async def capture(self, agent: str, hold_id: str, cost_micros: int | None = None,
                      idempotency_key: str | None = None,
                      metadata: Mapping[str, Any] | None = None,
                      idempotency_part: str | None = None) -> CaptureResult:
        """Settle a hold at ``cost_micros`` (<= held); the rest returns to the balance.
        A hold on a fixed-price tool charges exactly its price: omit the cost (or give
        exactly that price)."""
        check_name("agent", agent)
        key = derived_key(idempotency_key, idempotency_part)
        given = given_amount("cost", cost_micros, 0, self._amount_max_micros)
        meta = metadata_text(metadata)
        reply = await self._calls.capture(
            agent, ids.uuid7(), hold_ref(hold_id), given, self._amount_max_micros,
            idempotency(key, "capture", hold_id, cost_micros, meta), meta)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent, hold_id=hold_id, op="capture")
        return CaptureResult(reply.entry_id, hold_id, reply.cost, reply.released,
                             reply.balance, warnings_of(reply.flags), reply.replayed)

    @maps_store_errors
    async def release(self, agent: str, hold_id: str,
                      idempotency_key: str | None = None) -> ReleaseResult:
        """Cancel a hold; its whole amount returns to the balance."""
        check_name("agent", agent)
        check_idempotency_key(idempotency_key)
        reply = await self._calls.release(agent, ids.uuid7(), hold_ref(hold_id),
                                          idempotency(idempotency_key, "release", hold_id))
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent, hold_id=hold_id)
        return ReleaseResult(hold_id, reply.released, reply.balance, reply.replayed)

    @maps_store_errors
    async def expire_holds(self) -> int:
        """Release every open hold past its expiry, in every partition; returns how many.

        All partitions are swept in one round trip; a partition that used its whole batch
        of entry ids is swept again with a larger one."""
        counts = await asyncio.gather(*(self._expire_partition(p, EXPIRE_FIRST_BATCH)
                                        for p in range(self._calls.partitions)))
        return sum(counts)

    async def _expire_partition(self, partition: int, batch: int) -> int:
        total = 0
        while True:
            reply = await self._calls.expire_holds(partition,
                                                   [ids.uuid7() for _ in range(batch)])
            if isinstance(reply, Refused):
                raise refusal(reply)
            total += reply.expired_count
            if reply.expired_count < batch:
                return total
            batch = EXPIRE_BATCH_MAX

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.expire_holds()
            except GatewayError as exc:
                log.warning("hold sweeper: %s", exc.message)
            except StoreUnavailable as exc:
                log.warning("hold sweeper: %s", exc)
            except Exception:
                log.exception("hold sweeper failed; retrying")
            await asyncio.sleep(SWEEP_INTERVAL_S)
