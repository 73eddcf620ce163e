"""Charges: one tool call against an agent's balance, in one script (charge.lua)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.metering import ids
from gateway.metering.errors import unavailable
from gateway.metering.inputs import (
    check_fingerprint,
    derived_key,
    fp,
    given_amount,
    idempotency,
    loop_digest,
    metadata_text,
    task_ref,
)
from gateway.metering.limits import check_name
from gateway.metering.models import ChargeResult, warnings_of
from gateway.metering.refusals import refusal
from gateway.metering.shadow import ShadowSeen
from gateway.store.calls import Refused, ScriptCalls
from gateway.store.codes import Flag
from gateway.store.errors import StoreUnavailable


class Charges:
    def __init__(self, calls: ScriptCalls, amount_max_micros: int,
                 category_of: Callable[[str], dict[str, str]]) -> None:
        self._calls = calls
        self._amount_max_micros = amount_max_micros
        # The tool's category as this worker last saw it, for refusal details only.
        self._category_of = category_of
        self.shadow_seen = ShadowSeen()  # the Engine shares one with Holds

    async def charge(  # noqa: PLR0913 - the API's optional inputs, each named
            self, agent: str, tool: str, cost_micros: int | None = None,
            idempotency_key: str | None = None, metadata: Mapping[str, Any] | None = None,
            idempotency_part: str | None = None, task: str | None = None,
            fingerprint: str | None = None, body: bytes | None = None) -> ChargeResult:
        """Charge one call of ``tool``: the catalog price, or ``cost_micros`` for variable
        tools. The script reads the price, category and pricing from the agent's partition's
        copy of the catalog, so a price change applies to every call after its PUT. Raises
        the contract's refusal; on success the balance is already lower.
        ``idempotency_part`` (e.g. a batch item's index) derives the key of one part of a
        keyed request, see ``derived_key``. ``task`` names one of the agent's tasks the call
        counts against. ``fingerprint`` names the call's arguments for the loop breaker
        (default: its metadata, else an invoke's ``body``)."""
        check_name("agent", agent)
        check_name("tool", tool)
        key = derived_key(idempotency_key, idempotency_part)
        given = given_amount("cost", cost_micros, 0, self._amount_max_micros)
        meta = metadata_text(metadata)
        task_id = task_ref(task)
        # The task is part of what a key binds (only when named: older keys keep their hash).
        inputs = ("charge", tool, cost_micros, meta) if task_id is None else (
            "charge", tool, cost_micros, meta, task_id)
        digest = loop_digest(tool, check_fingerprint(fingerprint), metadata, body)
        try:  # inline, not maps_store_errors: the hot path spares the extra coroutine
            reply = await self._calls.charge(
                agent, ids.uuid7(), tool, given, self._amount_max_micros,
                idempotency(key, *inputs, *fp(fingerprint)), meta, task_id, digest)
        except StoreUnavailable as exc:
            raise unavailable(exc) from exc
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent, tool=tool, op="charge", task=task_id or "",
                          **self._category_of(tool))
        if reply.shadow:
            self.shadow_seen.report(reply.shadow)
        return ChargeResult(reply.entry_id, agent, tool, reply.category, reply.cost,
                            reply.balance, warnings_of(reply.flags),
                            not reply.replayed and bool(reply.flags & Flag.LOW_CROSSED),
                            reply.replayed, reply.shadow or None)
