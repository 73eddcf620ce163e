"""POST /v1/tools/{tool}/invoke: hold, forward with the gateway's credentials, settle.

The hold is taken before the upstream sees the request, so an agent can never spend
more than its balance through the proxy; 2xx captures (the catalog price, or for variable
tools the upstream's ``X-IOU-Cost`` if it is a valid amount up to the hold, else the
hold), anything else or a timeout releases. A free tool (fixed price 0) holds nothing: a
2xx is charged 0 (free calls are in the ledger too), anything else leaves no trace.
The request's query string goes to the upstream after the upstream URL's own.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import idempotency
from gateway.api.body import parse_amount_field, read_body
from gateway.api.context import Context, endpoint
from gateway.api.metrics import PROXY_CALLS
from gateway.api.webhooks import queue_depleted
from gateway.errors import BalanceInsufficient, GatewayError, InvalidRequest, NotFound
from gateway.limits import check_name
from gateway.models import Tool
from gateway.money import AmountError, format_amount, parse_amount

CONNECT_TIMEOUT_S = 5.0
# The hold outlives the slowest upstream answer by this much, so it is never swept mid-call.
HOLD_MARGIN_S = 30
FORWARDED_HEADERS = ("content-type", "accept", "user-agent")
RETURNED_HEADERS = ("content-type", "cache-control")


class UpstreamTimeout(GatewayError):
    code, status = "upstream_timeout", 504


class UpstreamUnavailable(GatewayError):
    code, status = "upstream_unavailable", 502


def client(upstream_timeout_s: int) -> httpx.AsyncClient:
    """The pooled client for upstream calls and webhooks (webhooks set their own timeout)."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    timeout = httpx.Timeout(upstream_timeout_s, connect=CONNECT_TIMEOUT_S)
    return httpx.AsyncClient(limits=limits, follow_redirects=False, timeout=timeout)


@endpoint
async def invoke(ctx: Context, request: Request) -> Response:
    agent = await ctx.auth.agent(request)
    tool_name = check_name("tool", request.path_params["tool"])
    raw = await read_body(request, ctx.settings.body_bytes_max)
    key = idempotency.idempotency_key(request)
    return await idempotency.once(
        ctx.engine, "agent:" + agent, key, _digest(request, raw),
        lambda: _invoke(ctx, request, agent, tool_name, raw))


def _digest(request: Request, raw: bytes) -> str:
    """The idempotency digest: method, path and body, and the query string, which is
    forwarded too (the same key with another query is another request: 409)."""
    digest = idempotency.request_digest(request, raw)
    query: bytes = request.scope.get("query_string", b"")
    return digest if not query else hashlib.sha256(digest.encode() + b"?" + query).hexdigest()


async def _invoke(ctx: Context, request: Request, agent: str, tool_name: str, raw: bytes
                  ) -> Response:
    tool = await _tool(ctx, tool_name)
    max_cost = _max_cost(request, tool, ctx.settings.amount_max_micros)
    if max_cost == 0:
        return await _invoke_free(ctx, request, agent, tool, raw)
    try:
        hold = await ctx.engine.hold(agent, tool_name, max_cost,
                                     ctx.settings.upstream_timeout_s + HOLD_MARGIN_S)
    except BalanceInsufficient as exc:
        ctx.spawn(queue_depleted(ctx.engine, agent, exc))
        raise
    try:
        upstream = await _forward(ctx, request, tool, raw)
    except BaseException:
        await ctx.engine.release(agent, hold.hold_id)
        raise
    if not 200 <= upstream.status_code < 300:
        released = await ctx.engine.release(agent, hold.hold_id)
        PROXY_CALLS.labels("released").inc()
        return _answer(upstream, None, released.balance_micros)
    cost = _actual_cost(upstream, tool, max_cost)
    captured = await ctx.engine.capture(agent, hold.hold_id, cost)
    PROXY_CALLS.labels("captured").inc()
    return _answer(upstream, captured.charge_id, captured.balance_micros)


async def _invoke_free(ctx: Context, request: Request, agent: str, tool: Tool, raw: bytes
                       ) -> Response:
    """A free tool: nothing to hold; the agent reaches it only through the gateway, which
    alone has its credentials. Charged 0 after a 2xx, as POST /v1/charge would."""
    upstream = await _forward(ctx, request, tool, raw)
    if not 200 <= upstream.status_code < 300:
        PROXY_CALLS.labels("released").inc()
        state = await ctx.engine.agent_state(agent)
        return _answer(upstream, None, state.balance_micros)
    charged = await ctx.engine.charge(agent, tool.name)
    PROXY_CALLS.labels("captured").inc()
    return _answer(upstream, charged.charge_id, charged.balance_micros)


async def _tool(ctx: Context, name: str) -> Tool:
    entry = next((t for t in ctx.engine.tools() if t.name == name), None)
    if entry is None:
        await ctx.engine.refresh_catalog()
        entry = next((t for t in ctx.engine.tools() if t.name == name), None)
    if entry is None:
        raise NotFound(f"No tool named {name} in the catalog.")
    if entry.upstream is None:
        raise InvalidRequest("tool", "has no upstream to invoke")
    return entry


def _max_cost(request: Request, tool: Tool, amount_max: int) -> int:
    header = request.headers.get("x-iou-max-cost")
    if tool.pricing == "fixed":
        if header is not None:
            raise InvalidRequest("X-IOU-Max-Cost", "is only accepted for tools priced variable")
        return tool.price_micros
    if header is None:
        raise InvalidRequest("X-IOU-Max-Cost", "is required for tools priced variable")
    return parse_amount_field("X-IOU-Max-Cost", header, False, amount_max)


async def _forward(ctx: Context, request: Request, tool: Tool, raw: bytes) -> httpx.Response:
    headers = {h: v for h in FORWARDED_HEADERS if (v := request.headers.get(h)) is not None}
    if tool.upstream_headers:
        headers.update(orjson.loads(tool.upstream_headers))
    assert tool.upstream is not None
    try:
        return await ctx.http.post(_upstream_url(tool.upstream, request), content=raw,
                                   headers=headers)
    except httpx.TimeoutException:
        PROXY_CALLS.labels("timeout").inc()
        raise UpstreamTimeout(f"The upstream of {tool.name} did not answer in time; "
                              "nothing was charged.") from None
    except httpx.HTTPError as exc:
        PROXY_CALLS.labels("unreachable").inc()
        raise UpstreamUnavailable(f"The upstream of {tool.name} is unreachable "
                                  f"({type(exc).__name__}); nothing was charged.") from None


def _upstream_url(upstream: str, request: Request) -> httpx.URL:
    url = httpx.URL(upstream)
    query: bytes = request.scope.get("query_string", b"")
    if not query:
        return url
    return url.copy_with(query=url.query + b"&" + query if url.query else query)


def _actual_cost(upstream: httpx.Response, tool: Tool, max_cost: int) -> int:
    if tool.pricing == "fixed":
        return max_cost
    reported = upstream.headers.get("x-iou-cost")
    try:
        cost = parse_amount(reported, allow_zero=True) if reported is not None else max_cost
    except AmountError:
        return max_cost
    return min(cost, max_cost)


def _answer(upstream: httpx.Response, charge_id: str | None, balance: int) -> Response:
    headers: dict[str, Any] = {h: v for h in RETURNED_HEADERS
                               if (v := upstream.headers.get(h)) is not None}
    headers["x-iou-balance"] = format_amount(balance)
    if charge_id is not None:
        headers["x-iou-charge-id"] = charge_id
    return Response(upstream.content, status_code=upstream.status_code, headers=headers)
