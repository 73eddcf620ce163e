"""One metered ``tools/call``: hold, forward through the pooled upstream session, settle.

The same steps and engine calls as ``POST /v1/tools/{tool}/invoke`` (gateway/api/proxy.py),
so every wall of the hold script (balance, caps, frozen, tasks, call caps, loops) applies:
the hold is taken before the upstream sees the call; the upstream's success captures (the
catalog price, or for a variable tool the cost the upstream reports in its result's
``_meta`` as ``iou/cost``, capped at the hold; a missing or malformed cost is the hold);
an upstream error result, a JSON-RPC error, a broken connection or a timeout releases. A
free tool (fixed price 0) holds nothing and is charged 0 before it is forwarded (free calls
are in the ledger too, and call caps, the loop breaker and tasks count them, so they must stop
one before the upstream does any work); it counts whatever the upstream answers. A tool
without a catalog entry, or of an unknown server, never reaches an upstream.

A refusal, by the gateway or because the upstream failed, is a tool result with
``isError: true`` whose structured content is the contract's error object and whose text
names it, so that the model reads it. Settling is shielded from cancellation: an agent
that goes away after the upstream answered is still charged, and one that goes away
before has its hold released."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import anyio
import mcp_types as types
import orjson
from mcp.shared.exceptions import MCPError

from gateway.metering.engine import Engine
from gateway.metering.errors import (
    BalanceInsufficient,
    GatewayError,
    InvalidRequest,
    NotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.metering.models import HoldResult, Tool
from gateway.metering.money import AmountError, format_amount, parse_amount
from gateway.metering.refusals import NothingToHold
from gateway.receipts import ReceiptSigner, sign_receipt
from gateway.store.connections import Connection

from . import registry
from .upstream import Upstream, UpstreamFailed, UpstreamPool

log = logging.getLogger("iou.mcp")

META_PREFIX = "iou/"
# The protocol's reserved _meta keys (e.g. the serverInfo stamp) describe the upstream's
# answer; the agent's answer is the gateway's, which stamps its own.
RESERVED_META_PREFIX = "io.modelcontextprotocol/"
# The hold outlives the slowest upstream answer by this much, so it is never swept mid-call.
HOLD_MARGIN_S = 30


@dataclass(frozen=True)
class Metering:
    """What a metered call needs of the worker (built once, in the app's lifespan)."""

    engine: Engine
    conn: Connection
    pool: UpstreamPool
    settings: Any  # gateway.config.Settings (secrets, amount max, upstream timeout)
    spawn: Callable[[Awaitable[Any]], None]
    on_depleted: Callable[[str, GatewayError], Awaitable[None]]
    # Signs the receipt each paid answer carries in _meta (None: no receipts, as a bare
    # test context).
    receipts: ReceiptSigner | None = None


@dataclass(frozen=True)
class _Target:
    """A call's tool, resolved: catalog entry, server, upstream tool name; and the task the
    call counts in (``_meta`` ``iou/task``), if any."""

    tool: Tool
    server: registry.McpServer
    upstream_tool: str
    task: str | None = None


async def call_tool(m: Metering, agent: str, name: str, arguments: dict[str, Any],
                    meta: dict[str, Any] | None) -> types.CallToolResult:
    """The agent's call of ``<server>.<tool>``, metered; refusals are error results."""
    try:
        target = await _resolve(m, name, _task_of(meta))
        upstream = target.server.upstream(m.settings)  # credentials open before any hold
        max_cost = _max_cost(target.tool, meta, m.settings.amount_max_micros)
        return await _metered(m, agent, target, upstream, arguments, max_cost)
    except GatewayError as exc:
        return refusal_result(exc)


def _task_of(meta: dict[str, Any] | None) -> str | None:
    """The task a call names in its request ``_meta`` (``iou/task``), as invoke's X-IOU-Task
    header: the engine refuses an unknown or another agent's task (404)."""
    task = (meta or {}).get(META_PREFIX + "task")
    if task is not None and not isinstance(task, str):
        raise InvalidRequest("_meta.iou/task", "must be a task id")
    return task


async def _resolve(m: Metering, name: str, task: str | None) -> _Target:
    server_name, _, tool_name = name.partition(".")
    entry = await _catalog_entry(m.engine, name)
    server = await registry.find(m.conn, server_name) if tool_name else None
    if entry is None or server is None or server.tool(tool_name) is None:
        raise NotFound(f"No tool named {name} is offered (it needs an MCP server that lists "
                       "it and a catalog entry of that name); nothing was called.")
    return _Target(entry, server, tool_name, task)


async def _catalog_entry(engine: Engine, name: str) -> Tool | None:
    entry = next((t for t in engine.tools() if t.name == name), None)
    if entry is None:  # perhaps added since this worker last looked
        await engine.refresh_catalog()
        entry = next((t for t in engine.tools() if t.name == name), None)
    return entry


def _max_cost(tool: Tool, meta: dict[str, Any] | None, amount_max: int) -> int | None:
    """0 for a free tool, None to hold the catalog price (a fixed tool's price, a variable
    tool's ceiling), or a variable tool's ceiling given as ``_meta`` ``iou/max_cost``."""
    given = (meta or {}).get(META_PREFIX + "max_cost")
    if tool.pricing == "fixed":
        if given is not None:
            raise InvalidRequest("_meta.iou/max_cost", "is only accepted for tools priced "
                                 "variable")
        return 0 if tool.price_micros == 0 else None
    if given is None:
        return None
    try:
        micros = parse_amount(given if isinstance(given, str) else str(given))
    except (AmountError, ValueError):
        raise InvalidRequest("_meta.iou/max_cost", "must be a positive amount") from None
    if micros > amount_max:
        raise InvalidRequest("_meta.iou/max_cost", "must be at most IOU_AMOUNT_MAX")
    return micros


async def _metered(m: Metering, agent: str, target: _Target, upstream: Upstream,
                   arguments: dict[str, Any], max_cost: int | None) -> types.CallToolResult:
    ttl_s = m.settings.upstream_timeout_s + HOLD_MARGIN_S
    try:
        if max_cost == 0:
            raise NothingToHold()
        # The loop breaker compares calls by their arguments (keys sorted), as invoke's body.
        hold = await m.engine.hold(agent, target.tool.name, max_cost, ttl_s, task=target.task,
                                   body=_arguments_bytes(arguments))
    except BalanceInsufficient as exc:
        m.spawn(m.on_depleted(agent, exc))
        raise
    except NothingToHold:  # free, by this worker's catalog or (just made free) the script's
        return await _free(m, agent, target, upstream, arguments)
    # The tool provider's proof that this call is paid for, as invoke's X-IOU-Receipt header:
    # the hold, signed, in the forwarded request's _meta (a pooled MCP session has one set of
    # headers for every agent's calls, the request's _meta is this call's own).
    paid = _receipt(m, agent, target, hold.hold_id, hold.amount_micros, hold.balance_micros)
    try:
        result = await _forward(m, target, upstream, arguments, paid.get("receipt"))
    except BaseException:
        with anyio.CancelScope(shield=True):
            await m.engine.release(agent, hold.hold_id)
        raise
    with anyio.CancelScope(shield=True):
        settled = await _settle(m, agent, target, hold, result)
    return settled


def _arguments_bytes(arguments: dict[str, Any]) -> bytes:
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)


