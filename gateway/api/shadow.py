"""GET /v1/agents/{agent}/shadow (the agent's own key or the admin): what the agent's shadow
limits would have refused, by limit, summed by the charge and hold scripts in the agent's
own hash (exact at once, one round trip)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.context import Context, endpoint
from gateway.api.responses import json_response
from gateway.metering.limits import check_name
from gateway.metering.money import format_amount as fmt


@endpoint
async def get_shadow(ctx: Context, request: Request) -> Response:
    agent = request.path_params["agent"]
    caller = await ctx.auth.admin_or_agent(request, agent)
    if caller.is_admin:
        check_name("agent", agent)
    sums = await ctx.engine.shadow_sums(agent)
    total_calls = sum(n for n, _ in sums.values())
    total_micros = sum(m for _, m in sums.values())
    return json_response(200, {
        "agent": agent,
        "refusals": {limit: {"count": n, "amount": fmt(m)} for limit, (n, m) in sums.items()},
        "total": {"count": total_calls, "amount": fmt(total_micros)}})
