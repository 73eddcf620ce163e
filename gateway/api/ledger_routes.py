"""GET /v1/agents/{agent}/ledger: the durable ledger, newest first, with cursor paging."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.admin import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, _agent
from gateway.api.context import Context, endpoint
from gateway.api.responses import iso_ms, json_response
from gateway.ledger.entries import MONEY_KINDS, LedgerEntry
from gateway.metering.errors import InvalidRequest
from gateway.metering.limits import check_name
from gateway.metering.money import format_amount

LEDGER_PARAMS = ("limit", "before", "kind", "tool")
# Entry ids are UUIDv7 in canonical lower-case form (gateway.metering.ids.uuid7).
ENTRY_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FIELD_ECHO_CHARS_MAX = 64  # an unknown parameter's name is echoed back, cut to this


def entry_payload(e: LedgerEntry) -> dict[str, Any]:
    return {"entry_id": e.entry_id, "at": iso_ms(e.at_ms), "kind": e.kind, "tool": e.tool,
            "category": e.category,
            "amount": None if e.amount is None else format_amount(e.amount),
            # On a capture: the amount the hold had set aside (cost + what came back).
            "held": None if e.held is None else format_amount(e.held),
            "balance_after": None if e.balance_after is None else format_amount(e.balance_after),
            "idempotency_key": e.idempotency_key, "hold_id": e.hold_id,
            "metadata": orjson.loads(e.metadata) if e.metadata else None,
            # Refunds: the refunded charge; transfers: the other agent. Refunds and debits:
            # the admin's reason.
            "ref": e.ref, "reason": e.reason, "task": e.task,
            # Charges and holds: the limit the shadow limits would have refused it with.
            "shadow_refusal": e.shadow_refusal}


@endpoint
async def get_heads(ctx: Context, request: Request) -> Response:
    """The head of each stream's hash chain (gateway/ledger/chain.py), to publish elsewhere:
    `iou verify` recomputes the chains and must end at these hashes."""
    await ctx.auth.admin(request)
    heads = await ctx.ledger.chain_heads()
    return json_response(200, {"heads": [
        {"stream": h.stream, "head_hash": h.hash, "head_entry_id": h.entry_id, "rows": h.rows}
        for h in heads]})


@endpoint
async def get_ledger(ctx: Context, request: Request) -> Response:
    await ctx.auth.admin(request)
    agent = _agent(request)
    limit, before, kind, tool = _ledger_query(request)
    await ctx.engine.agent_state(agent)  # 404 for an unknown agent
    rows = await ctx.ledger.entries(agent, limit + 1, before, kind, tool)
    page = rows[:limit]
    return json_response(200, {"entries": [entry_payload(e) for e in page],
                               "next_cursor": page[-1].entry_id if len(rows) > limit else None})


def _ledger_query(request: Request) -> tuple[int, str | None, str | None, str | None]:
    """limit, before, kind and tool, each checked: any bad, repeated or unknown parameter
    is a 422 naming it (a typo must not silently widen the page)."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in LEDGER_PARAMS:
            raise InvalidRequest(name[:FIELD_ECHO_CHARS_MAX],
                                 f"is not a parameter here (use {', '.join(LEDGER_PARAMS)})")
        if name in params:
            raise InvalidRequest(name, "must be given at most once")
        params[name] = value
    kind = params.get("kind")
    if kind is not None and kind not in MONEY_KINDS:
        raise InvalidRequest("kind", f"must be one of {', '.join(sorted(MONEY_KINDS))}")
    tool = params.get("tool")
    if tool is not None:
        check_name("tool", tool)
    before = params.get("before")
    if before is not None and not ENTRY_ID_RE.fullmatch(before):
        raise InvalidRequest("before", "must be an entry_id from a previous page")
    return _page_limit(params.get("limit")), before, kind, tool


def _page_limit(raw: str | None) -> int:
    if raw is None:
        return LIST_LIMIT_DEFAULT
    # The length test comes first: int() of thousands of digits raises (and costs time).
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(LIST_LIMIT_MAX))
            and 1 <= int(raw) <= LIST_LIMIT_MAX):
        raise InvalidRequest("limit", f"must be a whole number from 1 to {LIST_LIMIT_MAX}")
    return int(raw)