async def _settle(m: Metering, agent: str, target: _Target, hold: HoldResult,
                  result: types.CallToolResult) -> types.CallToolResult:
    if result.is_error:
        released = await m.engine.release(agent, hold.hold_id)
        return _with_meta(result, {"balance": format_amount(released.balance_micros),
                                   "cost": "0"})
    cost = None if hold.fixed else _reported_cost(result, hold.amount_micros)
    captured = await m.engine.capture(agent, hold.hold_id, cost)
    return _with_meta(result, {"charge_id": captured.charge_id,
                               "cost": format_amount(captured.cost_micros),
                               "balance": format_amount(captured.balance_micros),
                               "warnings": list(captured.warnings),
                               **_receipt(m, agent, target, captured.charge_id,
                                          captured.cost_micros, captured.balance_micros)})


async def _free(m: Metering, agent: str, target: _Target, upstream: Upstream,
                arguments: dict[str, Any]) -> types.CallToolResult:
    """A free tool: nothing to hold; charged 0 first, as POST /v1/charge would, so that a
    refusal (a call cap, the loop breaker, a closed task) never reaches the upstream."""
    with anyio.CancelScope(shield=True):
        charged = await m.engine.charge(agent, target.tool.name, task=target.task,
                                        body=_arguments_bytes(arguments))
    result = await _forward(m, target, upstream, arguments)
    return _with_meta(result, {"charge_id": charged.charge_id, "cost": "0",
                               "balance": format_amount(charged.balance_micros),
                               "warnings": list(charged.warnings),
                               **_receipt(m, agent, target, charged.charge_id, 0,
                                          charged.balance_micros)})


