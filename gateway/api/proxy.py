"""POST /v1/tools/{tool}/invoke: hold, forward with the gateway's credentials, settle.

The hold is taken before the upstream sees the request, so an agent can never spend
more than its balance through the proxy; 2xx captures (the catalog price, or for variable
tools the upstream's ``X-IOU-Cost`` if it is a valid amount up to the hold, else the
hold), anything else or a timeout releases. A free tool (fixed price 0) holds nothing: the
call is charged 0 before it is forwarded (free calls are in the ledger too), so that call
caps, the loop breaker and tasks, which count free calls, stop it before the upstream does
any work; the call counts whatever the upstream answers.
The request's query string goes to the upstream after the upstream URL's own.
The price is the scripts': a fixed-price hold holds the price as the hold script reads it
and its capture names no cost, so this worker's catalog (which only says where the
upstream is and whether the tool is free or variable) can never change what a call costs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import idempotency, receipts
from gateway.api.body import parse_amount_field, read_body
from gateway.api.context import Context, endpoint
from gateway.api.requests import TASK_ID_CHARS_MAX
from gateway.metering.errors import (
    BalanceInsufficient,
    HoldClosed,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.metering.limits import check_name
from gateway.metering.models import Tool
from gateway.metering.money import AmountError, format_amount, parse_amount
from gateway.metering.refusals import NothingToHold
from gateway.metering.secrets_store import open_headers
from gateway.observability import PROXY_CALLS
from gateway.webhooks.deliverer import queue_depleted

CONNECT_TIMEOUT_S = 5.0
# The hold outlives the slowest upstream answer by this much, so it is never swept mid-call.
HOLD_MARGIN_S = 30
FORWARDED_HEADERS = ("content-type", "accept", "user-agent")
RETURNED_HEADERS = ("content-type", "cache-control")
# The receipt: sent upstream over the hold that pays for the call, and on the answer over
# the capture (gateway/receipts/).
RECEIPT_HEADER = "x-iou-receipt"


def client(upstream_timeout_s: int) -> httpx.AsyncClient:
    """The pooled client for upstream calls and webhooks (webhooks set their own timeout)."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    timeout = httpx.Timeout(upstream_timeout_s, connect=CONNECT_TIMEOUT_S)
    return httpx.AsyncClient(limits=limits, follow_redirects=False, timeout=timeout)


@dataclass(frozen=True)
class _Call:
    """One invoke request, validated: who calls which tool with which body."""

    ctx: Context
    request: Request
    agent: str
    tool_name: str
    raw: bytes


@endpoint
async def invoke(ctx: Context, request: Request) -> Response:
    agent = await ctx.auth.agent(request)
    tool_name = check_name("tool", request.path_params["tool"])
    raw = await read_body(request, ctx.settings.body_bytes_max)
    key = idempotency.idempotency_key(request)
    call = _Call(ctx, request, agent, tool_name, raw)
    if key is None:
        return await _invoke(call, None)
    return await _invoke_once(call, key)


async def _invoke_once(call: _Call, key: str) -> Response:
    """A keyed invoke charges once, whatever crashes in between.

    The upstream call cannot be repeated safely, so the binding is a lease while the call
    runs (it outlives the slowest upstream answer and then expires by itself: a retry after
    a crash before any answer runs again, and that attempt's hold expires unused). Once the
    upstream answered 2xx, the answer and the hold are kept (24 h) *before* the capture, and
    the capture runs under a key derived from ``key``: a retry after a crash around the
    capture captures that same hold under that same key (its script replays a capture that
    happened) and answers the kept answer."""
    ctx, agent = call.ctx, call.agent
    lease_ms = (ctx.settings.upstream_timeout_s + HOLD_MARGIN_S) * 1000
    binding = await idempotency.bind(ctx.engine, "agent:" + agent, key,
                                     _digest(call.request, call.raw), lease_ms)
    earlier = binding.earlier
    if earlier is not None:
        if earlier.meta is None:
            raise IdempotencyConflict("A request with this Idempotency-Key is still "
                                      "running; retry in a moment.")
        if "hold" in earlier.meta:
            return await _settle(ctx, agent, key, binding, earlier, call)
        return idempotency.replay(earlier)
    try:
        response = await _invoke(call, binding, key)
    except BaseException:
        await binding.unbind()  # nothing was charged; unless an answer was kept
        raise
    if response.status_code >= 400:
        await binding.unbind()
    return response


