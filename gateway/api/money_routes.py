"""Corrections of a balance (admin): POST /v1/charges/{charge_id}/refund and
POST /v1/agents/{agent}/debit. Both are idempotent inside their script (the Idempotency-Key
is recorded under the agent, as for fund)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.api import idempotency
from gateway.api.admin import _agent
from gateway.api.body import Fields, read_json
from gateway.api.context import Context, endpoint
from gateway.api.responses import json_response
from gateway.ledger.lag import ledger_backlog
from gateway.ledger.refunds import wait_for_charge
from gateway.metering.errors import NotFound
from gateway.metering.money import format_amount as fmt
from gateway.metering.refunds import REASON_CHARS_MAX


@endpoint
async def refund_charge(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    charge_id = request.path_params["charge_id"]
    fields = Fields(await read_json(request, ctx.settings.body_bytes_max, optional=True),
                    ("amount", "reason"))
    amount = fields.amount("amount", False, max_micros=ctx.settings.amount_max_micros)
    reason = fields.text("reason", REASON_CHARS_MAX)
    key = idempotency.idempotency_key(request)
    # A healthy ledger is at most IOU_LEDGER_LAG_MAX_S behind: a charge answered before
    # the refund is written by then.
    charge = await wait_for_charge(ctx.ledger, charge_id, _backlog(ctx),
                                   ctx.settings.ledger_lag_max_s)
    if charge is None:
        raise NotFound(f"No charge {charge_id[:64]} in the ledger.")
    result = await ctx.engine.refund(charge, amount, key, reason)
    return json_response(200, {"refund_id": result.refund_id, "charge_id": result.charge_id,
                               "agent": result.agent, "amount": fmt(result.amount_micros),
                               "balance": fmt(result.balance_micros)})


@endpoint
async def debit_agent(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    agent = _agent(request)
    fields = Fields(await read_json(request, ctx.settings.body_bytes_max), ("amount", "reason"))
    amount = fields.amount("amount", max_micros=ctx.settings.amount_max_micros)
    reason = fields.text("reason", REASON_CHARS_MAX, required=True)
    assert amount is not None and reason is not None
    result = await ctx.engine.debit(agent, amount, reason, idempotency.idempotency_key(request))
    return json_response(200, {"agent": agent, "amount": fmt(result.amount_micros),
                               "balance": fmt(result.balance_micros),
                               "entry_id": result.entry_id})


def _backlog(ctx: Context) -> Callable[[], Awaitable[int]]:
    """How many events wait for the ledger writer (a refund of a charge not yet written waits
    for them)."""
    async def pending() -> int:
        return (await ledger_backlog(ctx.engine.conn, ctx.engine.partitions))[1]

    return pending
