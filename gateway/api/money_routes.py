"""Corrections of a balance (admin): POST /v1/charges/{charge_id}/refund and
POST /v1/agents/{agent}/debit, idempotent inside their script (the Idempotency-Key is
recorded under the agent, as for fund). Delegation (the agent's own key or the admin):
POST /v1/agents/{agent}/children creates a sub-agent funded from the agent's balance, POST
/v1/agents/{child}/reclaim (the parent's key or the admin) moves what it has left back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.api import idempotency
from gateway.api.admin import KEY_SHOWN_ONCE, _agent, _derived_key_id, _without_api_key
from gateway.api.body import Fields, read_body, read_json
from gateway.api.body import json_from_raw as parse_raw
from gateway.api.context import Context, endpoint
from gateway.api.limits_body import limit_changes
from gateway.api.payloads import agent_summary
from gateway.api.responses import json_response
from gateway.ledger.lag import ledger_backlog
from gateway.ledger.refunds import wait_for_charge
from gateway.metering.errors import AgentExists, Forbidden, InvalidRequest, NotFound
from gateway.metering.money import format_amount as fmt
from gateway.metering.refunds import REASON_CHARS_MAX

CHILDREN_LISTED_MAX = 1000


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


def _backlog(ctx: Context) -> Callable[[], Awaitable[int | None]]:
    """When the oldest event not yet in the ledger was written (None when none waits): a
    refund of a charge not yet written waits for it. Dated by the wall clock that mints the
    charge ids it is compared with, never by the scripts' clock, which the test clock
    (IOU_TEST_CLOCK) moves: a backlog dated days ahead looked newer than every charge."""
    async def oldest_ms() -> int | None:
        lag_s, waiting = await ledger_backlog(ctx.engine.conn, ctx.engine.partitions)
        return None if waiting == 0 else time.time_ns() // 1_000_000 - int(lag_s * 1000)

    return oldest_ms


@endpoint
async def create_child(ctx: Context, request: Request) -> Response:
    parent = _agent(request)
    caller = await ctx.auth.admin_or_agent(request, parent)
    raw = await read_body(request, ctx.settings.body_bytes_max)
    key = idempotency.idempotency_key(request)

    async def run(binding: idempotency.Binding | None) -> Response:
        fields = Fields(parse_raw(request, raw), ("name", "amount", "limits"))
        name = fields.name("name")
        amount = fields.amount("amount", max_micros=ctx.settings.amount_max_micros)
        limits = fields.obj("limits")
        assert name is not None and amount is not None
        changes = limit_changes(limits, ctx.settings.amount_max_micros) if limits else None
        if changes and changes.get("webhook_url") is not None and not caller.is_admin:
            # The gateway POSTs to it: only the admin, who is trusted with URLs, sets one;
            # an agent key would otherwise aim the gateway at any address it reaches.
            raise InvalidRequest("webhook_url", "is set by the admin only")
        key_id = None if binding is None else _derived_key_id(binding)
        try:
            made = await ctx.engine.create_child(parent, name, amount, changes, key_id)
        except AgentExists:
            # The retry of a creation that happened: the child holds the derived key id.
            if key_id is None or not await ctx.engine.has_key(name, key_id):
                raise
            return json_response(201, {"agent": name, "parent": parent, "api_key": None,
                                       "key_id": key_id, "balance": fmt(amount),
                                       **KEY_SHOWN_ONCE},
                                 {idempotency.REPLAYED_HEADER: "true"})
        return json_response(201, {"agent": made.agent, "parent": made.parent,
                                   "api_key": made.api_key, "key_id": made.key_id,
                                   "balance": fmt(made.balance_micros),
                                   "parent_balance": fmt(made.parent_balance_micros)})

    return await idempotency.once(ctx.engine, caller.scope, key,
                                  idempotency.request_digest(request, raw), run,
                                  _without_api_key)


@endpoint
async def reclaim_child(ctx: Context, request: Request) -> Response:
    child = request.path_params["agent"]
    caller = await ctx.auth.caller(request)
    _agent(request)
    fields = Fields(await read_json(request, ctx.settings.body_bytes_max, optional=True),
                    ("amount",))
    amount = fields.amount("amount", False, max_micros=ctx.settings.amount_max_micros)
    parent = await ctx.engine.parent_of(child) if caller.is_admin else caller.agent
    assert parent is not None or caller.is_admin
    if parent is None:
        raise NotFound(f"{child} is not a sub-agent.")
    if not caller.is_admin and await ctx.engine.parent_of(child) != parent:
        raise Forbidden("Only the parent's key (or the admin) reclaims from a sub-agent.")
    done = await ctx.engine.reclaim(child, parent, amount, idempotency.idempotency_key(request))
    return json_response(200, {"agent": child, "parent": parent,
                               "amount": fmt(done.amount_micros),
                               "balance": fmt(done.balance_micros),
                               "entry_id": done.entry_id or None})


@endpoint
async def list_children(ctx: Context, request: Request) -> Response:
    agent = request.path_params["agent"]
    await ctx.auth.admin_or_agent(request, agent)
    state = await ctx.engine.agent_state(_agent(request))
    names = await ctx.engine.children_of(agent, CHILDREN_LISTED_MAX)
    states = await asyncio.gather(*(ctx.engine.agent_state(n) for n in names),
                                  return_exceptions=True)
    return json_response(200, {"agent": agent, "parent": state.parent, "children": [
        agent_summary(s) for s in states if not isinstance(s, BaseException)]})
