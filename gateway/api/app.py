"""The Starlette application: routes, lifespan (engine, webhooks), JSON errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.api import (
    admin,
    agent,
    agent_keys,
    fastpath,
    ledger_routes,
    money_routes,
    ops,
    proxy,
    receipts,
    shadow,
    summary,
    tasks,
    usage,
)
from gateway.api.auth import FailureLimits
from gateway.api.context import Context
from gateway.api.fastpath import ChargeFastPath
from gateway.api.responses import json_response
from gateway.api.sampler import sample_forever
from gateway.api.store_guard import GuardedAuthenticator
from gateway.config import Settings, load_settings
from gateway.ledger.factory import open_store
from gateway.ledger.identity import StoreGuard
from gateway.ledger.lag import ledger_backlog
from gateway.ledger.store import LedgerStore
from gateway.ledger.store import StoreUnavailable as LedgerUnavailable
from gateway.mcp import admin_routes as mcp_admin
from gateway.mcp.server import McpEndpoint, McpFront
from gateway.metering.secrets_store import check_at_start, ensure_secret
from gateway.receipts import load_signer
from gateway.runtime import open_runtime
from gateway.webhooks.deliverer import WebhookDeliverer

log = logging.getLogger("iou.app")

LEDGER_RETRY_S = 1.0  # between attempts to reach a ledger that was down at start

ROUTES = [
    Route("/v1/charges", agent.post_charges, methods=["POST"]),
    Route("/v1/holds", agent.post_hold, methods=["POST"]),
    Route("/v1/holds/{hold_id}/capture", agent.post_capture, methods=["POST"]),
    Route("/v1/holds/{hold_id}/release", agent.post_release, methods=["POST"]),
    Route("/v1/balance", agent.get_balance, methods=["GET"]),
    Route("/v1/tasks", tasks.open_task, methods=["POST"]),
    Route("/v1/tasks/{task_id}", tasks.get_task, methods=["GET"]),
    Route("/v1/tasks/{task_id}/close", tasks.close_task, methods=["POST"]),
    Route("/v1/agents/{agent}/tasks", tasks.list_agent_tasks, methods=["GET"]),
    Route("/v1/tools/{tool}/invoke", proxy.invoke, methods=["POST"]),
    Route("/v1/receipts/keys", receipts.get_keys, methods=["GET"]),
    Route("/v1/receipts/{charge_id}", receipts.get_receipt, methods=["GET"]),
    Route("/v1/agents", admin.create_agent, methods=["POST"]),
    Route("/v1/agents", admin.list_agents, methods=["GET"]),
    Route("/v1/summary", summary.get_summary, methods=["GET"]),
    Route("/v1/agents/{agent}", admin.get_agent, methods=["GET"]),
    Route("/v1/agents/{agent}/fund", admin.fund_agent, methods=["POST"]),
    Route("/v1/agents/{agent}/debit", money_routes.debit_agent, methods=["POST"]),
    Route("/v1/agents/{agent}/children", money_routes.create_child, methods=["POST"]),
    Route("/v1/agents/{agent}/children", money_routes.list_children, methods=["GET"]),
    Route("/v1/agents/{agent}/reclaim", money_routes.reclaim_child, methods=["POST"]),
    Route("/v1/charges/{charge_id}/refund", money_routes.refund_charge, methods=["POST"]),
    Route("/v1/agents/{agent}/limits", admin.get_limits, methods=["GET"]),
    Route("/v1/agents/{agent}/limits", admin.patch_limits, methods=["PATCH"]),
    Route("/v1/agents/{agent}/shadow", shadow.get_shadow, methods=["GET"]),
    Route("/v1/agents/{agent}/freeze", admin.freeze, methods=["POST"]),
    Route("/v1/agents/{agent}/unfreeze", admin.unfreeze, methods=["POST"]),
    Route("/v1/agents/{agent}/keys", admin.add_key, methods=["POST"]),
    Route("/v1/agents/{agent}/keys", agent_keys.list_keys, methods=["GET"]),
    Route("/v1/agents/{agent}/keys/{key_id}", admin.revoke_key, methods=["DELETE"]),
    Route("/v1/agents/{agent}/ledger", ledger_routes.get_ledger, methods=["GET"]),
    Route("/v1/ledger/heads", ledger_routes.get_heads, methods=["GET"]),
    Route("/v1/agents/{agent}/usage", usage.get_agent_usage, methods=["GET"]),
    Route("/v1/usage", usage.get_all_usage, methods=["GET"]),
    Route("/v1/tools/{tool}", admin.put_tool, methods=["PUT"]),
    Route("/v1/tools", admin.list_tools, methods=["GET"]),
    Route("/v1/tools/{tool}", admin.delete_tool, methods=["DELETE"]),
    Route("/v1/mcp/servers", mcp_admin.list_servers, methods=["GET"]),
    Route("/v1/mcp/servers/{server}", mcp_admin.put_server, methods=["PUT"]),
    Route("/v1/mcp/servers/{server}", mcp_admin.get_server, methods=["GET"]),
    Route("/v1/mcp/servers/{server}", mcp_admin.delete_server, methods=["DELETE"]),
    Route("/", ops.root, methods=["GET"]),
    Route("/healthz", ops.healthz, methods=["GET"]),
    Route("/readyz", ops.readyz, methods=["GET"]),
    Route("/metrics", ops.metrics_text, methods=["GET"]),
    Route("/openapi.json", ops.openapi, methods=["GET"]),
    Route("/dashboard", ops.dashboard, methods=["GET"]),
]
# The MCP endpoint (streamable HTTP, stateless: JSON-RPC messages POSTed, answered in JSON)
# is a protocol of its own, described in docs/api.md rather than in the OpenAPI document (not
# in ROUTES). No GET stream (the gateway sends no message of its own) and no session to DELETE.
MCP_ROUTE = Route("/mcp", McpEndpoint(), methods=["POST"])
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every API route: the Starlette app's and the fast path's."""
    starlette = {(m, r.path) for r in ROUTES for m in (r.methods or ()) if m != "HEAD"}
    return starlette | set(fastpath.ROUTES)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        return json_response(405, {"error": "method_not_allowed",
                                   "message": f"{request.method} is not allowed here."},
                             {"Allow": ", ".join(allowed)})
    return json_response(exc.status_code, {"error": "not_found",
                                           "message": f"No route {request.url.path}."})


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path answers (RFC 9110: a 405 lists them in Allow).
    Starlette's own Allow names only the first matching route's, and a path such as
    /v1/agents has one route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.path_regex.fullmatch(request.url.path):
            methods.update(route.methods or ())
        elif isinstance(route, Mount) and request.url.path.startswith(route.path + "/"):
            methods.update(("GET", "HEAD"))  # static files
    return sorted(methods)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response(500, {"error": "internal",
                               "message": "The gateway failed; nothing was charged twice."})