async def _settle(ctx: Context, agent: str, key: str, binding: idempotency.Binding,
                  earlier: idempotency.Record, call: _Call) -> Response:
    """Finish an invoke whose upstream answered 2xx but whose capture may not have run."""
    assert earlier.meta is not None
    headers = dict(earlier.meta["x"])
    try:
        captured = await ctx.engine.capture(agent, earlier.meta["hold"], earlier.meta["cost"],
                                            key, idempotency_part="invoke")
        headers["x-iou-charge-id"] = captured.charge_id
        headers["x-iou-balance"] = format_amount(captured.balance_micros)
        receipt = receipts.signed(ctx, charge_id=captured.charge_id, agent=agent,
                                  tool=call.tool_name, cost_micros=captured.cost_micros,
                                  balance_after_micros=captured.balance_micros,
                                  task=_task(call.request))
        if receipt is not None:
            headers[RECEIPT_HEADER] = receipt
    except (HoldClosed, NotFound):
        pass  # the hold expired before anyone captured it: that call was not charged
    response = Response(earlier.body, status_code=int(earlier.meta["s"]), headers=headers)
    await binding.store(response)
    response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


# Headers that change what an invoke is charged or counted against: part of what its key
# binds, as a charge's ``task`` and ``cost`` are part of a charge's.
BOUND_HEADERS = ("x-iou-task", "x-iou-max-cost")


def _digest(request: Request, raw: bytes) -> str:
    """The idempotency digest: method, path and body, the query string, which is forwarded
    too, and the task and ceiling headers (the same key with another query, task or ceiling,
    or without one it had, is another request: 409). Each part is added only when present,
    so a key bound before a part was added keeps its digest."""
    digest = idempotency.request_digest(request, raw)
    query: bytes = request.scope.get("query_string", b"")
    if query:
        digest = hashlib.sha256(digest.encode() + b"?" + query).hexdigest()
    for name in BOUND_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            digest = hashlib.sha256(f"{digest}\n{name}: {value}".encode()).hexdigest()
    return digest


async def _invoke(call: _Call, binding: idempotency.Binding | None, key: str | None = None
                  ) -> Response:
    ctx, agent = call.ctx, call.agent
    tool = await _tool(ctx, call.tool_name)
    max_cost = _max_cost(call.request, tool, ctx.settings.amount_max_micros)
    task = _task(call.request)
    # Opened before the hold: credentials this gateway cannot read cost the agent nothing.
    credentials = open_headers(ctx.settings, tool.name, tool.upstream_headers)
    try:
        if max_cost == 0:
            raise NothingToHold()
        # The loop breaker compares invokes by their body (the arguments sent upstream).
        hold = await ctx.engine.hold(agent, call.tool_name, max_cost,
                                     ctx.settings.upstream_timeout_s + HOLD_MARGIN_S, task=task,
                                     body=call.raw)
    except BalanceInsufficient as exc:
        ctx.spawn(queue_depleted(ctx.engine, agent, exc))
        raise
    except NothingToHold:  # free, by this worker's catalog or (just made free) the script's
        answer = await _invoke_free(call, tool, credentials, task)
        if binding is not None and answer.status_code < 400:
            await binding.store(answer)  # charged 0: running it again would cost nothing
        return answer
    # The tool provider's proof that this call is paid for: the hold, signed (for a
    # fixed-price tool its amount is the price the capture will charge).
    paid = receipts.signed(ctx, charge_id=hold.hold_id, agent=agent, tool=tool.name,
                           cost_micros=hold.amount_micros,
                           balance_after_micros=hold.balance_micros, task=task)
    try:
        upstream = await _forward(call, tool, credentials, paid)
    except BaseException:
        await ctx.engine.release(agent, hold.hold_id)
        raise
    if not 200 <= upstream.status_code < 300:
        released = await ctx.engine.release(agent, hold.hold_id)
        PROXY_CALLS.labels("released").inc()
        answer = _answer(upstream, None, released.balance_micros)
        if binding is not None and answer.status_code < 400:
            await binding.store(answer)
        return answer
    cost = None if hold.fixed else _actual_cost(upstream, hold.amount_micros)
    if binding is not None:
        await binding.store(_answer(upstream, None, hold.balance_micros), hold=hold.hold_id,
                            cost=cost)
    captured = await ctx.engine.capture(agent, hold.hold_id, cost, key,
                                        idempotency_part=None if key is None else "invoke")
    PROXY_CALLS.labels("captured").inc()
    receipt = receipts.signed(ctx, charge_id=captured.charge_id, agent=agent, tool=tool.name,
                              cost_micros=captured.cost_micros,
                              balance_after_micros=captured.balance_micros, task=task)
    answer = _answer(upstream, captured.charge_id, captured.balance_micros, receipt)
    if binding is not None:
        await binding.store(answer)
    return answer


