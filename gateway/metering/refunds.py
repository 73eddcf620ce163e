"""Refunds and debits: an admin's corrections of a balance, each one script (refund.lua,
debit.lua) with its ledger event (kinds ``refund`` and ``debit``).

A refund names a charge the caller has read from the ledger (``ChargeRef``: the domain knows
no ledger); the script keeps the running total refunded of that charge, so refunds racing
each other never give back more than the charge cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.metering import ids, money
from gateway.metering.errors import InvalidRequest, maps_store_errors
from gateway.metering.inputs import check_idempotency_key, given_amount, idempotency
from gateway.metering.limits import check_name
from gateway.metering.models import warnings_of
from gateway.metering.refusals import refusal
from gateway.store.calls import ChargeRef as ChargeRef
from gateway.store.calls import Refused, ScriptCalls
from gateway.store.codes import Code

REASON_CHARS_MAX = 256
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    charge_id: str
    agent: str
    amount_micros: int
    balance_micros: int
    warnings: tuple[str, ...]
    replayed: bool


@dataclass(frozen=True)
class DebitResult:
    entry_id: str
    agent: str
    amount_micros: int
    balance_micros: int
    warnings: tuple[str, ...]
    replayed: bool


def check_reason(reason: str | None, required: bool) -> str:
    """The reason as the scripts take it ('' = none): 1..256 characters without control
    characters (at most 1,024 bytes of UTF-8, what the scripts accept)."""
    if reason is None or reason == "":
        if required:
            raise InvalidRequest("reason", "is required")
        return ""
    if (not isinstance(reason, str) or len(reason) > REASON_CHARS_MAX
            or CONTROL_RE.search(reason)):
        raise InvalidRequest("reason", f"must be 1 to {REASON_CHARS_MAX} characters without "
                                       "control characters")
    return reason


class Refunds:
    def __init__(self, calls: ScriptCalls, amount_max_micros: int) -> None:
        self._calls = calls
        self._amount_max_micros = amount_max_micros

    @maps_store_errors
    async def refund(self, charge: ChargeRef, amount_micros: int | None = None,
                     idempotency_key: str | None = None, reason: str | None = None
                     ) -> RefundResult:
        """Give ``amount_micros`` (default: what is left to refund) of ``charge`` back to its
        agent's balance, and to the windows the charge still counts in."""
        check_idempotency_key(idempotency_key)
        given = given_amount("amount", amount_micros, 1, self._amount_max_micros)
        text = check_reason(reason, False)
        if charge.cost_micros == 0:
            raise InvalidRequest("amount", "exceeds what is left to refund (0): the charge "
                                           "cost nothing")
        reply = await self._calls.refund(
            charge, ids.uuid7(), given, self._amount_max_micros, money.BALANCE_MAX_MICROS,
            idempotency(idempotency_key, "refund", charge.charge_id, given, text), text)
        if isinstance(reply, Refused):
            raise _refund_refusal(reply, charge.agent)
        return RefundResult(reply.entry_id, charge.charge_id, charge.agent, reply.amount,
                            reply.balance, warnings_of(reply.flags), reply.replayed)

    @maps_store_errors
    async def debit(self, agent: str, amount_micros: int, reason: str,
                    idempotency_key: str | None = None) -> DebitResult:
        """Take ``amount_micros`` back from the agent's available balance (402 beyond it)."""
        check_name("agent", agent)
        check_idempotency_key(idempotency_key)
        if not money.is_whole(amount_micros, 1, self._amount_max_micros):
            raise InvalidRequest("amount", "must be above 0 and at most IOU_AMOUNT_MAX")
        text = check_reason(reason, True)
        reply = await self._calls.debit(
            agent, ids.uuid7(), amount_micros, self._amount_max_micros,
            idempotency(idempotency_key, "debit", amount_micros, text), text)
        if isinstance(reply, Refused):
            raise refusal(reply, agent=agent)
        return DebitResult(reply.entry_id, agent, amount_micros, reply.balance,
                           warnings_of(reply.flags), reply.replayed)


def _refund_refusal(reply: Refused, agent: str) -> Exception:
    if reply.code == Code.REFUND_EXCEEDS:
        left = money.format_amount(reply.integer("refundable"))
        return InvalidRequest("amount", f"exceeds what is left to refund ({left})")
    return refusal(reply, agent=agent)