async def _ledger_then_guard(ledger: LedgerStore, guard: StoreGuard) -> asyncio.Task[None]:
    """Migrate the ledger, then start checking the store's identity against it. A ledger
    down at start (PostgreSQL starting after the gateway) is tried again every second in
    the background while the worker serves: until then the guard's verdict stays
    unverified, so every authenticated route answers 503 ``unavailable`` instead of the
    worker dying in its start-up. Returns the task that waits (done when nothing waits)."""
    try:
        await ledger.migrate()
    except LedgerUnavailable as exc:
        log.warning("the ledger cannot be reached (%s); answering 503 until it can, trying "
                    "again every %.0f s", exc, LEDGER_RETRY_S)
        return asyncio.create_task(_migrate_when_reachable(ledger, guard))
    await guard.start()
    return asyncio.create_task(asyncio.sleep(0))


async def _migrate_when_reachable(ledger: LedgerStore, guard: StoreGuard) -> None:
    while True:
        await asyncio.sleep(LEDGER_RETRY_S)
        try:
            await ledger.migrate()
            break
        except LedgerUnavailable:
            continue
    log.warning("the ledger is reachable: migrated, now serving")
    await guard.start()


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    runtime = await open_runtime(settings, wait=True)
    admin_token = settings.admin_token or ensure_secret(settings.data_dir, "admin_token")
    secret = settings.webhook_secret or ensure_secret(settings.data_dir, "webhook_secret")
    check_at_start(settings)  # the embedded default's IOU_SECRET_KEY, or a warning
    http = proxy.client(settings.upstream_timeout_s)
    deliverer = WebhookDeliverer(runtime.engine, secret, http)
    ledger = open_store(settings)
    engine = runtime.engine
    guard = StoreGuard(engine, ledger)  # is this Redis the one the ledger describes?
    readying = await _ledger_then_guard(ledger, guard)

    async def lag_s() -> float:
        return (await ledger_backlog(engine.conn, engine.partitions))[0]

    auth = GuardedAuthenticator(guard, engine, admin_token, FailureLimits.of(settings),
                                settings.trusted_proxies)
    app.state.ctx = Context(engine, settings, auth, http, deliverer, ledger, lag_s,
                            guard=guard, receipts=load_signer(settings))
    app.state.mcp = McpFront(app.state.ctx)
    await app.state.mcp.start()
    delivery = asyncio.create_task(deliverer.run_forever())
    sampling = asyncio.create_task(sample_forever(engine.conn))
    log.info("gateway worker %d started", os.getpid())
    try:
        yield
    finally:
        log.info("gateway worker %d stopping", os.getpid())
        delivery.cancel()
        sampling.cancel()
        readying.cancel()
        await asyncio.gather(delivery, sampling, readying, return_exceptions=True)
        await app.state.mcp.stop()
        await guard.stop()
        await http.aclose()
        await ledger.close()
        await runtime.close()


def create_app(settings: Settings | None = None) -> ChargeFastPath:
    """The ASGI app; uvicorn calls this once per worker (``--factory``)."""
    static = Mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR, html=True))
    app = Starlette(routes=[*ROUTES, MCP_ROUTE, static], lifespan=_lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    # A trailing slash is an unknown path (JSON 404), not Starlette's redirect: that one had
    # an empty body and a Location built from the caller's Host header.
    app.router.redirect_slashes = False
    app.state.settings = settings or load_settings()
    return ChargeFastPath(app)