async def _invoke_free(call: _Call, tool: Tool, credentials: dict[str, str], task: str | None
                       ) -> Response:
    """A free tool: nothing to hold; the agent reaches it only through the gateway, which
    alone has its credentials. Charged 0 first, as POST /v1/charge would (counted in the
    task named by X-IOU-Task, if any): a refusal (a call cap, the loop breaker, a closed
    task) never reaches the upstream."""
    ctx = call.ctx
    charged = await ctx.engine.charge(call.agent, tool.name, task=task, body=call.raw)
    upstream = await _forward(call, tool, credentials)
    if not 200 <= upstream.status_code < 300:
        PROXY_CALLS.labels("released").inc()
        return _answer(upstream, charged.charge_id, charged.balance_micros)
    PROXY_CALLS.labels("captured").inc()
    receipt = receipts.signed(ctx, charge_id=charged.charge_id, agent=call.agent,
                              tool=tool.name, cost_micros=charged.cost_micros,
                              balance_after_micros=charged.balance_micros, task=task)
    return _answer(upstream, charged.charge_id, charged.balance_micros, receipt)


async def _tool(ctx: Context, name: str) -> Tool:
    entry = next((t for t in ctx.engine.tools() if t.name == name), None)
    if entry is None:
        await ctx.engine.refresh_catalog()
        entry = next((t for t in ctx.engine.tools() if t.name == name), None)
    if entry is None:
        raise NotFound(f"No tool named {name} in the catalog.")
    if entry.upstream is None:
        # What the call names does not exist (the request itself is well formed): 404.
        raise NotFound(f"Tool {name} has no upstream to invoke; charge it with POST "
                       "/v1/charge.")
    return entry


def _task(request: Request) -> str | None:
    """The task the invoke counts against (header X-IOU-Task), checked as a body's
    ``task`` field is; an id that is no task of the agent's is 404 when the hold is taken."""
    value = request.headers.get("x-iou-task")
    if value is None:
        return None
    if not (0 < len(value) <= TASK_ID_CHARS_MAX and value.isascii() and value.isprintable()):
        raise InvalidRequest("X-IOU-Task", f"must be a task id of 1 to {TASK_ID_CHARS_MAX} "
                                           "printable characters")
    return value


def _max_cost(request: Request, tool: Tool, amount_max: int) -> int | None:
    """The client's ceiling for a variable tool; None for a fixed-price one (the hold
    script holds the price)."""
    header = request.headers.get("x-iou-max-cost")
    if tool.pricing == "fixed":
        if header is not None:
            raise InvalidRequest("X-IOU-Max-Cost", "is only accepted for tools priced variable")
        # 0: free, nothing to hold; None: the hold script holds the price it reads.
        return 0 if tool.price_micros == 0 else None
    if header is None:
        raise InvalidRequest("X-IOU-Max-Cost", "is required for tools priced variable")
    return parse_amount_field("X-IOU-Max-Cost", header, False, amount_max)


async def _forward(call: _Call, tool: Tool, credentials: dict[str, str],
                   receipt: str | None = None) -> httpx.Response:
    request = call.request
    headers = {h: v for h in FORWARDED_HEADERS if (v := request.headers.get(h)) is not None}
    headers.update(credentials)
    if receipt is not None:
        headers[RECEIPT_HEADER] = receipt
    assert tool.upstream is not None
    try:
        return await call.ctx.http.post(_upstream_url(tool.upstream, request),
                                        content=call.raw, headers=headers)
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


def _actual_cost(upstream: httpx.Response, max_cost: int) -> int:
    """A variable hold's cost: the upstream's X-IOU-Cost up to the hold, else the hold."""
    reported = upstream.headers.get("x-iou-cost")
    try:
        cost = parse_amount(reported, allow_zero=True) if reported is not None else max_cost
    except AmountError:
        return max_cost
    return min(cost, max_cost)


def _answer(upstream: httpx.Response, charge_id: str | None, balance: int,
            receipt: str | None = None) -> Response:
    headers: dict[str, Any] = {h: v for h in RETURNED_HEADERS
                               if (v := upstream.headers.get(h)) is not None}
    headers["x-iou-balance"] = format_amount(balance)
    if charge_id is not None:
        headers["x-iou-charge-id"] = charge_id
    if receipt is not None:
        headers[RECEIPT_HEADER] = receipt
    return Response(upstream.content, status_code=upstream.status_code, headers=headers)
