"""GET /v1/agents/{agent}/ledger: the durable ledger, newest first, with cursor paging."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.admin import _agent, _query_limit
from gateway.api.context import Context, endpoint
from gateway.api.responses import iso_ms, json_response
from gateway.errors import InvalidRequest
from gateway.ledger.entries import MONEY_KINDS, LedgerEntry
from gateway.limits import check_name
from gateway.money import format_amount


def entry_payload(e: LedgerEntry) -> dict[str, Any]:
    return {"entry_id": e.entry_id, "at": iso_ms(e.at_ms), "kind": e.kind, "tool": e.tool,
            "category": e.category,
            "amount": None if e.amount is None else format_amount(e.amount),
            "balance_after": None if e.balance_after is None else format_amount(e.balance_after),
            "idempotency_key": e.idempotency_key, "hold_id": e.hold_id,
            "metadata": orjson.loads(e.metadata) if e.metadata else None}


@endpoint
async def get_ledger(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    agent = _agent(request)
    limit = _query_limit(request)
    params = request.query_params
    kind = params.get("kind")
    if kind is not None and kind not in MONEY_KINDS:
        raise InvalidRequest("kind", f"must be one of {', '.join(sorted(MONEY_KINDS))}")
    tool = params.get("tool")
    if tool is not None:
        check_name("tool", tool)
    before = params.get("before")
    if before is not None and (len(before) > 64 or not before.isascii()):
        raise InvalidRequest("before", "must be an entry_id from a previous page")
    await ctx.engine.agent_state(agent)  # 404 for an unknown agent
    rows = await ctx.ledger.entries(agent, limit + 1, before, kind, tool)
    page = rows[:limit]
    return json_response(200, {"entries": [entry_payload(e) for e in page],
                               "next_cursor": page[-1].entry_id if len(rows) > limit else None})
