"""Agent routes (agent key): charges, batches, holds, balance."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api import idempotency, receipts
from gateway.api.body import Fields, json_from_raw, read_body, read_json
from gateway.api.context import Context, endpoint
from gateway.api.payloads import charge_payload, limits_payload, state_warnings
from gateway.api.requests import ChargeRequest, charge_request, task_field
from gateway.api.responses import iso_ms, json_response
from gateway.metering.engine import HOLD_TTL_S_DEFAULT
from gateway.metering.errors import BalanceInsufficient, GatewayError, InvalidRequest, Unavailable
from gateway.metering.inputs import check_fingerprint
from gateway.metering.limits import HOLD_TTL_S_MAX
from gateway.metering.models import CaptureResult, ChargeResult
from gateway.metering.money import format_amount as fmt
from gateway.observability import CHARGES
from gateway.store import agents as stored_agents
from gateway.webhooks.deliverer import queue_depleted

log = logging.getLogger("iou.api")

BATCH_ITEMS_MAX = 1000


def _outcome(exc: GatewayError) -> str:
    return str(exc.details.get("limit", exc.code))


_counters: dict[tuple[str, str], Any] = {}


def _count(outcome: str, category: str) -> None:
    """Count a charge outcome; the labelled children are cached (labels() is not free)."""
    child = _counters.get((outcome, category))
    if child is None:
        child = _counters[(outcome, category)] = CHARGES.labels(outcome, category)
    child.inc()


def _refused_category(ctx: Context, exc: GatewayError, tool: str) -> str:
    """The category label of a refusal: its own, else the tool's (402 and 423 carry none);
    "unknown" only for a tool not in the catalog."""
    category = exc.details.get("category")
    if category:
        return str(category)
    entry = next((t for t in ctx.engine.tools() if t.name == tool), None)
    return "unknown" if entry is None else entry.category


async def charge_one(ctx: Context, agent: str, request: ChargeRequest) -> ChargeResult:
    """Charge one validated charge; count the outcome in the metrics."""
    tool = request.tool
    try:
        result = await ctx.engine.charge(agent, tool, request.cost_micros,
                                         request.idempotency_key, request.metadata,
                                         request.part, request.task,
                                         fingerprint=request.fingerprint)
    except GatewayError as exc:
        _count(_outcome(exc), _refused_category(ctx, exc, tool))
        if isinstance(exc, BalanceInsufficient):
            ctx.spawn(queue_depleted(ctx.engine, agent, exc))
        raise
    _count("ok", result.category)
    return result


def charge_receipt(ctx: Context, result: ChargeResult, task: str | None) -> str | None:
    return receipts.signed(ctx, charge_id=result.charge_id, agent=result.agent,
                           tool=result.tool, cost_micros=result.cost_micros,
                           balance_after_micros=result.balance_micros, task=task)


@endpoint
async def post_charges(ctx: Context, request: Request) -> Response:
    """Up to 1,000 charges in one request and one Redis round trip; results in order.

    With an Idempotency-Key the batch is exactly-once as a whole: the key is bound to the
    body (24 h; not kept when every item was refused), and each item is charged under a
    key derived from it and its index, so its own script replays it. A retry runs every
    item again and gets each item's first answer (a refused item is evaluated again): a
    crash between items leaves nothing to charge twice, and there is no batch-level answer
    to lose."""
    agent = await ctx.auth.agent(request)
    raw = await read_body(request, ctx.settings.body_bytes_max)
    key = idempotency.idempotency_key(request)
    items = Fields(json_from_raw(request, raw), ("charges",)).body.get("charges")
    if not isinstance(items, list) or not 1 <= len(items) <= BATCH_ITEMS_MAX:
        raise InvalidRequest("charges", f"must be a list of 1 to {BATCH_ITEMS_MAX} charges")
    # A malformed item refuses the whole request before anything is charged (as any
    # malformed body is); only what depends on the store is an item's own refusal.
    charges = [_item_request(ctx, item, i, key) for i, item in enumerate(items)]
    with_receipts = receipts.asked(request.headers)
    binding = None if key is None else await idempotency.bind(
        ctx.engine, "agent:" + agent, key, idempotency.request_digest(request, raw))
    answers = await asyncio.gather(*(_batch_item(ctx, agent, charge, key, with_receipts)
                                     for charge in charges))
    if binding is not None and all(r is None for _, r in answers):
        await binding.unbind()  # every item refused: nothing written, nothing to keep
    results = [payload for payload, _ in answers]
    if all(r.get("error") == Unavailable.code for r in results):
        raise Unavailable(results[0]["message"])  # Redis refused them all: fail closed
    replayed = any(r is True for _, r in answers) and not any(r is False for _, r in answers)
    headers = {idempotency.REPLAYED_HEADER: "true"} if replayed else None
    return json_response(200, {"results": results}, headers)


def _item_request(ctx: Context, item: Any, index: int, key: str | None) -> ChargeRequest:
    if not isinstance(item, dict):
        raise InvalidRequest(f"charges[{index}]", "must be a JSON object")
    return charge_request(item, ctx.settings.amount_max_micros, key, index)


async def _batch_item(ctx: Context, agent: str, charge: ChargeRequest, key: str | None,
                      with_receipt: bool = False) -> tuple[dict[str, Any], bool | None]:
    """One item's result or error object, and whether it was replayed (None: refused).

    Nothing an item does fails the batch: an unexpected exception becomes this item's
    error object (and a log line), since the other items may have been charged."""
    try:
        result = await charge_one(ctx, agent, charge)
        payload = charge_payload(result)
        if with_receipt:
            payload["receipt"] = charge_receipt(ctx, result, charge.task)
        return payload, result.replayed
    except GatewayError as exc:
        return exc.to_dict(), None
    except Exception:
        log.exception("batch item %s failed inside the gateway (agent %s)", charge.index, agent)
        return _item_failed(key is not None), None


def _item_failed(keyed: bool) -> dict[str, Any]:
    if keyed:
        advice = ("Retry the batch with the same Idempotency-Key: an item already charged "
                  "answers its charge and is not charged again.")
    else:
        advice = ("It may have been charged: check the ledger before sending it again, or "
                  "send batches with an Idempotency-Key.")
    return {"error": "internal", "message": "This item failed inside the gateway. " + advice}


@endpoint
async def post_hold(ctx: Context, request: Request) -> Response:
    agent = await ctx.auth.agent(request)
    fields = Fields(await read_json(request, ctx.settings.body_bytes_max),
                    ("tool", "max_cost", "ttl_s", "metadata", "task", "fingerprint"))
    tool = fields.name("tool")
    assert tool is not None
    max_cost = fields.amount("max_cost", False, max_micros=ctx.settings.amount_max_micros)
    ttl_s = fields.integer("ttl_s", 1, HOLD_TTL_S_MAX, HOLD_TTL_S_DEFAULT)
    try:
        hold = await ctx.engine.hold(agent, tool, max_cost, ttl_s,
                                     idempotency.idempotency_key(request), fields.metadata(),
                                     task_field(fields),
                                     fingerprint=check_fingerprint(fields.body.get("fingerprint")))
    except BalanceInsufficient as exc:
        ctx.spawn(queue_depleted(ctx.engine, agent, exc))
        raise
    return json_response(201, {"hold_id": hold.hold_id, "tool": hold.tool,
                               "amount": fmt(hold.amount_micros),
                               "expires_at": iso_ms(hold.expires_at_ms),
                               "balance": fmt(hold.balance_micros),
                               "warnings": list(hold.warnings)})


@endpoint
async def post_capture(ctx: Context, request: Request) -> Response:
    agent = await ctx.auth.agent(request)
    # The body is optional, as its cost is for a fixed-price hold (which captures its price;
    # the script refuses any other cost): refund, reclaim and close take none either.
    fields = Fields(await read_json(request, ctx.settings.body_bytes_max, optional=True),
                    ("cost", "metadata"))
    cost = fields.amount("cost", False, allow_zero=True,
                         max_micros=ctx.settings.amount_max_micros)
    hold_id = request.path_params["hold_id"]
    # What the receipt names is read before the capture deletes the hold (only when asked).
    held = await _held_for_receipt(ctx, agent, hold_id) if receipts.asked(
        request.headers) else None
    result = await ctx.engine.capture(agent, hold_id, cost,
                                      idempotency.idempotency_key(request), fields.metadata())
    body: dict[str, Any] = {"charge_id": result.charge_id, "cost": fmt(result.cost_micros),
                            "released": fmt(result.released_micros),
                            "balance": fmt(result.balance_micros),
                            "warnings": list(result.warnings)}
    if held is not None:
        body["receipt"] = await _capture_receipt(ctx, agent, held, result)
    return json_response(200, body)


async def _held_for_receipt(ctx: Context, agent: str, hold_id: str
                            ) -> tuple[str, str | None] | None:
    """(tool, task) of the open hold; ("", None) when it is gone (a replayed capture)."""
    found = await stored_agents.hold_tool_and_task(ctx.engine.conn, ctx.engine.partitions,
                                                   agent, hold_id)
    return ("", None) if found is None else found


async def _capture_receipt(ctx: Context, agent: str, held: tuple[str, str | None],
                           result: CaptureResult) -> str | None:
    tool, task = held
    if not tool:  # a replay: the hold is gone; the ledger has the capture (or will soon:
        # until then the answer's receipt is null and GET /v1/receipts/{charge_id} signs it)
        entry = await ctx.ledger.entry(result.charge_id)
        return None if entry is None else receipts.from_entry(ctx, entry)
    return receipts.signed(ctx, charge_id=result.charge_id, agent=agent, tool=tool,
                           cost_micros=result.cost_micros,
                           balance_after_micros=result.balance_micros, task=task)


@endpoint
async def post_release(ctx: Context, request: Request) -> Response:
    agent = await ctx.auth.agent(request)
    Fields(await read_json(request, ctx.settings.body_bytes_max, optional=True), ())
    result = await ctx.engine.release(agent, request.path_params["hold_id"],
                                      idempotency.idempotency_key(request))
    return json_response(200, {"released": fmt(result.released_micros),
                               "balance": fmt(result.balance_micros)})


@endpoint
async def get_balance(ctx: Context, request: Request) -> Response:
    agent = await ctx.auth.agent(request)
    state = await ctx.engine.agent_state(agent)
    return json_response(200, {"agent": agent, "balance": fmt(state.balance_micros),
                               "held": fmt(state.held_micros),
                               "spent_today": fmt(state.spent_today_micros),
                               "limits": limits_payload(state.limits),
                               "warnings": state_warnings(state)})
