"""Admin routes (admin token): agents, funding, limits, freezing, keys, the tool catalog."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import idempotency
from gateway.api.body import Fields, read_body, read_json
from gateway.api.body import json_from_raw as parse_raw
from gateway.api.context import Context, endpoint
from gateway.api.limits_body import limit_changes
from gateway.api.payloads import agent_detail, agent_summary, limits_payload, tool_payload
from gateway.api.responses import iso_ms, json_response
from gateway.api.summary import tables_of
from gateway.api.walls_usage import walls_payload
from gateway.metering.errors import AgentExists, InvalidRequest
from gateway.metering.limits import check_name
from gateway.metering.money import format_amount as fmt

LIST_LIMIT_MAX = 1000
LIST_LIMIT_DEFAULT = 100
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
UPSTREAM_HEADERS_MAX = 16


def _agent(request: Request) -> str:
    return check_name("agent", request.path_params["agent"])


def _query_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return LIST_LIMIT_DEFAULT
    # The length first: int() refuses (ValueError, a 500) past 4,300 digits.
    if (not raw.isascii() or not raw.isdigit() or len(raw) > len(str(LIST_LIMIT_MAX))
            or not 1 <= int(raw) <= LIST_LIMIT_MAX):
        raise InvalidRequest("limit", f"must be a whole number from 1 to {LIST_LIMIT_MAX}")
    return int(raw)


@endpoint
async def create_agent(ctx: Context, request: Request) -> Response:
    caller = await ctx.auth.admin(request)
    raw = await read_body(request, ctx.settings.body_bytes_max)
    key = idempotency.idempotency_key(request)

    async def run(binding: idempotency.Binding | None) -> Response:
        fields = Fields(parse_raw(request, raw), ("name", "grant"))
        name = fields.name("name")
        assert name is not None
        grant = fields.amount("grant", False, allow_zero=True,
                              max_micros=ctx.settings.amount_max_micros)
        key_id = None if binding is None else _derived_key_id(binding)
        try:
            created = await ctx.engine.create_agent(name, grant, key_id)
        except AgentExists:
            # The retry of a creation that happened (its answer lost in a crash, or a
            # concurrent twin): the agent holds the key id derived from this request.
            if key_id is None or not await ctx.engine.has_key(name, key_id):
                raise
            balance = ctx.settings.signup_grant_micros if grant is None else grant
            return _replayed(201, {"agent": name, "api_key": None, "key_id": key_id,
                                   "balance": fmt(balance), **KEY_SHOWN_ONCE})
        tables_of(ctx.engine).invalidate()  # this worker's agents table shows it at once
        return json_response(201, {"agent": created.agent, "api_key": created.api_key,
                                   "key_id": created.key_id,
                                   "balance": fmt(created.balance_micros)})

    return await idempotency.once(ctx.engine, caller.scope, key,
                                  idempotency.request_digest(request, raw), run,
                                  _without_api_key)


# What a replayed key creation says instead of the key, which is never stored in clear.
KEY_SHOWN_ONCE = {"api_key_note": "The key was shown once, in the first answer, and is "
                  "not kept; make a new one with POST /v1/agents/{agent}/keys."}


def _derived_key_id(binding: idempotency.Binding) -> str:
    """The key id of the key a keyed request creates: the same on every retry of it."""
    return "key_" + binding.token[:16]


def _without_api_key(response: Response) -> bytes:
    body = orjson.loads(response.body)
    return orjson.dumps({**body, "api_key": None, **KEY_SHOWN_ONCE})


def _replayed(status: int, payload: dict[str, Any]) -> Response:
    return json_response(status, payload, {idempotency.REPLAYED_HEADER: "true"})


@endpoint
async def list_agents(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    limit = _query_limit(request)
    cursor = request.query_params.get("cursor")
    if cursor is not None:
        check_name("cursor", cursor)
    names = await ctx.engine.agent_names(limit + 1, cursor)
    page = names[:limit]
    states = await asyncio.gather(*(ctx.engine.agent_state(n) for n in page))
    return json_response(200, {"agents": [agent_summary(s) for s in states],
                               "next_cursor": page[-1] if len(names) > limit else None})


@endpoint
async def get_agent(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    agent = _agent(request)
    state, used = await asyncio.gather(ctx.engine.agent_state(agent),
                                       ctx.engine.walls_used(agent))
    return json_response(200, {**agent_detail(state, iso_ms(state.created_at_ms)),
                               "walls": walls_payload(state.limits, used)})


@endpoint
async def fund_agent(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    agent = _agent(request)
    fields = Fields(await read_json(request, ctx.settings.body_bytes_max), ("amount", "metadata"))
    amount = fields.amount("amount", max_micros=ctx.settings.amount_max_micros)
    assert amount is not None
    result = await ctx.engine.fund(agent, amount, idempotency.idempotency_key(request),
                                   metadata=fields.metadata())
    return json_response(200, {"agent": agent, "balance": fmt(result.balance_micros),
                               "entry_id": result.entry_id})


@endpoint
async def get_limits(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    state = await ctx.engine.agent_state(_agent(request))
    return json_response(200, limits_payload(state.limits))


@endpoint
async def patch_limits(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    agent = _agent(request)
    body = await read_json(request, ctx.settings.body_bytes_max)
    changes = limit_changes(body, ctx.settings.amount_max_micros)
    await ctx.engine.agent_state(agent)  # 404 before validating against a missing agent
    limits = await ctx.engine.set_limits(agent, changes)
    return json_response(200, limits_payload(limits))


async def _freeze(ctx: Context, request: Request, frozen: bool) -> Response:
    caller = await ctx.auth.admin(request)
    agent = _agent(request)
    raw = await read_body(request, ctx.settings.body_bytes_max)

    async def run(_: idempotency.Binding | None) -> Response:
        # Setting the flag again is harmless, so a retry after a crash simply runs again.
        Fields(parse_raw(request, raw, optional=True), ())
        return json_response(200, {"agent": agent,
                                   "frozen": await ctx.engine.freeze(agent, frozen)})

    return await idempotency.once(ctx.engine, caller.scope, idempotency.idempotency_key(request),
                                  idempotency.request_digest(request, raw), run)


@endpoint
async def freeze(ctx: Context, request: Request) -> Response:
    return await _freeze(ctx, request, True)


@endpoint
async def unfreeze(ctx: Context, request: Request) -> Response:
    return await _freeze(ctx, request, False)


@endpoint
async def add_key(ctx: Context, request: Request) -> Response:
    caller = await ctx.auth.admin(request)
    agent = _agent(request)
    raw = await read_body(request, ctx.settings.body_bytes_max)

    async def run(binding: idempotency.Binding | None) -> Response:
        Fields(parse_raw(request, raw, optional=True), ())
        key_id = None if binding is None else _derived_key_id(binding)
        if key_id is not None and await ctx.engine.has_key(agent, key_id):
            return _replayed(201, {"key_id": key_id, "api_key": None, **KEY_SHOWN_ONCE})
        try:
            key_id, api_key = await ctx.engine.add_key(agent, key_id)
        except InvalidRequest:
            # A concurrent twin of this request added the key in between.
            if key_id is not None and await ctx.engine.has_key(agent, key_id):
                return _replayed(201, {"key_id": key_id, "api_key": None, **KEY_SHOWN_ONCE})
            raise
        return json_response(201, {"key_id": key_id, "api_key": api_key})

    return await idempotency.once(ctx.engine, caller.scope, idempotency.idempotency_key(request),
                                  idempotency.request_digest(request, raw), run,
                                  _without_api_key)


@endpoint
async def revoke_key(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    await ctx.engine.revoke_key(_agent(request), request.path_params["key_id"])
    return Response(status_code=204)


@endpoint
async def put_tool(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    tool = check_name("tool", request.path_params["tool"])
    fields = Fields(await read_json(request, ctx.settings.body_bytes_max),
                    ("price", "category", "pricing", "upstream", "upstream_headers"))
    price = fields.amount("price", allow_zero=True, max_micros=ctx.settings.amount_max_micros)
    category = fields.name("category")
    pricing = fields.text("pricing", 16) or "fixed"
    if pricing not in ("fixed", "variable"):
        raise InvalidRequest("pricing", "must be fixed or variable")
    upstream = fields.text("upstream", 2048)
    if upstream is not None and not re.fullmatch(r"https?://[!-~]+", upstream):
        raise InvalidRequest("upstream", "must be an http:// or https:// URL")
    headers = _upstream_headers(fields.obj("upstream_headers"))
    assert price is not None and category is not None
    entry = await ctx.engine.set_tool(tool, price, category, pricing, upstream, headers)
    return json_response(200, tool_payload(entry))


def _upstream_headers(value: dict[str, Any] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > UPSTREAM_HEADERS_MAX:
        raise InvalidRequest("upstream_headers", f"may hold at most {UPSTREAM_HEADERS_MAX}")
    for name, text in value.items():
        if not HEADER_NAME_RE.fullmatch(name):
            raise InvalidRequest("upstream_headers", f"has an invalid header name {name!r}")
        if not isinstance(text, str) or not re.fullmatch(r"[\x20-\x7e]{0,4096}", text):
            raise InvalidRequest(f"upstream_headers.{name}", "must be printable ASCII")
    return {str(k): str(v) for k, v in value.items()}


@endpoint
async def list_tools(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    await ctx.engine.refresh_catalog()
    return json_response(200, {"tools": [tool_payload(t) for t in ctx.engine.tools()]})


@endpoint
async def delete_tool(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    await ctx.engine.delete_tool(check_name("tool", request.path_params["tool"]))
    return Response(status_code=204)