def _receipt(m: Metering, agent: str, target: _Target, charge_id: str,
             cost_micros: int, balance_after_micros: int) -> dict[str, str]:
    """``{"receipt": <JWS>}`` for a paid answer's ``_meta``, as invoke answers with one
    (empty without a signer)."""
    if m.receipts is None:
        return {}
    return {"receipt": sign_receipt(m.receipts, charge_id=charge_id, agent=agent,
                                    tool=target.tool.name, cost_micros=cost_micros,
                                    balance_after_micros=balance_after_micros,
                                    task=target.task)}


async def _forward(m: Metering, target: _Target, upstream: Upstream,
                   arguments: dict[str, Any], receipt: str | None = None
                   ) -> types.CallToolResult:
    name = target.tool.name
    meta = None if receipt is None else cast(types.RequestParamsMeta,
                                             {META_PREFIX + "receipt": receipt})
    try:
        return await m.pool.call_tool(upstream, target.upstream_tool, arguments, meta)
    except TimeoutError:
        raise UpstreamTimeout(f"The upstream of {name} did not answer in time; nothing was "
                              "charged.") from None
    except UpstreamFailed as exc:
        raise UpstreamUnavailable(f"The upstream of {name} is unreachable ({exc}); nothing "
                                  "was charged.") from None
    except MCPError as exc:
        raise UpstreamUnavailable(f"The upstream of {name} answered with an error "
                                  f"({exc.code}: {exc.message[:200]}); nothing was "
                                  "charged.") from None


def _reported_cost(result: types.CallToolResult, held_micros: int) -> int:
    """A variable call's cost: the upstream's ``_meta`` ``iou/cost`` up to the hold, else
    the hold (an upstream that reports nothing, or nonsense, is charged its ceiling)."""
    reported = (result.meta or {}).get(META_PREFIX + "cost")
    if reported is None:
        return held_micros
    try:
        cost = parse_amount(reported if isinstance(reported, str) else str(reported),
                            allow_zero=True)
    except (AmountError, ValueError):
        return held_micros
    return min(cost, held_micros)


def _with_meta(result: types.CallToolResult, ours: dict[str, Any]) -> types.CallToolResult:
    """The upstream's result with the gateway's ``iou/*`` facts in ``_meta`` (the
    upstream's own ``iou/*`` keys are dropped: only the gateway speaks for the meter)."""
    meta = {k: v for k, v in (result.meta or {}).items()
            if not k.startswith((META_PREFIX, RESERVED_META_PREFIX))}
    meta.update({META_PREFIX + k: v for k, v in ours.items()})
    return result.model_copy(update={"meta": meta})


def refusal_result(exc: GatewayError) -> types.CallToolResult:
    """A refusal as the model reads it: the contract's error object, and a sentence."""
    error = exc.to_dict()
    details = ", ".join(f"{k} {v}" for k, v in error.items()
                        if k not in ("error", "message") and not isinstance(v, dict | list))
    text = exc.code + (f", {details}" if details else "") + f": {exc.message}"
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=error,
                                is_error=True)
